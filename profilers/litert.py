"""LiteRT (TFLite) CPU backend (``tflite:cpu``): the ai_edge_litert interpreter with XNNPACK.

The input tensor is set once before timing and outputs are never read back, so a timed call is
``invoke()`` alone, the part of an inference that an op inside a full network also pays.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Sequence

import numpy as np

from supernet.errors import first_line

from .base import DeviceSpec, LatencyStats, Profiler, ProfilerError, register_profiler
from .measure import (CacheFlusher, host_cpu_threads, host_info, measure, pinned,
                      usable_cpus)

try:
    from ai_edge_litert import interpreter as _litert
except ImportError as _exc:
    raise ImportError(f"ai-edge-litert is not installed ({_exc}); pip install ai-edge-litert") \
        from None

__all__ = ["LiteRTProfiler"]


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("ai-edge-litert")
    except Exception:  # metadata missing in odd installs: not worth failing a measurement
        return "unknown"


@register_profiler("tflite")
class LiteRTProfiler(Profiler):
    """Times .tflite files (or their bytes) on this host's CPU.

    ``threads``: interpreter threads (default: every CPU this process may use). ``xnnpack``:
    apply the default XNNPACK delegate (on by default; off measures the reference kernels).
    ``flush_bytes``: cache flushing before each timed run, as for the onnxruntime backend.
    """

    artifact_format = "tflite"

    def __init__(self, spec: DeviceSpec, *, threads: int | None = None, runs: int = 50,
                 warmup: int = 10, cpus: "str | Sequence[int] | None" = None,
                 xnnpack: bool = True, seed: int = 0, flush_bytes: int | None = None):
        super().__init__(spec, threads=host_cpu_threads(spec, threads), runs=runs, warmup=warmup)
        self.xnnpack = bool(xnnpack)
        self.cpus = usable_cpus(cpus)
        self.seed = seed
        self._flusher = CacheFlusher(flush_bytes) if flush_bytes != 0 else None

    def interpreter(self, artifact: Any) -> "_litert.Interpreter":
        """A LiteRT interpreter with tensors allocated for a .tflite path or bytes, with XNNPACK
        unless disabled; an unloadable model is a one-line ProfilerError."""
        resolver = (_litert.OpResolverType.AUTO if self.xnnpack
                    else _litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        kw: Dict[str, Any] = dict(num_threads=self.threads, experimental_op_resolver_type=resolver)
        if isinstance(artifact, bytes):
            kw["model_content"] = artifact
        else:
            if not os.path.exists(artifact):
                raise ProfilerError(f"TFLite file not found: {artifact}")
            kw["model_path"] = str(artifact)
        try:
            it = _litert.Interpreter(**kw)
            it.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            name = "the TFLite model" if isinstance(artifact, bytes) else str(artifact)
            raise ProfilerError(f"LiteRT cannot load {name}: {first_line(exc)}") from None
        return it

    def measure(self, artifact: Any, input_shape: Sequence[int]) -> LatencyStats:
        """Time ``invoke`` on a seeded random input of ``input_shape`` (which must be the model's),
        pinned to ``cpus`` and with the cache flushed before each run when asked."""
        it = self.interpreter(artifact)
        details = it.get_input_details()
        if len(details) != 1:
            raise ProfilerError(f"the TFLite model has {len(details)} inputs; expected one")
        d = details[0]
        shape = tuple(int(s) for s in input_shape)
        if tuple(int(s) for s in d["shape"]) != shape:
            raise ProfilerError(f"the TFLite model expects input {list(d['shape'])}, "
                                f"got {list(shape)}")
        rng = np.random.default_rng(self.seed)
        it.set_tensor(d["index"], rng.standard_normal(shape).astype(d["dtype"]))
        with pinned(self.cpus):
            return measure(it.invoke, runs=self.runs, warmup=self.warmup, before=self._flusher)

    def describe(self) -> Dict[str, Any]:
        """The base metadata plus the LiteRT version, delegate, threads, pinning, cache flushing and
        the host."""
        d = super().describe()
        d.update({"runtime": "ai-edge-litert", "runtime_version": _version(),
                  "delegate": "xnnpack" if self.xnnpack else "none", "num_threads": self.threads,
                  "pinned_cpus": self.cpus,
                  "flush_cache_bytes": self._flusher.nbytes if self._flusher else 0,
                  **host_info()})
        return d
