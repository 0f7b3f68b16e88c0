"""TFLite's ``benchmark_model``: the command line we run on the phone and the parser of what
it prints.

One invocation prints, per phase (warm-up, then timed runs), a ``count=`` line from TFLite's
``Stat`` (``count=50 first=.. curr=.. min=.. max=.. avg=.. std=..``, or
``count=N curr=X(all same)``), then a summary: current builds print
``Inference timings in us: Init: N, First inference: N, Warmup (avg): X, Inference (avg): X``,
older ones ``Average inference timings in us: Warmup: X, Init: N, Inference: X`` (or
``no stats: X``). Lines may carry an ``INFO: `` prefix and arrive with ``\\r\\n``.

``benchmark_model`` reports a mean, std, min and max, never per-run times, so a median cannot be
read from one invocation. :func:`combine_batches` therefore takes several invocations
("batches"): the median/p10/p90 are over the batch means, the std is the pooled per-run std
over every timed run, and the spread of batch means doubles as the drift check.
"""
from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .base import LatencyStats, ProfilerError

__all__ = ["RunStats", "BenchmarkOutput", "BenchmarkParseError", "parse_benchmark_output",
           "build_command", "combine_batches"]

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf"


class BenchmarkParseError(ProfilerError):
    """benchmark_model's output holds no timings (it failed, or is not benchmark_model)."""


@dataclass(frozen=True)
class RunStats:
    """One ``count=`` line, in microseconds."""

    count: int
    first_us: float
    curr_us: float
    min_us: float
    max_us: float
    avg_us: float
    std_us: float


@dataclass(frozen=True)
class BenchmarkOutput:
    """The timings one benchmark_model invocation printed, in microseconds (average and per-run
    statistics of inference and warm-up, init, first inference); ``format`` names the output
    layout they were read from."""

    inference_avg_us: float
    inference: Optional[RunStats]
    warmup: Optional[RunStats]
    init_us: Optional[float]
    first_inference_us: Optional[float]
    warmup_avg_us: Optional[float]
    format: str  # "current" | "legacy"


_COUNT_RE = re.compile(
    rf"count=(\d+)(?:\s+first=({_NUM})\s+curr=({_NUM})\s+min=({_NUM})\s+max=({_NUM})"
    rf"\s+avg=({_NUM})\s+std=({_NUM})|\s+curr=({_NUM})(\(all same\))?)?")
_CURRENT_RE = re.compile(
    rf"Inference timings in us:\s*Init:\s*({_NUM}),\s*First inference:\s*({_NUM}),"
    rf"\s*Warmup \(avg\):\s*({_NUM}),\s*Inference \(avg\):\s*({_NUM})")
_LEGACY_RE = re.compile(
    rf"Average inference timings in us:\s*Warmup:\s*({_NUM}),\s*Init:\s*({_NUM}),"
    rf"\s*(?:Inference|no stats):\s*({_NUM})")
_ERROR_RE = re.compile(r"^(?:ERROR:|.*\b(?:Failed|failed|Unconsumed cmdline flags|"
                       r"not found|No such file|Permission denied|cannot execute)\b).*$",
                       re.MULTILINE)


def _count_line(m: "re.Match[str]") -> RunStats:
    count = int(m.group(1))
    if m.group(2) is not None:
        first, curr, lo, hi, avg, std = (float(m.group(i)) for i in range(2, 8))
        return RunStats(count, first, curr, lo, hi, avg, std)
    if m.group(8) is not None:  # one run, or every run took the same time
        v = float(m.group(8))
        return RunStats(count, v, v, v, v, v, 0.0)
    return RunStats(count, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)


def _tail(text: str, n: int = 6) -> str:
    lines = [ln.strip() for ln in text.replace("\r", "").splitlines() if ln.strip()]
    return " | ".join(lines[-n:]) or "(no output)"


def parse_benchmark_output(text: str) -> BenchmarkOutput:
    """Timings from one ``benchmark_model`` run (either summary format)."""
    clean = text.replace("\r\n", "\n").replace("\r", "\n")
    counts = [_count_line(m) for m in _COUNT_RE.finditer(clean)]
    cur = _CURRENT_RE.search(clean)
    leg = _LEGACY_RE.search(clean)
    if cur is None and leg is None:
        err = _ERROR_RE.findall(clean)
        hint = f"; it said: {' | '.join(e.strip() for e in err[-3:])}" if err else ""
        raise BenchmarkParseError(f"benchmark_model printed no inference timings{hint} "
                                  f"(last lines: {_tail(clean)})")
    inference = counts[-1] if counts else None
    warmup = counts[-2] if len(counts) >= 2 else None
    if cur is not None:
        init, first, warm, avg = (float(cur.group(i)) for i in range(1, 5))
        fmt = "current"
    else:
        warm, init, avg = (float(leg.group(i)) for i in range(1, 4))
        first, fmt = None, "legacy"
    if inference is not None and inference.count > 0 and math.isfinite(inference.avg_us):
        avg = inference.avg_us  # the count= line carries the same mean plus std/min/max
    if not math.isfinite(avg) or avg < 0 or (inference is not None and inference.count == 0):
        raise BenchmarkParseError(f"benchmark_model made no timed runs "
                                  f"(last lines: {_tail(clean)})")
    return BenchmarkOutput(inference_avg_us=avg, inference=inference, warmup=warmup,
                           init_us=init, first_inference_us=first, warmup_avg_us=warm, format=fmt)


def build_command(binary: str, graph: str, *, threads: int, warmup: int, runs: int,
                  affinity: Optional[str] = None, extra_args: Sequence[str] = ()) -> str:
    """The remote shell line (every path quoted). ``min_secs``/``warmup_min_secs`` are zeroed so
    the run counts are exactly ``warmup``/``runs`` rather than "at least a second's worth"."""
    argv: List[str] = []
    if affinity:
        argv += ["taskset", affinity]
    argv += [binary, f"--graph={graph}", f"--num_threads={int(threads)}",
             f"--warmup_runs={int(warmup)}", "--warmup_min_secs=0",
             f"--num_runs={int(runs)}", "--min_secs=0", *extra_args]
    return " ".join(shlex.quote(a) for a in argv)


def combine_batches(outputs: Sequence[BenchmarkOutput],
                    drift_tolerance: float = 0.10) -> Tuple[LatencyStats, Dict[str, Any]]:
    """One :class:`LatencyStats` (ms) from several invocations, and what went into it.

    median/p10/p90: over the batch means (one batch: all three are its mean). std: pooled
    per-run std of every timed run (exact, from each batch's count, mean and std). ``drift``:
    (mean of the later half of batch means - mean of the earlier half) / median; ``drifted``
    when beyond the tolerance.
    """
    if not outputs:
        raise ProfilerError("no benchmark_model output to combine")
    means = np.array([o.inference_avg_us for o in outputs], dtype=np.float64)
    counts = np.array([o.inference.count if o.inference else 1 for o in outputs], dtype=np.float64)
    stds = np.array([o.inference.std_us if o.inference and math.isfinite(o.inference.std_us)
                     else 0.0 for o in outputs], dtype=np.float64)
    total = counts.sum()
    grand = float((counts * means).sum() / total)
    pooled = math.sqrt(float((counts * (stds ** 2 + (means - grand) ** 2)).sum() / total))
    median = float(np.median(means))
    stats = LatencyStats(median / 1e3, float(np.percentile(means, 10)) / 1e3,
                         float(np.percentile(means, 90)) / 1e3, pooled / 1e3, int(total))
    half = len(means) // 2
    drift = (float((means[-half:].mean() - means[:half].mean()) / median)
             if median > 0 and half > 0 else 0.0)
    mins = [o.inference.min_us for o in outputs if o.inference and math.isfinite(o.inference.min_us)]
    maxs = [o.inference.max_us for o in outputs if o.inference and math.isfinite(o.inference.max_us)]
    meta = {
        "batches": len(outputs),
        "batch_means_ms": [round(float(m) / 1e3, 6) for m in means],
        "mean_ms": grand / 1e3,
        "min_ms": min(mins) / 1e3 if mins else None,
        "max_ms": max(maxs) / 1e3 if maxs else None,
        "init_ms": [None if o.init_us is None else o.init_us / 1e3 for o in outputs],
        "drift": drift,
        "drifted": abs(drift) > drift_tolerance,
        "output_format": outputs[0].format,
        "stats_method": ("median/p10/p90 over benchmark_model invocations (batch means); "
                         "std pooled over all timed runs"),
    }
    return stats, meta
