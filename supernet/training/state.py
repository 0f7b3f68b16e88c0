"""The layout of a run's ``checkpoint.pt`` (the trainer's resumable state), in one place.

The trainer writes it with :func:`build_train_state` and checks it with
:func:`check_resumable`; ``supernet.checkpoint.load_supernet`` reads the weights out of it
with :func:`supernet_weights` (so a supernet can be evaluated while it is still training).
Nothing else knows these keys. This module imports nothing from the package, so
``supernet.checkpoint`` can use it without an import cycle.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Sequence

__all__ = ["TRAIN_STATE_FORMAT", "TRAIN_STATE_VERSION", "SupernetWeights", "build_train_state",
           "check_resumable", "supernet_weights"]

TRAIN_STATE_FORMAT = "ofa-deploy-train-state"
TRAIN_STATE_VERSION = 1


@dataclass(frozen=True)
class SupernetWeights:
    """The supernet part of a training state: its space, weights and where training stood."""

    space: str | None
    state_dict: Mapping[str, Any]
    position: Dict[str, Any]


def build_train_state(*, space: str, config: dict, phases: Sequence[str], data: str,
                      world_size: int, position: dict, model: dict, optimizer: dict | None,
                      scheduler: dict | None, scaler: dict | None, sampler: dict,
                      rng: dict, logs: dict, elapsed_s: float) -> dict:
    """Assemble a training state from its parts .

    ``rng`` holds per-rank generator states as ``{"aug": [...], "dropout": [...]}``;
    ``optimizer``/``scheduler``/``scaler`` are ``None`` between stages.
    """
    return {"format": TRAIN_STATE_FORMAT, "format_version": TRAIN_STATE_VERSION,
            "space": space, "config": config, "phases": list(phases), "data": data,
            "world_size": world_size, "position": dict(position), "model": model,
            "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler,
            "sampler": sampler, "rng": rng, "logs": logs, "elapsed_s": elapsed_s}


def check_resumable(state: Mapping, *, source: str, run: str, config: dict,
                    phases: Sequence[str], world_size: int, data: str) -> str | None:
    """Why ``state`` (read from ``source``) cannot continue the run ``run`` as now configured,
    or ``None`` if it can. The reasons are one-line messages for the user."""
    if state.get("format") != TRAIN_STATE_FORMAT:
        return f"{source} is not a training checkpoint"
    if state.get("format_version", 0) > TRAIN_STATE_VERSION:
        return f"{source} was written by a newer ofa-deploy"
    if state["config"] != config:
        return (f"cannot resume {run}: the config differs from the run's saved config "
                f"({_first_diff(state['config'], config)}); resume without --config or use a "
                "new --out")
    if list(state["phases"]) != list(phases):
        return (f"cannot resume {run}: it trains phases {','.join(state['phases'])}, not "
                f"{','.join(phases)}")
    if state["world_size"] != world_size:
        return (f"cannot resume {run}: it ran on {state['world_size']} process(es), not "
                f"{world_size}")
    if state.get("data") != data:
        return f"cannot resume {run}: it trains on {state.get('data')}, not {data}"
    return None


def supernet_weights(obj: Mapping) -> SupernetWeights | None:
    """The supernet held by a training state, or ``None`` if ``obj`` is not one."""
    if obj.get("format") != TRAIN_STATE_FORMAT or not isinstance(obj.get("model"), Mapping):
        return None
    return SupernetWeights(space=obj.get("space"), state_dict=obj["model"],
                           position=dict(obj.get("position") or {}))


def _first_diff(a, b, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                return _first_diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
    return f"{path}: saved {a!r}, given {b!r}"
