"""Which devices a run measures on: parsing and checking ``--devices`` before anything is
measured, the lane (physical resource) each one times on, and whether a failed one is gone."""
from __future__ import annotations

from typing import Iterable, List, Optional

from profilers.base import DeviceSpec, get_profiler
from supernet.errors import OfaDeployError, first_line

from .errors import BenchError

__all__ = ["resolve_devices", "lane_of", "profiler_class_of", "device_gone"]


def profiler_class_of(spec: DeviceSpec) -> type:
    """The registered profiler class for ``spec`` (importing its backend module)."""
    from profilers.base import ProfilerError, profiler_class

    try:
        return profiler_class(spec.backend)
    except ProfilerError as exc:
        raise BenchError(f"device {spec}: {first_line(exc, 400, with_type=True)}") from None


def _check_device_exists(spec: DeviceSpec) -> None:
    """Unknown devices are a usage error, reported before anything is measured."""
    if spec.backend == "adb":
        from profilers import discovery

        discovery.check_adb_name(spec.target)
    elif spec.backend == "cuda":
        from profilers import discovery

        idx = spec.target
        gpus = discovery.cuda_devices()
        if not any(str(g["index"]) == idx for g in gpus):
            have = ", ".join(g["spec"] for g in gpus) or "none"
            raise BenchError(f"unknown device {spec}: no CUDA GPU {idx} here (GPUs: {have})")


def _check_constructible(spec: DeviceSpec) -> None:
    """Build (and drop) the device's profiler once, so a bad target or setting (``ort:gpu``, a
    phone whose benchmark_model binary is missing) is one clear error up front. Profilers
    connect lazily, so this measures nothing and touches no phone."""
    try:
        prof = get_profiler(spec)
    except OfaDeployError as exc:
        raise BenchError(f"device {spec}: {exc}") from None
    try:
        prof.close()
    except Exception:
        pass


def _online_specs() -> List[DeviceSpec]:
    from profilers import discovery

    return [DeviceSpec.parse(s) for d in discovery.discover() if d["state"] == "online"
            for s in d["specs"]]


def resolve_devices(specs: Iterable[str]) -> List[DeviceSpec]:
    """Parse ``SPEC,SPEC`` strings (``all``: every online device); reject unknown backends,
    unregistered phones and missing GPUs before anything is measured."""
    out: List[DeviceSpec] = []
    for text in specs:
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            if part == "all":
                for spec in _online_specs():
                    if spec not in out:
                        out.append(spec)
                continue
            spec = DeviceSpec.parse(part)
            if spec in out:
                continue
            _check_device_exists(spec)
            profiler_class_of(spec)
            _check_constructible(spec)
            out.append(spec)
    if not out:
        raise BenchError("no devices given: pass --devices SPEC[,SPEC...] "
                         "(see `ofa-deploy devices`)")
    return out


def lane_of(spec: DeviceSpec) -> str:
    """Which physical resource a device measures on; one job at a time runs per lane."""
    if spec.backend in ("ort", "tflite") and spec.target == "cpu":
        return "host-cpu"
    return str(spec)


def device_gone(spec: DeviceSpec) -> Optional[str]:
    """After a failure: why the device is no longer usable, or None if it still looks fine."""
    if spec.backend != "adb":
        return None
    from profilers import discovery

    try:
        state = discovery.adb_state(spec.target)
    except Exception as exc:  # a probe that itself fails means the device cannot be reached
        return f"device state unknown ({first_line(exc, 400, with_type=True)})"
    return None if state == "online" else f"device is {state}"
