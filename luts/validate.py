"""Check a latency table against whole networks: predicted vs measured latency of random subnets.

Subnets come from a randomly initialised supernet (weights do not change latency), seeded so a
validation is repeatable. Each is exported and timed exactly as ``specialize`` exports and
measures its winner, under the table's measurement protocol, and compared with the prediction
the search uses (calibrated, rescaled to today's speed), so any gap is the search's.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from profilers.base import DeviceSpec, Profiler, get_profiler
from profilers.measure import loadavg
from supernet.arch import ArchConfig
from supernet.stats import kendall_tau

from .convert import require_converter
from .table import LatencyTable, LUTError, check_precision

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
    """``samples`` distinct random archs (of the table's family) at the table's resolutions (or
    ``resolutions``)."""
    rng = np.random.default_rng(seed)
    res = list(table.resolutions if resolutions is None else resolutions)
    bad = [r for r in res if r not in table.resolutions]
    if bad:
        raise LUTError(f"resolution(s) {bad} not in the latency table (resolutions "
                       f"{list(table.resolutions)})")
    out, seen = [], set()
    for _ in range(samples * 50):
        a = table.family.sample_arch(table.space, rng, res)
        if a not in seen:
            seen.add(a)
            out.append(a)
        if len(out) == samples:
            break
    return out


def validate_lut(table: "LatencyTable | str | os.PathLike", device: "str | DeviceSpec", *,
                 samples: int = 30, seed: int = 0, runs: Optional[int] = None,
                 warmup: Optional[int] = None, threads: Optional[int] = None,
                 rounds: Optional[int] = None, estimator: Optional[str] = None,
                 resolutions: Optional[Sequence[int]] = None,
                 plot: "str | os.PathLike | None" = None,
                 progress: bool = True, profiler: Optional[Profiler] = None,
                 work_dir: "str | os.PathLike | None" = None, drift: bool = True,
                 quantile: int = 50, precision: Optional[str] = None) -> Dict[str, Any]:
    """Time ``samples`` random subnets end to end on ``device``, compare with the table.

    The subnets are exported and timed exactly as ``specialize`` exports and measures its
    winner, under the table's :class:`~profilers.protocol.MeasurementProtocol`; ``runs``,
    ``warmup`` and ``rounds`` may change its precision, ``threads`` and ``estimator`` must
    match the table's (another thread count or estimator measures something else: refused).
    The predictions validated are the ones the search uses: calibrated (if the table is)
    and, with ``drift``, rescaled to today's speed (this sets ``table.speed_scale``): a
    calibrated table's reference networks are timed interleaved with the validation subnets
    (:func:`luts.drift.measure_with_references`), an uncalibrated table's reference ops just
    before them. Archs the calibration was fitted on are never drawn. Returns a
    JSON-able dict: ``samples``, ``mape``, ``within_10pct``, ``kendall_tau`` (and a few more
    summary numbers), ``uncalibrated`` (the same for the plain op sums), ``rows`` (one per
    subnet), ``warnings`` and ``meta`` (with the protocol and the precision).

    Subnets are exported at the table's precision (int8 tables: int8 subnets, see
    :func:`~luts.calibrate.measure_subnets`); ``precision``, when given, must be the table's
    (:func:`~luts.table.check_precision`).
    """
    from profilers.protocol import cv_of, noise_warning, require_comparable

    from .calibrate import measure_subnets, table_protocol
    from .drift import check_drift, measure_with_references, reference_networks

    if samples < 2:
        raise LUTError(f"--samples must be at least 2, got {samples}")
    if not isinstance(table, LatencyTable):
        table = LatencyTable.load(table)
    check_precision(table, precision, what="this validation")
    missing = table.missing_ops()
    if missing:
        raise LUTError(f"latency table ({table._describe()}) is incomplete: {len(missing)} ops "
                       f"missing, e.g. {missing[0].to_string()}; finish it with `ofa-deploy "
                       f"profile` first")
    spec = DeviceSpec.parse(device)
    tm = table.meta
    base = table_protocol(table)
    protocol = base.with_(runs=runs, warmup=warmup, network_rounds=rounds, threads=threads,
                          estimator=estimator)
    require_comparable(base, protocol, "the table", "this validation")
    if profiler is None:
        from .convert import precision_profiler_kwargs

        profiler = get_profiler(spec, **protocol.profiler_kwargs(spec.backend),
                                **precision_profiler_kwargs(spec.backend, table.precision))
    fmt = profiler.artifact_format
    require_converter(fmt)
    if tm.get("artifact_format") not in (None, fmt):
        raise LUTError(f"the table was measured on {tm.get('artifact_format')} models, device "
                       f"{spec} runs {fmt}: validate it on the device it was built for")
    used = set((table.calibration or {}).get("archs") or [])
    pool = sample_archs(table, samples + len(used), seed, resolutions)
    archs = [a for a in pool if a.to_string(table.space) not in used][:samples]
    space = table.space
    t0 = time.monotonic()
    load0 = loadavg()
    warnings_: List[str] = []
    # a calibrated table's reference networks are timed in the same round-robin as the
    # validation subnets, so the speed they measure is the speed the subnets saw; only the
    # reference ops of an uncalibrated table are re-timed beforehand
    how = {"seed": seed, "work_dir": work_dir,
           "progress": f"validate {spec}" if progress else None}
    if drift and reference_networks(table):
        stats, drift_info = measure_with_references(table, archs, profiler, protocol, **how)
    else:
        drift_info = check_drift(table, profiler, protocol) if drift else None
        stats = measure_subnets(table, archs, profiler, protocol, **how)
    if drift_info and drift_info.get("warning"):
        warnings_.append(drift_info["warning"])
    predicted = table.predict(archs, quantile=quantile)
    uncal = table.predict(archs, calibrated=False)
    rows: List[Dict[str, Any]] = []
    for i, (arch, pred, raw, s) in enumerate(zip(archs, predicted, uncal, stats)):
        measured = s.p90_ms if quantile == 90 else s.median_ms
        rows.append({"index": i, "arch": arch.to_dict(), "arch_string": arch.to_string(space),
                     "r": arch.r, "predicted_ms": float(pred), "uncalibrated_ms": float(raw),
                     "measured_ms": measured, "measured_median_ms": s.median_ms,
                     "measured_p10_ms": s.p10_ms, "measured_p90_ms": s.p90_ms,
                     "measured_std_ms": s.std_ms, "runs": s.runs,
                     "cv": cv_of(s) if s.median_ms > 0 else None,
                     "rel_err": float(pred) / measured - 1.0 if measured > 0 else None})
    cvs = [r["cv"] for r in rows]
    noisy = noise_warning(cvs, what="subnets")
    if noisy:
        warnings_.append(noisy)
    result = summarize([r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows])
    result["uncalibrated"] = summarize([r["uncalibrated_ms"] for r in rows],
                                       [r["measured_ms"] for r in rows])
    cal = table.calibration
    result.update({
        "rows": rows,
        "warnings": warnings_,
        "median_cv": float(np.median(cvs)),
        "meta": {"device": str(spec), "table": str(table.path) if table.path else None,
                 "table_device": tm.get("device"), "space": space.name,
                 "precision": table.precision,
                 "resolutions": sorted({a.r for a in archs}), "seed": seed,
                 "rounds": protocol.network_rounds, "protocol": protocol.get_state(),
                 "quantile": quantile, "overhead_ms": table.overhead_ms,
                 "calibrated": cal is not None,
                 "calibration": None if cal is None else {
                     k: cal.get(k) for k in ("model", "heldout_mape", "heldout_within_10pct",
                                             "samples", "date", "p90_factor")},
                 "drift": drift_info, "speed_scale": table.speed_scale,
                 "profiler": profiler.describe(),
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
