"""Fixtures shared by every test folder (keep generic; folders add their own conftest)."""
from __future__ import annotations

import os

import numpy as np
import pytest


def pytest_configure(config):
    # One intra-op thread unless OMP_NUM_THREADS says otherwise: on a small shared machine,
    # torch's spinning worker threads make the suite 5-10x slower, not faster.
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh seeded generator per test: tests never depend on each other's draws."""
    return np.random.default_rng(12345)


@pytest.fixture
def run_cli():
    """Invoke the ``ofa-deploy`` click group in-process; returns click's ``Result``
    (``.exit_code``, ``.stdout``, ``.stderr``, ``.output``, ``.exception``)."""
    from click.testing import CliRunner

    from ofa_deploy.cli import main

    def run(*args: str, input: str | None = None):
        return CliRunner().invoke(main, [str(a) for a in args], input=input)

    return run
