"""Training configuration: defaults per space (YAML in ``supernet/assets``), overlay, validation.

A config is a nested mapping; :class:`TrainConfig` validates every field against a small
schema and reports each bad field by its dotted name. The fully resolved config is saved in
the run directory and inside checkpoints (``get_state``/``from_state``).
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from ..errors import OfaDeployError
from ..fileio import read_yaml
from ..space import Space, get_space

__all__ = ["ConfigError", "TrainConfig", "StageConfig", "PHASES", "DEFAULT_PHASES",
           "default_config_path", "load_config_file", "ASSETS"]

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PHASES = ("teacher", "kernel", "depth", "expand", "full")
DEFAULT_PHASES = ("teacher", "kernel", "depth", "expand")
# Phases whose elastic dimension grows one choice per stage, as in the reference.
STAGED = {"depth": "depth_choices", "expand": "expand_choices"}


class ConfigError(OfaDeployError, ValueError):
    """A bad training config; the message names the field."""


# -- schema ---------------------------------------------------------------------------------
# A leaf is (kind, options); kinds: int, float, bool, str, choice, ints (list), floats (list).
_PHASE = {
    "epochs": ("float", {"min": 0.0, "stage": True}),
    "lr": ("float", {"min": 0.0, "exclusive": True, "stage": True}),
    "warmup_epochs": ("float", {"min": 0.0, "stage": True}),
    "warmup_lr": ("float", {"min": 0.0, "stage": True}),
    "subnets_per_step": ("int", {"min": 1, "stage": True}),
}
_SCHEMA: Dict[str, Any] = {
    "seed": ("int", {"min": 0}),
    "batch_size": ("int", {"min": 1}),
    "resolutions": ("ints", {"nullable": True, "min": 1}),
    "resolution_weights": ("floats", {"nullable": True, "min": 0.0}),
    "sampler": ("choice", {"choices": ("uniform", "sandwich")}),
    "init": ("str", {"nullable": True}),
    "checkpoint_every": ("int", {"min": 1}),
    "log_every": ("int", {"min": 1}),
    "amp": ("bool", {}),
    "channels_last": ("bool", {}),
    "loss": {
        "label_smoothing": ("float", {"min": 0.0, "max": 0.99}),
        "kd_weight": ("float", {"min": 0.0}),
        "kd_temperature": ("float", {"min": 0.0, "exclusive": True}),
        "teacher": ("str", {"nullable": True}),
    },
    "optimizer": {
        "momentum": ("float", {"min": 0.0, "max": 0.999}),
        "nesterov": ("bool", {}),
        "weight_decay": ("float", {"min": 0.0}),
        "no_decay_bn_bias": ("bool", {}),
        "grad_clip": ("float", {"nullable": True, "min": 0.0, "exclusive": True}),
    },
    "data": {
        "holdout": ("int", {"nullable": True, "min": 1}),
        "train_subset": ("int", {"nullable": True, "min": 1}),
        "crop_padding": ("int", {"min": 0}),
        "flip": ("bool", {}),
    },
    "eval": {
        "split": ("choice", {"choices": ("val", "test")}),
        "images": ("int", {"nullable": True, "min": 1}),
        "calib_images": ("int", {"min": 1}),
        "batch_size": ("int", {"min": 1}),
        "resolutions": ("ints", {"nullable": True, "min": 1}),
    },
    "phases": {name: dict(_PHASE) for name in PHASES},
}


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_leaf(path: str, kind: str, opt: dict, v):
    if v is None:
        if opt.get("nullable"):
            return None
        raise ConfigError(f"config field {path!r}: must be set (got null)")

    def bounds(x):
        lo, hi = opt.get("min"), opt.get("max")
        if lo is not None and (x < lo or (opt.get("exclusive") and x == lo)):
            rel = ">" if opt.get("exclusive") else ">="
            raise ConfigError(f"config field {path!r}: must be {rel} {lo}, got {x!r}")
        if hi is not None and x > hi:
            raise ConfigError(f"config field {path!r}: must be <= {hi}, got {x!r}")
        return x

    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"config field {path!r}: must be an integer, got {v!r}")
        return bounds(int(v))
    if kind == "float":
        if not _is_num(v):
            raise ConfigError(f"config field {path!r}: must be a number, got {v!r}")
        return bounds(float(v))
    if kind == "bool":
        if not isinstance(v, bool):
            raise ConfigError(f"config field {path!r}: must be true or false, got {v!r}")
        return v
    if kind == "str":
        if not isinstance(v, str) or not v:
            raise ConfigError(f"config field {path!r}: must be a non-empty string, got {v!r}")
        return v
    if kind == "choice":
        if v not in opt["choices"]:
            raise ConfigError(f"config field {path!r}: must be one of "
                              f"{', '.join(opt['choices'])}, got {v!r}")
        return v
    if kind in ("ints", "floats"):
        if not isinstance(v, (list, tuple)) or not v:
            raise ConfigError(f"config field {path!r}: must be a non-empty list, got {v!r}")
        sub = "int" if kind == "ints" else "float"
        return [_check_leaf(f"{path}[{i}]", sub, opt, x) for i, x in enumerate(v)]
    raise AssertionError(kind)


def _validate(schema: Mapping, data: Any, path: str) -> dict:
    if not isinstance(data, Mapping):
        raise ConfigError(f"config field {path or 'top level'!r}: must be a mapping, got "
                          f"{type(data).__name__}")
    out = {}
    for key in data:
        if key not in schema:
            known = ", ".join(schema)
            name = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"unknown config field {name!r} (known here: {known})")
    for key, spec in schema.items():
        name = f"{path}.{key}" if path else key
        if key not in data:
            raise ConfigError(f"config field {name!r} is missing")
        v = data[key]
        if isinstance(spec, dict):
            out[key] = _validate(spec, v, name)
        else:
            kind, opt = spec
            if opt.get("stage") and isinstance(v, (list, tuple)):
                out[key] = [_check_leaf(f"{name}[{i}]", kind, opt, x) for i, x in enumerate(v)]
                if not out[key]:
                    raise ConfigError(f"config field {name!r}: empty list")
            else:
                out[key] = _check_leaf(name, kind, opt, v)
    return out


def _deep_merge(base: Mapping, over: Mapping) -> dict:
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def default_config_path(space: "Space | str") -> Path:
    """The space's own default config file, else the generic ``train-default.yaml``."""
    name = get_space(space).name
    p = ASSETS / f"train-{name}.yaml"
    return p if p.is_file() else ASSETS / "train-default.yaml"


def load_config_file(path: "str | Path") -> dict:
    """A YAML config file's mapping (``{}`` for an empty file); unreadable or malformed files
    raise :class:`ConfigError`."""
    p = Path(path)
    data = read_yaml(p, "config", ConfigError)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config {p} must hold a mapping at the top level")
    return dict(data)


class StageConfig:
    """One training stage: a phase, or one step of a staged phase (depth_1, expand_2, ...)."""

    def __init__(self, name: str, phase: str, stage: int, epochs: float, lr: float,
                 warmup_epochs: float, warmup_lr: float, subnets_per_step: int):
        self.name, self.phase, self.stage = name, phase, stage
        self.epochs, self.lr = epochs, lr
        self.warmup_epochs, self.warmup_lr = warmup_epochs, warmup_lr
        self.subnets_per_step = subnets_per_step

    def get_state(self) -> dict:
        """The stage's fields as a plain dict."""
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"StageConfig({self.get_state()})"


class TrainConfig:
    """A validated training config (nested dict) plus the space it trains."""

    def __init__(self, data: Mapping, space: "Space | str"):
        self.space = get_space(space)
        self.data = _validate(_SCHEMA, data, "")
        self._check_cross()

    # -- construction --------------------------------------------------------------------
    @classmethod
    def for_space(cls, space: "Space | str", overrides: Mapping | None = None,
                  config_file: "str | Path | None" = None) -> "TrainConfig":
        """Default config of the space, overlaid with a YAML file, then with ``overrides``."""
        base = load_config_file(default_config_path(space))
        layers = [load_config_file(config_file)] if config_file is not None else []
        layers += [dict(overrides)] if overrides else []
        for layer in layers:
            base = _deep_merge(base, layer)
            if "resolutions" in layer and "resolution_weights" not in layer:
                # Weights belong to a resolution list; new resolutions without weights are
                # sampled uniformly rather than mismatched with the old weights.
                base["resolution_weights"] = None
        return cls(base, space)

    def get_state(self) -> dict:
        """Space name and resolved config: what checkpoints store and compare on resume."""
        return {"space": self.space.name, "config": copy.deepcopy(self.data)}

    @classmethod
    def from_state(cls, state: Mapping) -> "TrainConfig":
        """The config a :meth:`get_state` describes (validated again)."""
        return cls(state["config"], state["space"])

    def __getitem__(self, key: str):
        return self.data[key]

    def __eq__(self, other) -> bool:
        return isinstance(other, TrainConfig) and self.get_state() == other.get_state()

    # -- checks across fields ------------------------------------------------------------
    def _check_cross(self) -> None:
        sp, d = self.space, self.data
        res = d["resolutions"] if d["resolutions"] is not None else list(sp.resolutions)
        for name, vals in (("resolutions", res), ("eval.resolutions", d["eval"]["resolutions"])):
            for r in vals or ():
                if r not in sp.resolutions:
                    raise ConfigError(f"config field {name!r}: {r} is not a resolution of space "
                                      f"{sp.name} ({', '.join(map(str, sp.resolutions))})")
        w = d["resolution_weights"]
        if w is not None:
            if len(w) != len(res):
                raise ConfigError(f"config field 'resolution_weights': {len(w)} weights for "
                                  f"{len(res)} resolutions")
            if sum(w) <= 0:
                raise ConfigError("config field 'resolution_weights': must not all be zero")
        for phase in PHASES:
            n = self.num_stages(phase)
            for key, v in d["phases"][phase].items():
                if isinstance(v, list) and len(v) != n:
                    raise ConfigError(f"config field 'phases.{phase}.{key}': {len(v)} values "
                                      f"but phase {phase} has {n} stage(s)")

    # -- derived ---------------------------------------------------------------------------
    @property
    def resolutions(self) -> List[int]:
        """Training resolutions (the space's when the config leaves them unset)."""
        r = self.data["resolutions"]
        return list(self.space.resolutions) if r is None else list(r)

    @property
    def resolution_probs(self) -> List[float] | None:
        """Sampling probability per training resolution; ``None`` for uniform."""
        w = self.data["resolution_weights"]
        if w is None:
            return None
        s = float(sum(w))
        return [x / s for x in w]

    @property
    def eval_resolutions(self) -> List[int]:
        """Resolutions of the stage-end accuracy grid (default: the space's min and max)."""
        r = self.data["eval"]["resolutions"]
        if r is None:
            return sorted({min(self.space.resolutions), max(self.space.resolutions)})
        return list(r)

    def num_stages(self, phase: str) -> int:
        """How many stages ``phase`` has: depth/expand open one smaller choice per stage."""
        if phase in STAGED:
            return len(getattr(self.space, STAGED[phase])) - 1 or 1
        return 1

    def stages(self, phases: Sequence[str]) -> List[StageConfig]:
        """The stages of ``phases`` in order, each with its own values of list-valued fields."""
        out = []
        for phase in phases:
            if phase not in PHASES:
                raise ConfigError(f"unknown phase {phase!r} (known: {', '.join(PHASES)})")
            pc = self.data["phases"][phase]
            n = self.num_stages(phase)
            for i in range(n):
                vals = {k: (v[i] if isinstance(v, list) else v) for k, v in pc.items()}
                name = f"{phase}_{i + 1}" if n > 1 else phase
                if (self.data["sampler"] == "sandwich" and phase != "teacher"
                        and vals["subnets_per_step"] < 2):
                    raise ConfigError(f"config field 'phases.{phase}.subnets_per_step': the "
                                      "sandwich sampler needs >= 2 (largest + smallest)")
                out.append(StageConfig(name, phase, i + 1, **vals))
        return out


def parse_phases(text: "str | Sequence[str] | None") -> Tuple[str, ...]:
    """Phases from a comma/space separated string or a list (``None``: the default ones);
    unknown or repeated phases raise :class:`ConfigError`."""
    if text is None:
        return DEFAULT_PHASES
    items = [text] if isinstance(text, str) else list(text)
    out: List[str] = []
    for item in items:
        for p in str(item).replace(" ", ",").split(","):
            if not p:
                continue
            if p not in PHASES:
                raise ConfigError(f"unknown phase {p!r} (known: {', '.join(PHASES)})")
            if p in out:
                raise ConfigError(f"phase {p!r} given twice")
            out.append(p)
    if not out:
        raise ConfigError("no phases given")
    return tuple(out)
