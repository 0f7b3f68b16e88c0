"""Calibration from whole networks: what the op sum misses, fitted on measured subnets.

An op table predicts a network as the sum of its ops. What that sum misses is systematic:
per-inference work beyond the ops, fusions across op boundaries, cache behaviour of a whole
network, and the machine's speed at the time the ops were timed. :func:`calibrate_lut` times
``samples`` (default 20) random subnets end to end through the export path ``specialize``
ships (:func:`measure_subnets`: extract, export with the shipping exporter, time under the
table's measurement protocol) and fits a small correction of the op sum ``x``:

``scale``                        ``s * x``
``overhead+scale``               ``s * x + a``
``per-resolution-scale``         ``s_r * x``
``overhead+per-resolution-scale`` ``s_r * x + a``
``shrunk-per-resolution-scale``  ``s'_r * x``, ``s'_r = (n_r s_r + k s) / (n_r + k)``

each by least squares on the relative error; the last is the per-resolution scale shrunk
towards the single scale with ``k`` = :data:`SHRINK_PSEUDO_SAMPLES` pseudo-samples (partial
pooling: a resolution with few calibration subnets borrows strength from the others).
Every model is scored on held-out subnets (leave-one-out). The shrunk model is kept unless
another one halves its held-out mean absolute error (then the lowest wins, fewer parameters
winning ties within 0.2 points). Why not simply the lowest: with 20 subnets, 2-6 per
resolution, leave-one-out errors differ by noise, and picking the lowest picked
over-fitted per-resolution models; on three fresh tiny tables (2026-12-03, 30 held-out
subnets each, benchmarks/latency_contract) the lowest-LOO choice had 100/97/93% of the
subnets within 10%, the shrunk model 100/100/100%. The table stores it with every candidate's
held-out error, an upper quantile factor (``p90_factor``: the 90th percentile, over held-out
subnets, of measured p90 / calibrated prediction), the archs used (validation avoids them)
and five of the subnets as reference networks with their medians (:mod:`luts.drift`
re-times them before the table is used and rescales it to the machine's speed of the day).
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from profilers.base import DeviceSpec, LatencyStats, Profiler, get_profiler
from profilers.protocol import MeasurementProtocol, cv_of, measure_pooled, noise_warning
from supernet.arch import ArchConfig

from .table import LatencyTable, LUTError

__all__ = ["calibrate_lut", "fit_calibration", "measure_subnets", "table_protocol",
           "refit_calibration", "calibrate_or_remeasure", "MODELS", "CALIBRATION_SEED_OFFSET",
           "REMEASURE_HELDOUT_MAPE"]

MODELS = ("scale", "overhead+scale", "per-resolution-scale", "overhead+per-resolution-scale",
          "shrunk-per-resolution-scale")
# The model kept unless another halves its held-out error (see the module docstring).
DEFAULT_MODEL = "shrunk-per-resolution-scale"
# Pseudo-samples of the single scale added to each resolution's own (k of the shrunk model).
SHRINK_PSEUDO_SAMPLES = 3
# Calibration archs are drawn with seed + this offset: never the archs a validation with the
# same seed draws.
CALIBRATION_SEED_OFFSET = 7919
# The calibration subnets kept as reference networks, by latency quantile: five (not one) so
# that one of them caught in a slow spell moves the median ratio of a drift check little.
REFERENCE_QUANTILES = (0.1, 0.3, 0.5, 0.7, 0.9)
# Held-out error of the calibration above which the op table is timed again (see
# calibrate_or_remeasure). Fresh tiny tables on the shared VM (benchmarks/latency_contract,
# 2026-12-03): the fp32 build that later validated at 93% had 4.1%, the five others 0.9-3.3%.
REMEASURE_HELDOUT_MAPE = 0.03


def table_protocol(table: LatencyTable) -> MeasurementProtocol:
    """The protocol ``table`` was measured with (tables written before protocols existed: the
    default protocol with the table's thread count)."""
    p = MeasurementProtocol.of(table.meta)
    if p is not None:
        return p
    threads = table.meta.get("threads")
    return MeasurementProtocol().with_(threads=int(threads) if threads else None)


def random_supernet(space, seed: int):
    """A randomly initialised supernet of ``space`` (weights do not change latency), seeded
    through a forked RNG so the caller's global torch RNG is left as it was."""
    import torch

    from supernet.model import Supernet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Supernet(space)
    return net.eval()


def measure_subnets(table: LatencyTable, archs: Sequence[ArchConfig], profiler: Profiler,
                    protocol: MeasurementProtocol, *, seed: int = 0,
                    work_dir: "str | os.PathLike | None" = None,
                    on_step: Optional[Callable[[str, int, int], None]] = None,
                    progress: "str | None" = None,
                    lead: Sequence[Tuple[Any, Tuple[int, ...]]] = ()) -> List[LatencyStats]:
    """Extract each arch (an arch of the table's family, through the family's extraction) from
    a random supernet, export it exactly as ``specialize`` ships it
    (no BN folding by hand: the runtime folds it, as it does for the shipped file) and time
    all of them under ``protocol`` (its ``network_rounds`` rounds), interleaved, after the
    ``(artifact, input_shape)`` items of ``lead`` (e.g. a shipped file timed among the
    table's reference networks; their stats come first in the result); an int8 table's subnets are exported int8
    (:func:`~luts.convert.export_artifact` with its precision). ``progress`` (a label such as
    ``"validate cpu"``) shows a progress bar on stderr, one step per conversion and per timing
    round."""
    if progress is not None and on_step is None:
        import sys

        from supernet.progress import progress_bar

        bar = progress_bar(len(archs) * (protocol.network_rounds + 1), unit="step",
                           file=sys.stderr,
                           desc=f"{progress}: {len(archs)} subnets x (convert + "
                                f"{protocol.network_rounds} rounds)")

        def step(what, k, n):
            bar.set_postfix_str(what, refresh=False)
            bar.update(1)

        try:
            return measure_subnets(table, archs, profiler, protocol, seed=seed,
                                   work_dir=work_dir, on_step=step, lead=lead)
        finally:
            bar.close()
    from .convert import export_artifact

    fmt = profiler.artifact_format
    precision = table.precision
    if precision != "fp32" and fmt == "torch" and not (
            precision == "fp16" and getattr(profiler, "half", False)):
        raise LUTError(f"the table is {precision}; {profiler.spec} runs torch models, which "
                       f"have no {precision} form here")
    if precision == "fp16" and fmt != "torch":
        from .convert import check_profiler_precision

        check_profiler_precision(profiler, precision)
    # the family's extraction from one random supernet (weights do not change latency)
    subnets = table.family.random_subnets(table.space, archs, seed)
    tmp = Path(tempfile.mkdtemp(prefix="ofa-lut-subnets-", dir=work_dir))
    try:
        items: List[Tuple[Any, Tuple[int, ...]]] = list(lead)
        for i, (arch, sub) in enumerate(zip(archs, subnets)):
            shape = (1, 3, arch.r, arch.r)
            # int8 tables time int8 subnets, quantized by the conversion int8 artifacts ship
            # with (supernet.quantize.export_int8) but calibrated on seeded random images:
            # calibration moves the scales, not the kernels, so the latency is the same.
            items.append((sub if fmt == "torch" else
                          export_artifact(sub, shape, tmp / f"net{i}.{fmt}", fmt,
                                          precision=precision, seed=seed + i), shape))
            if on_step is not None:
                on_step("converting", i + 1, len(archs))
        return measure_pooled(profiler, items, protocol.for_networks(),
                              on_step=None if on_step is None else
                              (lambda k, n: on_step("timing", k, n)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _design(model: str, x: np.ndarray, r: np.ndarray, res: Sequence[int]) -> np.ndarray:
    cols = []
    if model in ("scale", "overhead+scale"):
        cols.append(x)
    else:
        cols.extend(np.where(r == rr, x, 0.0) for rr in res)
    if model.startswith("overhead+"):
        cols.append(np.ones_like(x))
    return np.stack(cols, axis=1)


def _fit(model: str, x, r, m, res) -> Tuple[Dict[int, float], float]:
    """Least squares on the relative error: rows divided by the measured latency."""
    if model == "shrunk-per-resolution-scale":
        g = _fit("scale", x, r, m, res)[0][int(res[0])]
        q = x / m  # s * q ~ 1 per subnet
        scale = {}
        for rr in res:
            sel = r == rr
            n_r = int(sel.sum())
            own = float(np.sum(q[sel]) / np.sum(q[sel] ** 2)) if n_r else g
            scale[int(rr)] = (n_r * own + SHRINK_PSEUDO_SAMPLES * g) / (n_r + SHRINK_PSEUDO_SAMPLES)
        return scale, 0.0
    A = _design(model, x, r, res) / m[:, None]
    coef, *_ = np.linalg.lstsq(A, np.ones_like(m), rcond=None)
    if model in ("scale", "overhead+scale"):
        scale = {int(rr): float(coef[0]) for rr in res}
        k = 1
    else:
        scale = {int(rr): float(c) for rr, c in zip(res, coef[:len(res)])}
        # a resolution without samples keeps the mean scale rather than a zero
        have = {int(rr) for rr in np.unique(r)}
        mean = float(np.mean([scale[rr] for rr in have]))
        scale = {rr: (v if rr in have else mean) for rr, v in scale.items()}
        k = len(res)
    off = float(coef[k]) if model.startswith("overhead+") else 0.0
    return scale, off


def _apply(scale: Dict[int, float], off: float, x, r) -> np.ndarray:
    return np.array([scale[int(rr)] for rr in r]) * x + off


def fit_calibration(op_sum: Sequence[float], measured: Sequence[float],
                    resolutions: Sequence[int], table_resolutions: Sequence[int],
                    measured_p90: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """Fit every model of :data:`MODELS` to ``measured`` = f(``op_sum``), score each by
    leave-one-out, keep the best. Returns the calibration record a table stores."""
    x, m = np.asarray(op_sum, float), np.asarray(measured, float)
    r = np.asarray(resolutions, int)
    p90 = np.asarray(measured_p90 if measured_p90 is not None else measured, float)
    n = len(m)
    if n < 4:
        raise LUTError(f"calibration needs at least 4 measured subnets, got {n}")
    if np.any(m <= 0) or np.any(x <= 0):
        raise LUTError("calibration needs positive predicted and measured latencies")
    res = sorted({int(v) for v in table_resolutions})
    cands: Dict[str, Dict[str, Any]] = {}
    loo_pred: Dict[str, np.ndarray] = {}
    for model in MODELS:
        n_params = (1 if model in ("scale", "overhead+scale") else len(set(r.tolist()))) + \
            (1 if model.startswith("overhead+") else 0)
        if n_params >= n - 1:
            continue  # too few subnets to hold any out
        pred = np.empty(n)
        for i in range(n):
            keep = np.arange(n) != i
            sc, off = _fit(model, x[keep], r[keep], m[keep], res)
            if model in ("per-resolution-scale", "overhead+per-resolution-scale") and \
                    not np.any(r[keep] == r[i]):
                sc = {rr: float(np.mean(list(sc.values()))) for rr in sc}
            pred[i] = _apply(sc, off, x[i:i + 1], r[i:i + 1])[0]
        rel = pred / m - 1.0
        cands[model] = {"heldout_mape": float(np.mean(np.abs(rel))),
                        "heldout_within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
                        "heldout_max_abs_err": float(np.max(np.abs(rel))),
                        "params": n_params}
        loo_pred[model] = pred
    raw_rel = x / m - 1.0
    best = min(cands, key=lambda k: (round(cands[k]["heldout_mape"], 3), cands[k]["params"]))
    if DEFAULT_MODEL in cands and cands[best]["heldout_mape"] > \
            0.5 * cands[DEFAULT_MODEL]["heldout_mape"]:
        best = DEFAULT_MODEL
    scale, off = _fit(best, x, r, m, res)
    p90_factor = float(max(1.0, np.percentile(p90 / loo_pred[best], 90)))
    return {"model": best, "scale": {str(k): v for k, v in scale.items()},
            "default_scale": float(np.mean(list(scale.values()))), "overhead_ms": off,
            "p90_factor": p90_factor, "samples": n, "candidates": cands,
            "heldout_mape": cands[best]["heldout_mape"],
            "heldout_within_10pct": cands[best]["heldout_within_10pct"],
            "uncalibrated_mape": float(np.mean(np.abs(raw_rel))),
            "uncalibrated_within_10pct": float(np.mean(np.abs(raw_rel) <= 0.10))}


def _reference_networks(archs: Sequence[ArchConfig], stats: Sequence[LatencyStats],
                        space) -> List[dict]:
    order = np.argsort([s.median_ms for s in stats], kind="stable")
    picks = sorted({int(order[int(round(q * (len(order) - 1)))]) for q in REFERENCE_QUANTILES})
    return [{"arch": archs[i].to_string(space), "median_ms": stats[i].median_ms}
            for i in picks]


def calibrate_lut(table: "LatencyTable | str | os.PathLike",
                  device: "str | DeviceSpec | None" = None, *, samples: int = 20,
                  seed: int = 0, protocol: Optional[MeasurementProtocol] = None,
                  estimator: Optional[str] = None, profiler: Optional[Profiler] = None,
                  save: bool = True,
                  progress: bool = False, work_dir: "str | os.PathLike | None" = None,
                  echo: Callable[[str], None] = lambda s: None) -> LatencyTable:
    """Time ``samples`` random whole subnets on ``device`` (default: the table's) under the
    table's protocol (or ``protocol``; ``estimator`` overrides its estimator; either must
    measure what the table measured: :func:`~profilers.protocol.require_comparable`), fit
    the correction (:func:`fit_calibration`), store it in the table (and save the table to
    its file unless ``save`` is false). Returns the table."""
    from profilers.protocol import require_comparable

    from .validate import sample_archs

    if not isinstance(table, LatencyTable):
        table = LatencyTable.load(table)
    if table.missing_ops():
        raise LUTError(f"latency table ({table._describe()}) is incomplete; finish it with "
                       f"`ofa-deploy profile` before calibrating")
    spec = DeviceSpec.parse(device or table.meta.get("device") or "cpu")
    base = table_protocol(table)
    protocol = (protocol or base).with_(estimator=estimator)
    require_comparable(base, protocol, "the table", "this calibration")
    if profiler is None:
        from .convert import precision_profiler_kwargs

        profiler = get_profiler(spec, **protocol.profiler_kwargs(spec.backend),
                                **precision_profiler_kwargs(spec.backend, table.precision))
    t0 = time.monotonic()
    archs = sample_archs(table, samples, seed + CALIBRATION_SEED_OFFSET)
    # the plain op sum, with today's speed scale 1: the fit absorbs the speed of now; a
    # previous calibration is replaced (its reference timings too)
    table.speed_scale = 1.0
    table.calibration = None
    op_sum = table.predict(archs, calibrated=False)
    stats = measure_subnets(table, archs, profiler, protocol, seed=seed, work_dir=work_dir,
                            progress=f"calibrate {spec}" if progress else None)
    # the reference ops, timed now: later drift checks compare with the speed the
    # calibration saw
    from .drift import check_drift

    refs = check_drift(table, profiler, protocol, apply=False, networks=False)
    cal = fit_calibration(op_sum, [s.median_ms for s in stats], [a.r for a in archs],
                          table.resolutions, [s.p90_ms for s in stats])
    cvs = [cv_of(s) for s in stats]
    cal.update({
        "device": str(spec), "precision": table.precision, "protocol": protocol.get_state(),
        "seed": seed,
        "archs": [a.to_string(table.space) for a in archs],
        "rows": [{"arch": a.to_string(table.space), "r": a.r, "op_sum_ms": float(p),
                  "measured_ms": s.median_ms, "measured_p90_ms": s.p90_ms,
                  "cv": float(c)} for a, p, s, c in zip(archs, op_sum, stats, cvs)],
        "median_cv": float(np.median(cvs)), "noise_warning": noise_warning(cvs, what="subnets"),
        # five of the calibration subnets (REFERENCE_QUANTILES of latency) with the medians
        # measured now: luts.drift re-times them before the table is used
        "reference_networks": _reference_networks(archs, stats, table.space),
        "reference_ops": ([{**r, "median_ms": ref["now_ms"]} for r, ref in
                           zip(table.meta.get("reference_ops", []), refs["refs"])]
                          if refs and refs.get("refs") else None),
        "seconds": round(time.monotonic() - t0, 2),
        "date": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    })
    table.calibration = cal
    table.speed_scale = 1.0
    table._grids.clear()
    if cal["noise_warning"]:
        echo(f"warning: {cal['noise_warning']}")
    if save and table.path is not None:
        table.save(table.path)
    return table


def refit_calibration(table: LatencyTable) -> Dict[str, Any]:
    """Fit the table's calibration again to its *current* op sums, from the whole-network
    timings it stored (``calibration["rows"]``): after the ops were timed again the networks
    need not be. Keeps everything else of the record (archs, reference networks, protocol);
    returns the new record, also set on the table."""
    cal = table.calibration
    if not cal or not cal.get("rows"):
        raise LUTError("the table has no calibration rows to refit; run `ofa-deploy lut "
                       "calibrate` first")
    rows = cal["rows"]
    archs = [table.family.parse_arch(r["arch"], table.space) for r in rows]
    table.speed_scale = 1.0
    table.calibration = None
    table._grids.clear()
    op_sum = table.predict(archs, calibrated=False)
    fit = fit_calibration(op_sum, [r["measured_ms"] for r in rows], [a.r for a in archs],
                          table.resolutions, [r["measured_p90_ms"] for r in rows])
    new = {**cal, **fit,
           "rows": [{**r, "op_sum_ms": float(p)} for r, p in zip(rows, op_sum)]}
    table.calibration = new
    table._grids.clear()
    return new


def calibrate_or_remeasure(table: LatencyTable, device: "str | DeviceSpec | None",
                           rebuild: Callable[[int], LatencyTable], *, samples: int = 20,
                           seed: int = 0, progress: bool = False,
                           max_heldout_mape: Optional[float] = REMEASURE_HELDOUT_MAPE,
                           echo: Callable[[str], None] = lambda s: None,
                           **calibrate_kw: Any) -> LatencyTable:
    """:func:`calibrate_lut`, then, when the op sums disagree with the whole networks more than
    a table should (held-out error over ``max_heldout_mape``), time every op again: ``rebuild
    (rounds)`` extends the build to that many rounds (``build_lut`` on the same file, which
    keeps the rounds it has), and the calibration is refitted to the new op sums on the same
    network timings (:func:`refit_calibration`). Once: the record's ``remeasured`` says why,
    and the held-out error before and after (``max_heldout_mape=None``: calibrate only).
    ``calibrate_kw`` go to :func:`calibrate_lut`
    (``protocol``, ``profiler``, ``save``).

    Why: a table some of whose ops were slow in every one of their rounds (a slow spell of
    the machine that hit some ops and not others; on 2026-12-03 mostly early, large-activation
    ones) sums wrongly per subnet, not by one factor, so no calibration model fits it; rounds timed after the calibration, at another moment of the
    machine, do (the estimator keeps each op's quietest round). On the shared VM such a build
    (2026-12-03, build #1 of benchmarks/latency_contract) had 126 of 450 entries more than 15%
    above the median of three builds, a calibration held-out error of 4.1% against 0.9-1.9%
    for the two others, and validated at 93% within 10% against 100%."""
    table = calibrate_lut(table, device, samples=samples, seed=seed, progress=progress,
                          echo=echo, **calibrate_kw)
    cal = table.calibration
    if cal is None or max_heldout_mape is None or cal["heldout_mape"] <= max_heldout_mape:
        return table  # None: calibrate only
    before = cal["heldout_mape"]
    rounds = (calibrate_kw.get("protocol") or table_protocol(table)).rounds
    echo(f"the op table disagrees with {cal['samples']} whole subnets (held-out error "
         f"{before:.1%}, over {max_heldout_mape:.0%}): timing every op for {rounds} more "
         f"rounds")
    path = table.path
    first = table.meta
    table = rebuild(2 * rounds)
    # what this profile run did in all: both passes' timings; the models were converted (or
    # found in the cache) by the first pass, which the second only reads back
    table.meta["op_timings_this_run"] = (first.get("op_timings_this_run") or 0) + \
        (table.meta.get("op_timings_this_run") or 0)
    for k in ("models_converted", "models_from_cache"):
        if k in first:
            table.meta[k] = first[k]
    table.calibration = cal  # a resumed build keeps the table's meta, not always its calibration
    new = refit_calibration(table)
    new["remeasured"] = {"reason": f"held-out error {before:.4f} > {max_heldout_mape}",
                         "heldout_mape_before": before, "heldout_mape_after":
                             new["heldout_mape"], "rounds": 2 * rounds}
    echo(f"held-out error after re-timing: {new['heldout_mape']:.1%}")
    if path is not None and calibrate_kw.get("save", True):
        table.save(path)
        table.path = path
    return table
