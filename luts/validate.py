"""Check a latency table against whole networks: predicted vs measured latency of random subnets.

Subnets come from a randomly initialised supernet (weights do not change latency), seeded so a
validation is repeatable. Each is folded, converted and timed exactly as the table's op models
were (same converter, same profiler settings unless overridden), so any gap is the table's.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from profilers.base import DeviceSpec, Profiler, get_profiler
from profilers.measure import loadavg
from supernet.arch import ArchConfig
from supernet.stats import kendall_tau

from .builder import best_of
from .convert import export_artifact, require_converter
from .table import LatencyTable, LUTError

__all__ = ["validate_lut", "kendall_tau", "summarize", "plot_validation", "sample_archs"]


def summarize(predicted: Sequence[float], measured: Sequence[float]) -> Dict[str, float]:
    """Agreement of predicted with measured latencies: sample count, MAPE, fractions within 5% and
    10%, Kendall tau-b, mean and largest relative error."""
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    rel = (p - m) / m
    return {
        "samples": int(len(m)),
        "mape": float(np.mean(np.abs(rel))),
        "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
        "within_5pct": float(np.mean(np.abs(rel) <= 0.05)),
        "kendall_tau": kendall_tau(p, m),
        "mean_rel_err": float(np.mean(rel)),
        "max_abs_rel_err": float(np.max(np.abs(rel))),
    }


def sample_archs(table: LatencyTable, samples: int, seed: int,
                 resolutions: Optional[Sequence[int]] = None) -> List[ArchConfig]:
    """``samples`` distinct random archs at the table's resolutions (or ``resolutions``)."""
    rng = np.random.default_rng(seed)
    res = list(table.resolutions if resolutions is None else resolutions)
    bad = [r for r in res if r not in table.resolutions]
    if bad:
        raise LUTError(f"resolution(s) {bad} not in the latency table (resolutions "
                       f"{list(table.resolutions)})")
    out, seen = [], set()
    for _ in range(samples * 50):
        a = ArchConfig.sample(table.space, rng, resolutions=res)
        if a not in seen:
            seen.add(a)
            out.append(a)
        if len(out) == samples:
            break
    return out


def _random_supernet(space, seed: int):
    import torch

    from supernet.model import Supernet

    # Seed a forked RNG: the global torch RNG of the caller is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Supernet(space)
    return net.eval()


def validate_lut(table: "LatencyTable | str | os.PathLike", device: "str | DeviceSpec", *,
                 samples: int = 30, seed: int = 0, runs: Optional[int] = None,
                 warmup: Optional[int] = None, threads: Optional[int] = None,
                 rounds: Optional[int] = None, resolutions: Optional[Sequence[int]] = None,
                 plot: "str | os.PathLike | None" = None,
                 progress: bool = True, profiler: Optional[Profiler] = None,
                 work_dir: "str | os.PathLike | None" = None) -> Dict[str, Any]:
    """Time ``samples`` random subnets end to end on ``device``, compare with the table.

    ``runs``/``warmup``/``threads`` default to the settings the table was built with;
    ``rounds`` to the table's but at least 10 (each subnet keeps its best of ``rounds``
    round-robin timings, as op models keep their best pass). Returns
    a JSON-able dict: ``samples``, ``mape``, ``within_10pct``, ``kendall_tau`` (and a few more
    summary numbers), ``rows`` (one per subnet) and ``meta``.
    """
    if samples < 2:
        raise LUTError(f"--samples must be at least 2, got {samples}")
    if not isinstance(table, LatencyTable):
        table = LatencyTable.load(table)
    missing = table.missing_ops()
    if missing:
        raise LUTError(f"latency table ({table._describe()}) is incomplete: {len(missing)} ops "
                       f"missing, e.g. {missing[0].to_string()}; finish it with `ofa-deploy "
                       f"profile` first")
    spec = DeviceSpec.parse(device)
    tm = table.meta
    if profiler is None:
        kw: Dict[str, Any] = {
            "threads": threads if threads is not None else tm.get("threads"),
            "runs": runs if runs is not None else int(tm.get("runs", 50)),
            "warmup": warmup if warmup is not None else int(tm.get("warmup", 10))}
        profiler = get_profiler(spec, **kw)
    fmt = profiler.artifact_format
    require_converter(fmt)
    if tm.get("artifact_format") not in (None, fmt):
        raise LUTError(f"the table was measured on {tm.get('artifact_format')} models, device "
                       f"{spec} runs {fmt}: validate it on the device it was built for")
    # Whole networks take longer per run than ops, so a slow spell spoils a larger share of
    # their runs: they get at least 10 rounds unless told otherwise.
    rounds = int(rounds if rounds is not None else max(10, int(tm.get("rounds", 1) or 1)))
    if rounds < 1:
        raise LUTError(f"rounds must be >= 1, got {rounds}")
    archs = sample_archs(table, samples, seed, resolutions)
    predicted = table.predict(archs)
    space = table.space
    t0 = time.monotonic()
    load0 = loadavg()
    net = _random_supernet(space, seed)
    tmp = Path(tempfile.mkdtemp(prefix="ofa-lut-validate-", dir=work_dir))
    rows: List[Dict[str, Any]] = []
    bar = None
    if progress:
        import sys

        from supernet.progress import progress_bar

        # each subnet is converted once, then timed once per round
        bar = progress_bar(len(archs) * (rounds + 1), unit="step", file=sys.stderr,
                           desc=f"validate {spec}: {len(archs)} subnets x (convert + {rounds} "
                                f"rounds)")
    try:
        from supernet.model import extract_subnet
        from supernet.op_models import fold_batchnorm

        arts: List[Any] = []
        for i, arch in enumerate(archs):
            sub = fold_batchnorm(extract_subnet(net, arch).eval())
            shape = (1, 3, arch.r, arch.r)
            arts.append(sub if fmt == "torch" else
                        export_artifact(sub, shape, tmp / f"net{i}.{fmt}", fmt))
            if bar is not None:
                bar.set_postfix_str("converting", refresh=False)
                bar.update(1)
        best: List[Any] = [None] * len(archs)
        for rnd in range(rounds):
            # Round-robin over the subnets, keeping each one's best round, as the table
            # builder does for op models: a slow spell hits different subnets each round.
            for i, arch in enumerate(archs):
                best[i] = best_of(best[i], profiler.measure(arts[i], (1, 3, arch.r, arch.r)))
                if bar is not None:
                    bar.set_postfix_str(f"round {rnd + 1}/{rounds}", refresh=False)
                    bar.update(1)
        for i, (arch, pred, s) in enumerate(zip(archs, predicted, best)):
            rows.append({"index": i, "arch": arch.to_dict(), "arch_string": arch.to_string(space),
                         "r": arch.r, "predicted_ms": float(pred), "measured_ms": s.median_ms,
                         "measured_p10_ms": s.p10_ms, "measured_p90_ms": s.p90_ms,
                         "measured_std_ms": s.std_ms, "runs": s.runs,
                         "rel_err": float(pred) / s.median_ms - 1.0 if s.median_ms > 0 else None})
    finally:
        if bar is not None:
            bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
    result = summarize([r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows])
    result.update({
        "rows": rows,
        "meta": {"device": str(spec), "table": str(table.path) if table.path else None,
                 "table_device": tm.get("device"), "space": space.name,
                 "resolutions": sorted({a.r for a in archs}), "seed": seed, "rounds": rounds,
                 "overhead_ms": table.overhead_ms, "profiler": profiler.describe(),
                 "seconds": round(time.monotonic() - t0, 2), "loadavg_start": load0,
                 "loadavg_end": loadavg()},
    })
    if plot is not None:
        plot_validation(result, plot)
        result["meta"]["plot"] = str(plot)
    return result


def plot_validation(result: Dict[str, Any], path: "str | os.PathLike") -> Path:
    """Scatter of predicted vs measured latency with the y = x line and the +-10% band."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.array([r["measured_ms"] for r in result["rows"]])
    p = np.array([r["predicted_ms"] for r in result["rows"]])
    rs = np.array([r["r"] for r in result["rows"]])
    lo, hi = float(min(m.min(), p.min())) * 0.9, float(max(m.max(), p.max())) * 1.1
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    xs = np.linspace(lo, hi, 50)
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="0.9", label="±10%")
    ax.plot(xs, xs, color="0.4", lw=1, label="predicted = measured")
    sc = ax.scatter(m, p, c=rs, cmap="viridis", s=22, edgecolors="k", linewidths=0.3)
    if len(set(rs.tolist())) > 1:
        fig.colorbar(sc, ax=ax, label="resolution")
    meta = result.get("meta", {})
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("LUT-predicted latency (ms)")
    ax.set_title(f"{meta.get('space', '')} on {meta.get('device', '')}\n"
                 f"n={result['samples']}  MAPE {result['mape']:.1%}  "
                 f"within ±10% {result['within_10pct']:.0%}  τ {result['kendall_tau']:.3f}",
                 fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        fig.savefig(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path
