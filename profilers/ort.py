"""onnxruntime CPU backend (``cpu`` = ``ort:cpu``).

Sessions run sequentially (one inter-op thread) with all graph optimisations on and a
configurable, recorded number of intra-op threads. Inputs and a preallocated output are bound
once through I/O binding, so a timed call is the session run alone: no numpy -> tensor copy in,
no allocation or copy out. That matters for latency tables: inside a full network an op's input
and output tensors are never copied across the Python boundary, so timing op models without
those copies is what lets per-op times add up to the network's time.
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
    import onnxruntime as ort
except ImportError as _exc:  # pragma: no cover - onnxruntime is a hard dependency
    raise ImportError(f"onnxruntime is not installed ({_exc}); pip install onnxruntime") from None

__all__ = ["OrtProfiler"]

_OPT_LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}


@register_profiler("ort")
class OrtProfiler(Profiler):
    """Times ONNX files (or serialized ONNX bytes) with onnxruntime's CPU execution provider.

    ``threads``: intra-op threads (default: every CPU this process may use). ``cpus``: pin the
    process to these CPUs while timing (``"0"``, ``"0-1"``, a list). ``optimization``: graph
    optimisation level (``all`` by default; ``extended`` disables layout transformations).
    ``flush_bytes``: bytes written before every timed run to evict caches (default: twice the
    L2 size, see :class:`~profilers.measure.CacheFlusher`; 0: no flushing).
    """

    artifact_format = "onnx"

    def __init__(self, spec: DeviceSpec, *, threads: int | None = None, runs: int = 50,
                 warmup: int = 10, cpus: "str | Sequence[int] | None" = None,
                 optimization: str = "all", seed: int = 0, flush_bytes: int | None = None):
        super().__init__(spec, threads=host_cpu_threads(spec, threads), runs=runs, warmup=warmup)
        if optimization not in _OPT_LEVELS:
            raise ProfilerError(f"unknown optimization level {optimization!r}; "
                                f"choose from {', '.join(_OPT_LEVELS)}")
        self.optimization = optimization
        self.cpus = usable_cpus(cpus)
        self.seed = seed
        self._flusher = CacheFlusher(flush_bytes) if flush_bytes != 0 else None

    def session_options(self) -> "ort.SessionOptions":
        """Session options for timing: ``threads`` intra-op threads, one inter-op thread, sequential
        execution, the chosen graph optimisation, warnings silenced."""
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = _OPT_LEVELS[self.optimization]
        so.log_severity_level = 3
        return so

    def session(self, artifact: Any) -> "ort.InferenceSession":
        """A CPU InferenceSession for an ONNX path or bytes; a missing or unloadable model is a
        one-line ProfilerError."""
        if isinstance(artifact, (str, os.PathLike)) and not os.path.exists(artifact):
            raise ProfilerError(f"ONNX file not found: {artifact}")
        try:
            return ort.InferenceSession(artifact if isinstance(artifact, bytes) else str(artifact),
                                        sess_options=self.session_options(),
                                        providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ProfilerError(f"onnxruntime cannot load {_name(artifact)}: "
                                f"{first_line(exc)}") from None

    def measure(self, artifact: Any, input_shape: Sequence[int]) -> LatencyStats:
        """Time ``run_with_iobinding`` on a seeded random input of ``input_shape`` with pre-bound
        outputs, so allocation is not timed; pinned and cache-flushed as configured."""
        sess = self.session(artifact)
        inputs = sess.get_inputs()
        if len(inputs) != 1:
            raise ProfilerError(f"{_name(artifact)} has {len(inputs)} inputs; expected one")
        rng = np.random.default_rng(self.seed)
        x = rng.standard_normal(tuple(int(s) for s in input_shape), dtype=np.float32)
        declared = inputs[0].shape
        if len(declared) != x.ndim or any(isinstance(d, int) and d != s
                                          for d, s in zip(declared, x.shape)):
            raise ProfilerError(f"{_name(artifact)} expects input {declared}, got {list(x.shape)}")
        binding = sess.io_binding()
        binding.bind_ortvalue_input(inputs[0].name, ort.OrtValue.ortvalue_from_numpy(x))
        # Run once unbound-output to learn the output shapes (dynamic axes are allowed).
        outs = sess.run(None, {inputs[0].name: x})
        for meta, val in zip(sess.get_outputs(), outs):
            buf = ort.OrtValue.ortvalue_from_shape_and_type(list(val.shape), val.dtype)
            binding.bind_ortvalue_output(meta.name, buf)
        run = sess.run_with_iobinding
        with pinned(self.cpus):
            return measure(lambda: run(binding), runs=self.runs, warmup=self.warmup,
                           before=self._flusher)

    def describe(self) -> Dict[str, Any]:
        """The base metadata plus the onnxruntime version and every session setting that changes
        timings, and the host."""
        d = super().describe()
        d.update({"runtime": "onnxruntime", "runtime_version": ort.__version__,
                  "provider": "CPUExecutionProvider", "intra_op_threads": self.threads,
                  "inter_op_threads": 1, "execution_mode": "sequential",
                  "graph_optimization": self.optimization, "io_binding": True,
                  "flush_cache_bytes": self._flusher.nbytes if self._flusher else 0,
                  "pinned_cpus": self.cpus, **host_info()})
        return d


def _name(artifact: Any) -> str:
    return "the ONNX model" if isinstance(artifact, bytes) else str(artifact)
