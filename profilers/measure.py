"""Timing discipline shared by every backend, and host facts recorded with measurements.

Every backend times a zero-argument callable with :func:`time_callable`: warm-up calls first
(caches, lazy allocation, thread-pool spin-up), then ``runs`` timed calls, each timed alone with
a monotonic nanosecond clock, summarised as a median with p10/p90 (robust to the occasional
preemption on a shared machine). :class:`DriftMonitor` re-times a reference artifact while a long
table build runs, so a machine that slows down (thermal throttling, a neighbour process) is
noticed rather than silently baked into the table.
"""
from __future__ import annotations

import contextlib
import os
import platform
import socket
import time
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from .base import DeviceSpec, LatencyStats, ProfilerError

__all__ = ["time_callable", "measure", "CacheFlusher", "cache_size", "pinned", "parse_cpus",
           "usable_cpus", "available_cpus", "host_cpu_threads", "DriftMonitor", "DriftWarning",
           "host_info", "cpu_model", "loadavg"]


def time_callable(fn: Callable[[], Any], *, runs: int, warmup: int,
                  timer: Callable[[], int] = time.perf_counter_ns,
                  before: Optional[Callable[[], Any]] = None) -> List[float]:
    """Per-call latencies of ``fn`` in milliseconds (``runs`` samples after ``warmup`` calls).
    ``before`` runs untimed ahead of every timed call (e.g. :class:`CacheFlusher`)."""
    if runs < 1:
        raise ProfilerError(f"runs must be >= 1, got {runs}")
    if warmup < 0:
        raise ProfilerError(f"warmup must be >= 0, got {warmup}")
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        if before is not None:
            before()
        t0 = timer()
        fn()
        out.append((timer() - t0) / 1e6)
    return out


def measure(fn: Callable[[], Any], *, runs: int, warmup: int,
            before: Optional[Callable[[], Any]] = None) -> LatencyStats:
    """LatencyStats of ``runs`` timed calls of ``fn`` after ``warmup`` untimed ones (``before`` runs
    untimed ahead of each)."""
    return LatencyStats.from_samples(time_callable(fn, runs=runs, warmup=warmup, before=before))


def cache_size(level: int = 2, cpu: int = 0) -> Optional[int]:
    """Bytes of the data/unified cache at ``level`` of ``cpu`` (Linux sysfs), else None."""
    base = f"/sys/devices/system/cpu/cpu{cpu}/cache"
    try:
        for entry in sorted(os.listdir(base)):
            d = os.path.join(base, entry)
            with open(os.path.join(d, "level")) as fh:
                if int(fh.read()) != level:
                    continue
            with open(os.path.join(d, "type")) as fh:
                if fh.read().strip() == "Instruction":
                    continue
            with open(os.path.join(d, "size")) as fh:
                text = fh.read().strip().upper()
            mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(text[-1:], 1)
            return int(text.rstrip("KMG")) * mult
    except (OSError, ValueError):
        pass
    return None


class CacheFlusher:
    """Writes a buffer of ``nbytes`` (default: twice the core-private L2) before each run.

    Why: timed in a loop, a small model keeps its weights in the caches, but inside a network
    the other layers' weights and activations have passed through the caches since it last
    ran, so its weights come from further away (L3, or memory once a network outgrows L3).
    Writing as many bytes as the rest of a network touches makes a lone op model pay that
    weight traffic as it does in a network; its input, produced in the same run by the context
    layer, stays hot as it is in a network. For whole networks the default (L2-sized) flush
    changes next to nothing: their own data evicts far more.
    """

    def __init__(self, nbytes: Optional[int] = None):
        if nbytes is None:
            nbytes = 2 * (cache_size(2) or 1024 ** 2)
        import numpy as np

        self.nbytes = int(nbytes)
        self._buf = np.zeros(self.nbytes // 8, dtype=np.float64)
        self._k = 0.0

    def __call__(self) -> None:
        self._k += 1.0
        self._buf.fill(self._k)


def parse_cpus(cpus: "str | Sequence[int] | None") -> Optional[List[int]]:
    """``"0,2-3"`` or ``[0, 2, 3]`` -> ``[0, 2, 3]``; None stays None."""
    if cpus is None:
        return None
    if isinstance(cpus, str):
        out: List[int] = []
        for part in cpus.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                if "-" in part:
                    a, b = part.split("-", 1)
                    out.extend(range(int(a), int(b) + 1))
                else:
                    out.append(int(part))
            except ValueError:
                raise ProfilerError(f"bad CPU list {cpus!r}: expected e.g. 0,2-3") from None
        cpus = out
    cpus = sorted({int(c) for c in cpus})
    if not cpus or any(c < 0 for c in cpus):
        raise ProfilerError(f"bad CPU list {cpus!r}")
    return cpus


def available_cpus() -> int:
    """How many CPUs this process may run on: its affinity mask, which taskset, cgroups or a
    container narrow below ``os.cpu_count()`` (where the OS has no affinity API, macOS and
    Windows, the CPU count); at least 1. The default thread count of host backends."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def host_cpu_threads(spec: DeviceSpec, threads: Optional[int]) -> int:
    """Thread count of a backend that runs on this host's CPU (``ort``, ``tflite``): the spec's
    ``threads`` option, else ``threads``, else :func:`available_cpus`. A target other than
    ``cpu`` or a count below 1 is a :class:`ProfilerError`."""
    if spec.target != "cpu":
        raise ProfilerError(f"{spec.backend} supports target 'cpu' only, got {spec}")
    n = spec.options.get("threads", threads)
    if n is None:
        n = available_cpus()
    if int(n) < 1:
        raise ProfilerError(f"threads must be >= 1, got {n}")
    return int(n)


def usable_cpus(cpus: "str | Sequence[int] | None") -> Optional[List[int]]:
    """:func:`parse_cpus`, checked against the CPUs this process may run on."""
    cpus = parse_cpus(cpus)
    if cpus is not None and hasattr(os, "sched_getaffinity"):
        allowed = os.sched_getaffinity(0)
        bad = [c for c in cpus if c not in allowed]
        if bad:
            raise ProfilerError(f"CPU(s) {bad} not available for pinning (usable: "
                                f"{','.join(map(str, sorted(allowed)))})")
    return cpus


@contextlib.contextmanager
def pinned(cpus: "str | Sequence[int] | None") -> Iterator[Optional[List[int]]]:
    """Pin this process to ``cpus`` for the duration (no-op when None). Pinning keeps the
    scheduler from migrating the timed thread between cores mid-run; where the OS has no
    affinity API (macOS) it is skipped with a warning rather than failing the measurement."""
    cpus = parse_cpus(cpus)
    if cpus is None:
        yield None
        return
    if not hasattr(os, "sched_setaffinity"):
        warnings.warn("thread pinning is not supported on this OS; measuring unpinned")
        yield None
        return
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as exc:
        raise ProfilerError(f"cannot pin to CPUs {cpus}: {exc.strerror}") from None
    try:
        yield cpus
    finally:
        os.sched_setaffinity(0, before)


class DriftWarning(UserWarning):
    """The reference op's latency moved by more than the tolerance during a build."""


class DriftMonitor:
    """Re-measures a reference (``measure_fn`` -> median ms) at most every ``every_s`` seconds
    and warns when it departs from the first measurement by more than ``tolerance``.

    ``check()`` is cheap to call after every op: it returns None unless a re-measure was due.
    ``history`` keeps ``(elapsed_s, median_ms, rel_drift)`` for the table's metadata.
    """

    def __init__(self, measure_fn: Callable[[], float], *, every_s: float = 30.0,
                 tolerance: float = 0.05, clock: Callable[[], float] = time.monotonic,
                 on_warn: Optional[Callable[[str], None]] = None):
        self._measure = measure_fn
        self.every_s = float(every_s)
        self.tolerance = float(tolerance)
        self._clock = clock
        self._t0 = clock()
        self._last = self._t0
        self.baseline = float(measure_fn())
        self.history: List[tuple] = [(0.0, self.baseline, 0.0)]
        self.warnings: List[str] = []
        self._on_warn = on_warn

    def check(self, force: bool = False) -> Optional[float]:
        """Re-measure the reference if ``every_s`` has passed (or ``force``) and warn on drift
        beyond ``tolerance``; the relative drift, or None when no re-measure was due."""
        now = self._clock()
        if not force and now - self._last < self.every_s:
            return None
        self._last = now
        value = float(self._measure())
        drift = (value - self.baseline) / self.baseline if self.baseline > 0 else 0.0
        self.history.append((round(now - self._t0, 3), value, drift))
        if abs(drift) > self.tolerance:
            msg = (f"latency drift {drift:+.1%} on the reference op ({self.baseline:.4f} -> "
                   f"{value:.4f} ms) after {now - self._t0:.0f}s: the machine's speed changed")
            self.warnings.append(msg)
            if self._on_warn is not None:
                self._on_warn(msg)
            else:
                warnings.warn(msg, DriftWarning, stacklevel=2)
        return drift

    @property
    def max_drift(self) -> float:
        """The largest absolute relative drift seen so far (0 before any re-measure)."""
        return max((abs(d) for _, _, d in self.history), default=0.0)

    def summary(self) -> Dict[str, Any]:
        """Baseline, largest drift, number of checks, tolerance and warnings: what a table's
        ``drift`` metadata records."""
        return {"baseline_ms": self.baseline, "max_abs_drift": self.max_drift,
                "checks": len(self.history) - 1, "tolerance": self.tolerance,
                "warnings": list(self.warnings)}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo, else what the platform module says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> Optional[List[float]]:
    """The 1/5/15-minute load averages rounded to 2 places, or None where the OS has none; recorded
    so a noisy measurement can be explained later."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def host_info() -> Dict[str, Any]:
    """Host name, CPU model, CPU counts, platform, Python and load: recorded with every host-CPU
    measurement."""
    return {"host": socket.gethostname(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
            "usable_cpus": available_cpus(),
            "platform": platform.platform(), "python": platform.python_version(),
            "loadavg": loadavg()}
