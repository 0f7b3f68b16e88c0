"""CUDA backend (``cuda`` / ``cuda:N``): a torch module timed with CUDA events.

Each run is bracketed by two events on the current stream and the host waits for the end event,
so a sample is the GPU-side time of one forward pass including any launch gaps, the same span a
deployed network pays. fp32 by default; ``half=True`` times an fp16 copy of the module.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Sequence

import torch

from .base import DeviceSpec, LatencyStats, Profiler, ProfilerError, register_profiler
from .measure import host_info

__all__ = ["CudaProfiler"]


@register_profiler("cuda")
class CudaProfiler(Profiler):
    """``threads`` is accepted for interface symmetry and ignored (GPU work)."""

    artifact_format = "torch"

    def __init__(self, spec: DeviceSpec, *, threads: int | None = None, runs: int = 50,
                 warmup: int = 10, half: bool = False, cudnn_benchmark: bool = True,
                 seed: int = 0):
        super().__init__(spec, threads=threads, runs=runs, warmup=warmup)
        if not torch.cuda.is_available():
            raise ProfilerError(f"no CUDA device: torch {torch.__version__} sees no GPU "
                                f"(device {spec})")
        try:
            index = int(spec.target)
        except ValueError:
            raise ProfilerError(f"bad CUDA device {spec.target!r}: expected an index, "
                                f"e.g. cuda:0") from None
        n = torch.cuda.device_count()
        if not 0 <= index < n:
            raise ProfilerError(f"no CUDA device {index}: {n} visible")
        self.device = torch.device("cuda", index)
        self.half = bool(half)
        self.cudnn_benchmark = bool(cudnn_benchmark)
        self.seed = seed
        if runs < 1 or warmup < 0:
            raise ProfilerError(f"need runs >= 1 and warmup >= 0, got {runs}, {warmup}")

    def measure(self, artifact: Any, input_shape: Sequence[int]) -> LatencyStats:
        """Time a torch module on the GPU with CUDA events, synchronising after each run so every
        sample includes one inference's launch latency; the input is seeded."""
        if not isinstance(artifact, torch.nn.Module):
            raise ProfilerError(f"the cuda backend times torch modules, got "
                                f"{type(artifact).__name__}")
        dtype = torch.float16 if self.half else torch.float32
        model = copy.deepcopy(artifact).eval().to(self.device, dtype)
        gen = torch.Generator(device=self.device).manual_seed(self.seed)
        x = torch.randn(tuple(int(s) for s in input_shape), generator=gen, device=self.device,
                        dtype=dtype)
        samples = []
        with torch.inference_mode(), torch.cuda.device(self.device), \
                torch.backends.cudnn.flags(enabled=True, benchmark=self.cudnn_benchmark):
            for _ in range(self.warmup):
                model(x)
            torch.cuda.synchronize(self.device)
            start = [torch.cuda.Event(enable_timing=True) for _ in range(self.runs)]
            end = [torch.cuda.Event(enable_timing=True) for _ in range(self.runs)]
            for i in range(self.runs):
                start[i].record()
                model(x)
                end[i].record()
                # Waiting per run keeps runs from queueing behind each other, so each sample
                # includes the launch latency a single inference sees.
                end[i].synchronize()
            samples = [s.elapsed_time(e) for s, e in zip(start, end)]
        del model, x
        return LatencyStats.from_samples(samples)

    def describe(self) -> Dict[str, Any]:
        """The base metadata plus torch/CUDA/cuDNN versions, the GPU, dtype and cudnn.benchmark
        setting, and the host."""
        d = super().describe()
        props = torch.cuda.get_device_properties(self.device)
        d.update({"runtime": "torch-cuda", "runtime_version": torch.__version__,
                  "cuda_version": torch.version.cuda, "cudnn_version":
                  torch.backends.cudnn.version(), "gpu": props.name,
                  "gpu_memory_gb": round(props.total_memory / 2**30, 1),
                  "dtype": "float16" if self.half else "float32",
                  "cudnn_benchmark": self.cudnn_benchmark, **host_info()})
        return d
