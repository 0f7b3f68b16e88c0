"""What can be profiled on this machine: the local CPU, CUDA GPUs, and registered ADB phones.

Each device is a dict with ``spec`` (what to pass to ``--device``/``--devices``), ``kind``
(``cpu``/``cuda``/``adb``), ``state`` (``online``, or why it cannot be used now: ``offline``,
``unauthorized``, ``unavailable``...) and ``specs`` (every profiler spec that runs on it).
Discovery never measures anything and never raises for an absent device kind: a machine
without GPUs simply lists none.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import platform
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional

from .base import ProfilerError
from .measure import available_cpus, cpu_model

__all__ = ["cpu_info", "local_devices", "cuda_devices", "probe_adb", "adb_devices", "adb_state",
           "check_adb_name", "discover"]


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _physical_cores() -> Optional[int]:
    """Distinct (package, core) pairs from /proc/cpuinfo; None where that file is absent."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            text = fh.read()
    except OSError:
        return None
    pairs = set()
    for block in text.split("\n\n"):
        fields = dict((k.strip(), v.strip()) for k, _, v in
                      (ln.partition(":") for ln in block.splitlines()) if k)
        if "core id" in fields:
            pairs.add((fields.get("physical id", "0"), fields["core id"]))
    return len(pairs) or None


def cpu_info() -> Dict[str, Any]:
    """This host's CPU: model name, logical and usable (affinity) CPU counts, physical cores,
    architecture."""
    return {"model": cpu_model(), "cores": os.cpu_count(), "usable_cores": available_cpus(),
            "physical_cores": _physical_cores(), "arch": platform.machine()}


def local_devices() -> List[Dict[str, Any]]:
    """The host CPU, with the CPU profiler specs whose runtime is installed."""
    runtimes = {"cpu": ("onnxruntime", ["onnxruntime"]),
                "tflite:cpu": ("LiteRT", ["ai_edge_litert", "tflite_runtime"])}
    specs, missing = [], {}
    for spec, (label, mods) in runtimes.items():
        if any(_has_module(m) for m in mods):
            specs.append(spec)
        else:
            missing[spec] = f"{label} is not installed"
    info = cpu_info()
    dev = {"spec": "cpu", "kind": "cpu", "name": info["model"],
           "state": "online" if specs else "unavailable", "specs": specs, **info}
    if missing:
        dev["unavailable_specs"] = missing
    return [dev]


def _nvidia_smi() -> List[Dict[str, Any]]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=index,name,memory.total,driver_version",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4 and parts[0].isdigit():
            mem = float(parts[2]) if parts[2].replace(".", "", 1).isdigit() else None
            gpus.append({"index": int(parts[0]), "name": parts[1],
                         "memory_gib": round(mem / 1024, 1) if mem else None,
                         "driver": parts[3]})
    return gpus


def cuda_devices() -> List[Dict[str, Any]]:
    """CUDA GPUs. torch (what the ``cuda`` profiler times with) is only imported when a driver
    is present, so listing devices on a CPU-only machine stays fast."""
    smi = _nvidia_smi()
    if not smi and not os.path.exists("/dev/nvidia0"):
        return []
    reason = None
    torch_gpus: Dict[int, Dict[str, Any]] = {}
    try:
        import torch

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                torch_gpus[i] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                                 "compute_capability": f"{p.major}.{p.minor}",
                                 "cuda": torch.version.cuda}
        else:
            reason = (f"torch {torch.__version__} has no CUDA support" if not torch.version.cuda
                      else "torch cannot initialise CUDA")
    except ImportError:
        reason = "torch is not installed"
    out = []
    indices = sorted(set(torch_gpus) | {g["index"] for g in smi})
    for i in indices:
        g = next((x for x in smi if x["index"] == i), {"index": i})
        dev = {"spec": f"cuda:{i}", "kind": "cuda", "index": i, **g, **torch_gpus.get(i, {})}
        dev["state"] = "online" if i in torch_gpus else "unavailable"
        dev["specs"] = [f"cuda:{i}"] if i in torch_gpus else []
        if i not in torch_gpus:
            dev["reason"] = reason or "not visible to torch"
        out.append(dev)
    return out


# -- ADB ---------------------------------------------------------------------------------------
_PROPS = ("ro.product.model", "ro.product.cpu.abi", "ro.build.version.release")


def _registry_entries() -> list:
    """Registry entries; none (not an error) when no registry was ever set up here."""
    from .devices import load_registry, registry_path

    if not os.environ.get("OFA_DEPLOY_DEVICES") and not registry_path().exists():
        return []
    return list(load_registry().values())


def probe_adb(entry: Any, *, timeout_s: float = 5.0, auth_timeout_s: float = 2.0
              ) -> Dict[str, Any]:
    """Connect to one registered phone with short timeouts: its state and, when online, what it
    is. Never raises for an unreachable phone: that is its state."""
    from .adb_transport import (AdbTransportError, DeviceOffline, DeviceUnauthorized,
                                open_transport)

    quick = dataclasses.replace(entry, timeout_s=min(entry.timeout_s, timeout_s),
                                auth_timeout_s=min(entry.auth_timeout_s, auth_timeout_s))
    dev: Dict[str, Any] = {"spec": f"adb:{entry.name}", "kind": "adb", "name": None,
                           "state": "offline", "specs": [], "transport": entry.transport,
                           "serial": entry.address, "threads": entry.threads}
    transport = open_transport(quick)
    try:
        transport.connect()
        dev["state"] = "online"
        dev["specs"] = [dev["spec"]]
        try:
            rc, out = transport.shell("; ".join(f"getprop {k}" for k in _PROPS), timeout_s)
            vals = out.replace("\r", "").split("\n") if rc == 0 else []
            props = dict(zip(("model", "abi", "android"),
                             (v.strip() or None for v in vals[:len(_PROPS)])))
            dev.update({k: v for k, v in props.items() if v})
            dev["name"] = props.get("model")
        except AdbTransportError:
            pass  # reachable but slow to answer: still online; details stay unknown
    except DeviceUnauthorized as exc:
        dev.update(state="unauthorized", reason=str(exc))
    except DeviceOffline as exc:
        dev.update(state="offline", reason=str(exc))
    except ProfilerError as exc:  # other transport failures: cannot be used right now
        dev.update(state="offline", reason=str(exc))
    finally:
        transport.close()
    return dev


def adb_devices() -> List[Dict[str, Any]]:
    """Every phone of the device registry, probed in parallel, in registry order."""
    entries = _registry_entries()
    if not entries:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(entries))) as pool:
        return list(pool.map(probe_adb, entries))


def adb_state(name: str) -> str:
    """``online``, ``unauthorized`` or ``offline`` for the registered phone ``name``."""
    from .devices import get_device

    return probe_adb(get_device(name))["state"]


def check_adb_name(name: str) -> None:
    """Raise (one clear line) unless ``name`` is in the device registry."""
    from .devices import get_device

    get_device(name)


def discover(*, adb: bool = True) -> List[Dict[str, Any]]:
    """Every device this machine can profile on (see the module docstring for the fields)."""
    out = local_devices() + cuda_devices()
    if adb:
        out += adb_devices()
    return out
