"""The profiler interface shared by every latency backend, and device spec parsing.

A profiler measures one artifact (an ONNX file, a .tflite file, or a torch module, as its
``artifact_format`` says) for one input shape and returns :class:`LatencyStats`. Every backend
times the same way (warm-up, repeated runs, median with p10/p90), so numbers from profiling,
validation and ``bench`` compare.
"""
from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Mapping, Sequence

import numpy as np

from supernet.errors import OfaDeployError

__all__ = [
    "LatencyStats",
    "DeviceSpec",
    "DeviceSpecError",
    "ProfilerError",
    "Profiler",
    "BACKEND_MODULES",
    "register_profiler",
    "get_profiler",
    "profiler_class",
]


class DeviceSpecError(OfaDeployError, ValueError):
    """A device spec string that cannot be parsed or names an unknown backend."""


class ProfilerError(OfaDeployError, RuntimeError):
    """A measurement that could not be made (device offline, runtime missing, ...)."""


@dataclass(frozen=True)
class LatencyStats:
    """Latency of repeated runs, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    std_ms: float
    runs: int

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> "LatencyStats":
        """Median, p10, p90 and standard deviation of per-run times in ms; no samples is a
        ProfilerError."""
        a = np.asarray(samples_ms, dtype=np.float64)
        if a.size == 0:
            raise ProfilerError("no latency samples were collected")
        return cls(float(np.median(a)), float(np.percentile(a, 10)), float(np.percentile(a, 90)),
                   float(a.std()), int(a.size))

    def to_dict(self) -> Dict[str, float]:
        """The five fields as a JSON-able dict (the layout of tables and bench files)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LatencyStats":
        """Read the :meth:`to_dict` layout; a missing or non-numeric field is a ValueError naming
        the record."""
        try:
            return cls(float(d["median_ms"]), float(d["p10_ms"]), float(d["p90_ms"]),
                       float(d["std_ms"]), int(d["runs"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad latency stats {dict(d)!r}: {exc}") from None


# backend name -> module that registers it (imported lazily: onnxruntime, LiteRT, CUDA and adb
# libraries load only when their backend is used).
BACKEND_MODULES: Dict[str, str] = {
    "ort": "profilers.ort",
    "tflite": "profilers.litert",
    "cuda": "profilers.cuda",
    "adb": "profilers.adb",
}
_ALIASES = {"cpu": ("ort", "cpu")}
_SPEC_RE = re.compile(r"^([a-z]+)(?::([A-Za-z0-9_.\-]+))?$")


@dataclass(frozen=True)
class DeviceSpec:
    """``backend:target``: ``cpu`` (= ``ort:cpu``), ``tflite:cpu``, ``cuda``/``cuda:0``,
    ``adb:NAME``. ``options`` carries backend settings such as threads."""

    backend: str
    target: str
    options: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def parse(cls, text: "str | DeviceSpec", **options: Any) -> "DeviceSpec":
        """Parse ``cpu``, ``tflite:cpu``, ``cuda[:N]``, ``adb:NAME`` (a DeviceSpec passes through);
        bad syntax or an unknown backend is a one-line DeviceSpecError."""
        if isinstance(text, DeviceSpec):
            return text
        t = str(text).strip()
        if t in _ALIASES:
            b, tg = _ALIASES[t]
            return cls(b, tg, dict(options))
        m = _SPEC_RE.match(t)
        if not m:
            raise DeviceSpecError(f"bad device spec {text!r}: expected BACKEND[:TARGET], e.g. cpu, "
                                  f"tflite:cpu, cuda:0, adb:pixel")
        backend, target = m.group(1), m.group(2)
        if backend not in BACKEND_MODULES:
            raise DeviceSpecError(f"unknown backend {backend!r} in {text!r}; known: cpu, "
                                  f"{', '.join(BACKEND_MODULES)}")
        if target is None:
            if backend == "adb":
                raise DeviceSpecError("adb needs a device name from the registry, e.g. adb:pixel")
            target = "0" if backend == "cuda" else "cpu"
        return cls(backend, target, dict(options))

    def __str__(self) -> str:
        return f"{self.backend}:{self.target}"

    @property
    def slug(self) -> str:
        """File-name-safe form, for cache paths."""
        return f"{self.backend}-{self.target}".replace("/", "_")


class Profiler(ABC):
    """Measures artifacts on one device. Subclasses set ``artifact_format``."""

    artifact_format: str = "onnx"  # "onnx" | "tflite" | "torch"

    def __init__(self, spec: DeviceSpec, *, threads: int | None = None, runs: int = 50,
                 warmup: int = 10):
        self.spec = spec
        self.threads = threads
        self.runs = runs
        self.warmup = warmup

    @abstractmethod
    def measure(self, artifact: Any, input_shape: Sequence[int]) -> LatencyStats:
        """Time ``artifact`` (a path, or a module for ``torch``) on an input of ``input_shape``."""

    def describe(self) -> Dict[str, Any]:
        """Metadata recorded with every measurement: backend, runtime versions, threads, host."""
        return {"device": str(self.spec), "backend": self.spec.backend, "threads": self.threads,
                "runs": self.runs, "warmup": self.warmup}

    def close(self) -> None:
        """Release what the profiler holds (sessions, connections); the base holds nothing."""
        pass

    def __enter__(self) -> "Profiler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_REGISTRY: Dict[str, Callable[..., Profiler]] = {}


def register_profiler(backend: str) -> Callable[[type], type]:
    """Class decorator: make the class the profiler of ``backend`` for :func:`get_profiler`."""
    def deco(cls: type) -> type:
        _REGISTRY[backend] = cls
        return cls

    return deco


def profiler_class(backend: str) -> type:
    """The profiler class registered for ``backend``, importing its module on first use."""
    if backend not in BACKEND_MODULES:
        raise DeviceSpecError(f"unknown backend {backend!r}; known: {', '.join(BACKEND_MODULES)}")
    if backend not in _REGISTRY:
        try:
            importlib.import_module(BACKEND_MODULES[backend])
        except ImportError as exc:
            raise ProfilerError(f"backend {backend!r} is unavailable: {exc}") from None
    try:
        return _REGISTRY[backend]
    except KeyError:
        raise ProfilerError(f"backend {backend!r} registered no profiler") from None


def get_profiler(spec: "str | DeviceSpec", **kwargs: Any) -> Profiler:
    """The profiler for ``spec`` (``kwargs``: threads, runs, warmup, backend settings)."""
    spec = DeviceSpec.parse(spec)
    return profiler_class(spec.backend)(spec, **kwargs)
