"""Tiny synthetic training configs shared by the trainer tests."""
from __future__ import annotations

import copy

import pytest

from supernet.training.data import load_dataset
from supernet.training.config import TrainConfig

SPACE = "ofa-mbv3-tiny"
PS_PHASES = ("teacher", "kernel", "depth", "expand")

# 640 synthetic training images - 128 held out = 512; batch 8 -> 64 steps per epoch.
TINY = {
    "batch_size": 8,
    "resolutions": [32],
    "checkpoint_every": 3,
    "log_every": 2,
    "eval": {"images": 16, "calib_images": 16, "batch_size": 16, "resolutions": [32]},
    "phases": {
        "teacher": {"epochs": 0.05, "lr": 0.05, "warmup_epochs": 0.02},
        "kernel": {"epochs": 0.03, "lr": 0.05, "warmup_epochs": 0.0},
        "depth": {"epochs": [0.03, 0.03], "lr": 0.05, "warmup_epochs": 0.0,
                  "subnets_per_step": 2},
        "expand": {"epochs": [0.03, 0.05], "lr": [0.04, 0.05], "warmup_epochs": 0.0,
                   "subnets_per_step": 2},
        "full": {"epochs": 0.05, "lr": 0.05, "warmup_epochs": 0.0, "subnets_per_step": 2},
    },
}


def tiny_config(**overrides) -> TrainConfig:
    data = copy.deepcopy(TINY)
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k].update(v)
        else:
            data[k] = v
    return TrainConfig.for_space(SPACE, overrides=data)


@pytest.fixture(scope="session")
def synthetic():
    return load_dataset("synthetic")
