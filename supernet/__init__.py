"""Elastic OFA supernets: spaces, archs, elastic layers, subnet extraction, cost, checkpoints.

The names below are loaded on first use (PEP 562), so importing a light submodule such as
``supernet.errors`` or ``supernet.space`` does not pull in torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "OfaDeployError": "errors",
    "SpaceError": "space", "SPACES": "space", "Space": "space", "get_space": "space",
    "list_spaces": "space", "make_divisible": "space", "register_space": "space",
    "Family": "space", "FAMILIES": "space", "FAMILY_MODULES": "space", "get_family": "space",
    "register_family": "space",
    "ArchConfig": "arch", "ArchError": "arch",
    "CheckpointError": "checkpoint", "load_supernet": "checkpoint", "save_supernet": "checkpoint",
    "arch_cost": "cost", "arch_macs": "cost", "arch_params": "cost", "space_stats": "cost",
    "supernet_params": "cost",
    "Subnet": "model", "Supernet": "model", "build_supernet": "model", "extract_subnet": "model",
    "OpKey": "ops", "arch_ops": "ops", "enumerate_ops": "ops",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'supernet' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
