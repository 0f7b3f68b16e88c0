"""Today's speed of the machine: re-time a table's references before the table is used.

The device of today is not the device of the build: load, thermal state and the CPU governor
move a shared machine's speed by tens of percent within an hour. A calibrated table records
five of its calibration subnets with their pooled medians (``calibration["reference_networks"]``;
tables calibrated before: three), an uncalibrated one a few costly op models
(``meta["reference_ops"]``). :func:`check_drift` times the same networks (exported as
``specialize`` ships them) or op models under the same protocol, takes the median ratio
today / then, and sets the table's :attr:`~luts.table.LatencyTable.speed_scale` so
predictions follow the machine. Whole networks are preferred: load slows a 10 ms network
(preempted mid-run) far more than a 0.1 ms op, so only networks measure the slowdown the
predictions feel. The result says by how much, and warns in one line when the change is
large enough to matter or when the references disagree about it.

Where the references can be timed together with what the predictions are compared with
(``lut validate``, ``specialize``'s winner), they are: :func:`measure_with_references`
times them in one round-robin with the caller's subnets or files. A separate quick check beforehand measures the speed
of the minute before, and on a shared VM that minute can be a slow spell the validation
never sees (measured: a x1.54 rescale, then every subnet over-predicted by 51%).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from profilers.base import Profiler
from profilers.protocol import MeasurementProtocol, cv_of, measure_pooled

from .store import cache_dir as default_cache_dir
from .table import LatencyTable, LUTError

__all__ = ["check_drift", "drift_from_networks", "measure_with_references", "reference_networks",
           "reference_artifacts",
           "DRIFT_WARN", "DRIFT_DISAGREE"]

# A speed change larger than this is reported as a warning line (smaller ones are noise).
DRIFT_WARN = 0.05
# References whose ratios now / then spread by more than this (max - min, relative to the
# median) disagree about the machine's speed: the rescale is reported as uncertain.
DRIFT_DISAGREE = 0.15


def reference_artifacts(table: LatencyTable, fmt: str,
                        cache_dir: "str | os.PathLike | None" = None) -> List[Any]:
    """The reference op models of ``table`` as ``fmt`` artifacts (from the op-model cache the
    table was built with, else the default one; converted now if the cache lost them)."""
    from .convert import OpModelCache, _build_model, _convert, _Job

    refs = _references(table)
    if cache_dir is None:
        root = table.meta.get("op_cache_root")
        cache_dir = root if root and Path(root).is_dir() else default_cache_dir() / "ops"
    # the table's precision: an int8 table's references are int8 op models, re-timed as such
    precision = table.precision
    cache = None if fmt == "torch" else OpModelCache(Path(cache_dir), fmt, precision)
    out = []
    for r in refs:
        job = _Job(str(r["what"]), tuple(int(x) for x in r["shape"]), str(r["space"]),
                   int(r["seed"]), bool(r["context"]), precision)
        if cache is None:
            out.append(_build_model(job))
        else:
            path = cache.path(job)
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                _convert(job, fmt, str(path))
            out.append(path)
    return out


def _references(table: LatencyTable) -> List[dict]:
    cal = table.calibration or {}
    refs = cal.get("reference_ops") or table.meta.get("reference_ops") or []
    return [r for r in refs if isinstance(r, dict) and r.get("median_ms")]


def reference_networks(table: LatencyTable) -> List[dict]:
    """The calibration's reference networks of ``table`` (``{"arch", "median_ms"}`` each;
    empty for uncalibrated or imported tables)."""
    nets = (table.calibration or {}).get("reference_networks") or []
    return [n for n in nets if isinstance(n, dict) and n.get("arch") and n.get("median_ms")]


def drift_from_networks(table: LatencyTable, nets: List[dict], stats, *, apply: bool = True,
                        interleaved: bool = False) -> Dict[str, Any]:
    """The drift result for reference networks ``nets`` (:func:`reference_networks`) whose
    stats today are ``stats`` (measured under the table's protocol, e.g. interleaved with a
    validation's subnets: then say ``interleaved``); with ``apply`` sets the table's
    ``speed_scale``. Returns what :func:`check_drift` returns."""
    out = {"kind": "reference networks", "against": "calibrated", "interleaved": interleaved,
           "refs": [{"what": n["arch"], "then_ms": float(n["median_ms"]),
                     "now_ms": s.median_ms, "cv": cv_of(s) if s.median_ms else None}
                    for n, s in zip(nets, stats)]}
    return _finish(table, out, apply)


def measure_with_references(table: LatencyTable, archs, profiler: Profiler,
                            protocol: MeasurementProtocol, *, lead=(), apply: bool = True,
                            **kw) -> "tuple[list, Optional[Dict[str, Any]]]":
    """Time the ``lead`` items and the subnets ``archs`` (:func:`luts.calibrate.measure_subnets`,
    ``kw`` passed on) in one round-robin with ``table``'s reference networks. Returns their
    stats (``lead`` first) and the drift result of the references (:func:`drift_from_networks`,
    ``apply`` as there; None when the table has no reference networks: then only the given
    items are timed)."""
    from .calibrate import measure_subnets

    nets = reference_networks(table)
    ref_archs = [table.family.parse_arch(n["arch"], table.space) for n in nets]
    stats = measure_subnets(table, list(archs) + ref_archs, profiler, protocol, lead=lead, **kw)
    n = len(stats) - len(ref_archs)
    drift = (drift_from_networks(table, nets, stats[n:], apply=apply,
                                 interleaved=bool(n)) if nets else None)
    return stats[:n], drift


def check_drift(table: LatencyTable, profiler: Profiler, protocol: MeasurementProtocol, *,
                cache_dir: "str | os.PathLike | None" = None, apply: bool = True,
                networks: bool = True) -> Optional[Dict[str, Any]]:
    """Re-time ``table``'s references with ``profiler`` under ``protocol``; with ``apply``
    set ``table.speed_scale`` to the median ratio now / then. The references are the
    calibration's reference networks when the table has them (whole networks feel load the
    way the predicted networks do: a 10 ms run is preempted far more often than a 0.1 ms op),
    else the build's reference ops. Returns ``{"scale", "kind", "refs", "warning"}`` (None
    when the table records no references, e.g. imported tables)."""
    nets = reference_networks(table) if networks else None
    refs = _references(table)
    if not nets and not refs:
        return None
    if nets:
        return measure_with_references(table, [], profiler, protocol, apply=apply,
                                       seed=int((table.calibration or {}).get("seed", 0)))[1]
    try:
        arts = reference_artifacts(table, profiler.artifact_format, cache_dir)
    except Exception as exc:  # conversion trouble must not hide the real work: report it
        return {"scale": 1.0, "refs": [], "warning": f"drift check skipped: cannot rebuild the "
                                                     f"reference ops ({exc})"}
    stats = measure_pooled(profiler, [(a, tuple(r["shape"])) for a, r in zip(arts, refs)],
                           protocol)
    when = "calibrated" if (table.calibration or {}).get("reference_ops") else "built"
    out = {"kind": "reference ops", "against": when,
           "refs": [{"what": r["what"], "then_ms": float(r["median_ms"]),
                     "now_ms": s.median_ms, "cv": cv_of(s) if s.median_ms else None}
                    for r, s in zip(refs, stats)]}
    return _finish(table, out, apply)


def _finish(table: LatencyTable, out: Dict[str, Any], apply: bool) -> Dict[str, Any]:
    ratios = [r["now_ms"] / r["then_ms"] for r in out["refs"]]
    scale = float(np.median(ratios))
    if not np.isfinite(scale) or scale <= 0:
        raise LUTError(f"drift check measured nonsense (ratios {ratios})")
    spread = float((max(ratios) - min(ratios)) / scale) if len(ratios) > 1 else 0.0
    when = out["against"]
    warnings_: List[str] = []
    load = None
    if abs(scale - 1.0) > DRIFT_WARN or spread > DRIFT_DISAGREE:
        from profilers.measure import loadavg

        load = loadavg()
    if abs(scale - 1.0) > DRIFT_WARN:
        warnings_.append(
            f"the machine is {abs(scale - 1):.0%} {'slower' if scale > 1 else 'faster'} than "
            f"when the table was {when} ({out['kind']} re-timed; load average "
            f"{load[0] if load else '?'}; load, thermal state or CPU governor): predictions "
            f"rescaled by x{scale:.3f}")
    if spread > DRIFT_DISAGREE:
        # one reference in a slow spell, the others not: the machine's speed moved while
        # they ran, so the median ratio is an uncertain figure; say so rather than hide it
        warnings_.append(
            f"the {out['kind']} disagree about today's speed (ratios now / then "
            f"x{min(ratios):.2f} .. x{max(ratios):.2f}, load average "
            f"{load[0] if load else '?'}): the machine's speed moved while they ran, so the "
            f"rescale x{scale:.3f} is uncertain")
    if apply:
        table.speed_scale = scale
    return {"scale": scale, "spread": spread,
            "warning": "; ".join(warnings_) if warnings_ else None, **out}
