"""Latency backends: onnxruntime CPU, LiteRT, CUDA events, Android phones over ADB."""
from .base import (DeviceSpec, DeviceSpecError, LatencyStats, Profiler, ProfilerError,
                   get_profiler, register_profiler)

__all__ = ["DeviceSpec", "DeviceSpecError", "LatencyStats", "Profiler", "ProfilerError",
           "get_profiler", "register_profiler"]
