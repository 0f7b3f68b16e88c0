"""The measurement protocol: how every latency in ofa-deploy is measured, defined in one place.

Op tables (``profile``), ``lut validate``, ``lut calibrate``, ``specialize``'s measurement of
the exported winner and ``bench`` all time through :func:`measure_pooled` with one
:class:`MeasurementProtocol`, so a number from one compares with a number from another:

estimator
    ``best-round-median`` (the default): the median of each round's runs, then the lowest of
    those round medians. It estimates the machine's *uncontended* speed, which is what a
    dedicated device (a phone running the app, a server running only the model) sees: on a
    shared machine whose speed drifts over minutes (another job starts, the CPU is
    throttled), the pooled median of a whole network moves with the load while its quietest
    round does not. A median inside the round, not a minimum run, so one lucky run does not
    make the number; p10, p90, std and runs are still those of every run pooled, so the
    noise is reported the same way under both estimators.
    ``median-pooled``: the median over every timed run of every round: what an application
    sees on a machine shared with other work, slow spells included.
    Rounds interleave the things being compared (round-robin) under both.
    Why the default changed from ``median-pooled`` (2026-12-03, the shared 2-vCPU AMD EPYC
    build VM, load ~1, three fresh ``ofa-mbv3-tiny`` tables per estimator built A, B, A, B;
    benchmarks/latency_contract/): the same 30 subnets measured by two validations minutes
    apart differed by 8-14% (CV of the ratio) pooled and by 1.0-1.3% best-round; two fresh
    tables' op sums for the same subnets by 7-9% and 3-4%; and ``lut validate --samples 30``
    had 80/30/63% of the subnets within 10% pooled, 100/97/93% best-round (100/100/100% with
    the shrunk calibration model). A pooled number on this VM mostly measures the neighbours.
cache
    ``warm`` (default): steady state, what an application running the model repeatedly sees;
    nothing is evicted between runs. ``cold``: ``flush_bytes`` are written before every timed
    run, so weights come from further away, as after other work.
rounds, network_rounds
    ``rounds`` passes over the ops of a table; ``network_rounds`` passes over whole networks
    (calibration, validation, the drift check, ``specialize``'s winner, ``bench``). Whole
    networks get more rounds (default 15): a network of a few ms is timed in about 20 ms
    per round, and on a shared VM a slow spell of a second or more covers whole rounds, so
    the share of slow rounds, which moves the pooled median, varies from network to network
    by far less over 15 rounds than over 5 (a table has hundreds of ops, whose errors
    average out in an op sum; a validated network is one number).
threads, cpus
    Runtime threads and the CPUs the process (and, because affinity is set before the
    runtime creates its thread pool, the runtime's worker threads) may run on.

Every table, validation result, ``report.json`` and bench result records the protocol
(:meth:`MeasurementProtocol.get_state`); :func:`require_comparable` refuses to compare numbers
measured under protocols that measure different things (estimator, cache, threads, cpus).
Runs, warm-up and rounds change only how precise a number is, so they may differ.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .base import LatencyStats, ProfilerError

__all__ = ["MeasurementProtocol", "ProtocolMismatch", "require_comparable", "measure_pooled",
           "estimate", "noise_warning", "cv_of", "ESTIMATORS", "DEFAULT_ESTIMATOR",
           "CACHE_POLICIES", "DEFAULT_MAX_CV"]

ESTIMATORS = ("median-pooled", "best-round-median")  # the CLI lists them in this order
DEFAULT_ESTIMATOR = "best-round-median"
CACHE_POLICIES = ("warm", "cold")
# Run-to-run variation above which a measurement is called noisy: with this spread a median of
# a few dozen runs is still stable to about 2%, but the spread says other work shares the CPU
# and the machine's speed may move between measurements by far more.
DEFAULT_MAX_CV = 0.10
# Rounds of whole-network timing (see ``network_rounds`` in the module docstring).
NETWORK_ROUNDS = 15
# The settings that decide *what* is measured; the rest only decide how precisely.
_SEMANTIC = ("estimator", "cache", "flush_bytes", "threads", "cpus")


class ProtocolMismatch(ProfilerError):
    """Two latencies measured under protocols that measure different things."""


@dataclass(frozen=True)
class MeasurementProtocol:
    """How a latency is measured (see the module docstring). ``threads=None`` means the
    backend's default; ``cpus`` is a tuple of CPU ids or None (no pinning)."""

    estimator: str = DEFAULT_ESTIMATOR
    warmup: int = 5
    runs: int = 10
    rounds: int = 5
    network_rounds: int = NETWORK_ROUNDS
    cache: str = "warm"
    flush_bytes: int = 0
    threads: Optional[int] = 1
    cpus: Optional[Tuple[int, ...]] = None

    def __post_init__(self):
        if self.estimator not in ESTIMATORS:
            raise ProfilerError(f"unknown estimator {self.estimator!r}; known: "
                                f"{', '.join(ESTIMATORS)}")
        if self.cache not in CACHE_POLICIES:
            raise ProfilerError(f"unknown cache policy {self.cache!r}; choose warm or cold")
        if self.runs < 1 or self.warmup < 0 or self.rounds < 1 or self.network_rounds < 1:
            raise ProfilerError(f"need runs >= 1, warmup >= 0 and rounds >= 1 (got runs="
                                f"{self.runs}, warmup={self.warmup}, rounds={self.rounds}, "
                                f"network_rounds={self.network_rounds})")
        if self.threads is not None and int(self.threads) < 1:
            raise ProfilerError(f"threads must be >= 1, got {self.threads}")
        if self.cache == "warm" and self.flush_bytes:
            # warm means nothing is evicted: a flush size would be recorded but unused
            object.__setattr__(self, "flush_bytes", 0)
        if self.cpus is not None:
            object.__setattr__(self, "cpus", tuple(sorted({int(c) for c in self.cpus})))

    # -- (de)serialisation -------------------------------------------------------------
    def get_state(self) -> Dict[str, Any]:
        """JSON-able dict (recorded in tables, reports and bench results)."""
        d = asdict(self)
        d["cpus"] = list(self.cpus) if self.cpus is not None else None
        return d

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "MeasurementProtocol":
        """Inverse of :meth:`get_state`; unknown keys are an error (a newer writer)."""
        if not isinstance(state, Mapping):
            raise ProfilerError(f"bad measurement protocol {state!r}: expected an object")
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(state) - known)
        if extra:
            raise ProfilerError(f"measurement protocol has unknown field(s) {extra}; written by "
                                f"a newer ofa-deploy?")
        kw = dict(state)
        if kw.get("cpus") is not None:
            kw["cpus"] = tuple(kw["cpus"])
        try:
            return cls(**kw)
        except TypeError as exc:
            raise ProfilerError(f"bad measurement protocol {dict(state)!r}: {exc}") from None

    @classmethod
    def of(cls, meta: Optional[Mapping[str, Any]]) -> Optional["MeasurementProtocol"]:
        """The protocol recorded in a table's meta / a report (None if it records none)."""
        if not meta or meta.get("protocol") is None:
            return None
        return cls.from_state(meta["protocol"])

    def with_(self, **changes: Any) -> "MeasurementProtocol":
        """A copy with ``changes`` (None values are ignored: "keep this setting")."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def for_networks(self) -> "MeasurementProtocol":
        """This protocol as whole networks are timed: ``network_rounds`` rounds (what
        :func:`measure_pooled` is given for networks; the recorded protocol stays ``self``)."""
        return replace(self, rounds=self.network_rounds)

    # -- use -----------------------------------------------------------------------------
    def profiler_kwargs(self, backend: str) -> Dict[str, Any]:
        """Constructor arguments that make a profiler of ``backend`` follow this protocol (one
        timed round: ``runs`` runs after ``warmup``)."""
        kw: Dict[str, Any] = {"runs": self.runs, "warmup": self.warmup}
        if backend in ("ort", "tflite"):
            kw["threads"] = self.threads
            kw["flush_bytes"] = self.flush_bytes if self.cache == "cold" else 0
            if self.cpus is not None:
                kw["cpus"] = list(self.cpus)
        elif backend == "adb":
            if self.threads is not None:
                kw["threads"] = self.threads
        return kw

    def semantic(self) -> Dict[str, Any]:
        """The settings that decide what is measured (compared by :func:`require_comparable`)."""
        s = self.get_state()
        return {k: s[k] for k in _SEMANTIC}

    def describe(self) -> str:
        """One line, e.g. ``median of 5x10 pooled runs, warm cache, 1 thread`` (or ``lowest of
        5 round medians of 10 runs, ...`` under ``best-round-median``)."""
        cache = "warm cache" if self.cache == "warm" else f"cold cache ({self.flush_bytes} B " \
                                                           f"flushed)"
        th = "default threads" if self.threads is None else \
            f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        pin = "" if self.cpus is None else f", pinned to CPUs {','.join(map(str, self.cpus))}"
        how = (f"median of {self.rounds}x{self.runs} pooled runs"
               if self.estimator == "median-pooled" else
               f"lowest of {self.rounds} round medians of {self.runs} runs")
        return f"{how}, {cache}, {th}{pin}; whole networks: {self.network_rounds} rounds"


def require_comparable(a: MeasurementProtocol, b: MeasurementProtocol, what_a: str,
                       what_b: str) -> None:
    """Raise :class:`ProtocolMismatch` (one line, naming the differing settings) unless ``a``
    and ``b`` measure the same thing."""
    sa, sb = a.semantic(), b.semantic()
    diff = [k for k in sa if sa[k] != sb[k]]
    if diff:
        parts = ", ".join(f"{k} {sa[k]!r} vs {sb[k]!r}" for k in diff)
        raise ProtocolMismatch(f"{what_a} and {what_b} were measured under different protocols "
                               f"({parts}); they cannot be compared: measure both the same way")


def estimate(rounds: Sequence[Sequence[float]], estimator: str = DEFAULT_ESTIMATOR
             ) -> LatencyStats:
    """:class:`LatencyStats` of one thing's timed runs grouped by round (ms), under
    ``estimator``: p10, p90, std and runs always of every run pooled; the median is the
    pooled median (``median-pooled``) or the lowest round median (``best-round-median``,
    with p10 lowered to it where the pooled p10 lies above).
    Empty rounds are skipped; no runs at all is a ProfilerError."""
    if estimator not in ESTIMATORS:
        raise ProfilerError(f"unknown estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")
    groups = [[float(v) for v in r] for r in rounds if len(r)]
    stats = LatencyStats.from_samples([v for g in groups for v in g])
    if estimator == "best-round-median":
        best = min(float(np.median(g)) for g in groups)
        # the quietest round can be faster than the pooled 10th percentile (most rounds in a
        # slow spell): p10 is then the estimate itself, so p10 <= median <= p90 holds for
        # every consumer (tables check it, reports draw p10..p90 around the median)
        stats = replace(stats, median_ms=best, p10_ms=min(stats.p10_ms, best))
    return stats


def measure_pooled(profiler, items: Sequence[Tuple[Any, Sequence[int]]],
                   protocol: MeasurementProtocol,
                   on_step: Optional[Callable[[int, int], None]] = None) -> List[LatencyStats]:
    """Stats of each ``(artifact, input_shape)`` under ``protocol``: ``rounds`` round-robin
    passes over all items, each a ``profiler`` measurement (``warmup`` + ``runs``), all runs of
    an item pooled into one :class:`LatencyStats` (median, p10, p90, std, runs) by
    :func:`estimate` under ``protocol.estimator`` (which keeps the runs grouped by round).

    A backend that reports summary statistics only (no ``measure_samples``, e.g. a phone's
    benchmark tool) contributes its median once per round (a one-run round)."""
    per_round: List[List[List[float]]] = [[] for _ in items]
    sampler = getattr(profiler, "measure_samples", None)
    step = 0
    for _ in range(protocol.rounds):
        for i, (art, shape) in enumerate(items):
            if sampler is not None:
                per_round[i].append([float(v) for v in sampler(art, shape)])
            else:
                per_round[i].append([float(profiler.measure(art, shape).median_ms)])
            step += 1
            if on_step is not None:
                on_step(step, protocol.rounds * len(items))
    return [estimate(r, protocol.estimator) for r in per_round]


def cv_of(stats: LatencyStats) -> float:
    """Run-to-run variation of one measurement: a robust coefficient of variation,
    (p90 - p10) / (2.563 x median), which equals std / mean for normally distributed runs.
    Why not std / median: one preempted run of 10x the median (common on a shared machine)
    inflates the std several-fold while the pooled median, the estimator, barely moves."""
    if stats.median_ms <= 0:
        return float("nan")
    return float((stats.p90_ms - stats.p10_ms) / (2.563 * stats.median_ms))


def noise_warning(cvs: Sequence[float], *, max_cv: float = DEFAULT_MAX_CV,
                  what: str = "measurements") -> Optional[str]:
    """A one-line warning naming the cause when the median run-to-run variation of ``cvs``
    exceeds ``max_cv`` (None when the machine was quiet enough)."""
    vals = [c for c in cvs if c is not None and math.isfinite(c)]
    if not vals:
        return None
    med = float(np.median(vals))
    if med <= max_cv:
        return None
    from .measure import available_cpus, loadavg

    load = loadavg()
    cause = (f"load average {load[0]:.2f} on {available_cpus()} CPU(s): other work shares "
             f"the CPU" if load else "other work or frequency scaling")
    return (f"noisy machine: the {what} vary {med:.0%} run to run (over {max_cv:.0%}), "
            f"{cause}; these numbers are uncertain, measure again on a quiet machine")
