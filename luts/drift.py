"""Today's speed of the machine: re-time a table's references before the table is used.

The device of today is not the device of the build: load, thermal state and the CPU governor
move a shared machine's speed by tens of percent within an hour. A calibrated table records
three of its calibration subnets with their pooled medians (``calibration["reference_networks"]``),
an uncalibrated one a few costly op models (``meta["reference_ops"]``). :func:`check_drift`
times the same networks (exported as ``specialize`` ships them) or op models under the same
protocol, takes the median ratio today / then, and sets the table's
:attr:`~luts.table.LatencyTable.speed_scale` so predictions follow the machine. Whole networks
are preferred: load slows a 10 ms network (preempted mid-run) far more than a 0.1 ms op, so
only networks measure the slowdown the predictions feel. The result says by how much, and
warns in one line when the change is large enough to matter.
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

__all__ = ["check_drift", "reference_artifacts", "DRIFT_WARN"]

# A speed change larger than this is reported as a warning line (smaller ones are noise).
DRIFT_WARN = 0.05


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


def _check_networks(table: LatencyTable, profiler: Profiler, protocol: MeasurementProtocol,
                    nets: List[dict]) -> Dict[str, Any]:
    from .calibrate import measure_subnets

    archs = [table.family.parse_arch(n["arch"], table.space) for n in nets]
    stats = measure_subnets(table, archs, profiler, protocol,
                            seed=int((table.calibration or {}).get("seed", 0)))
    return {"kind": "reference networks", "against": "calibrated",
            "refs": [{"what": n["arch"], "then_ms": float(n["median_ms"]),
                      "now_ms": s.median_ms, "cv": cv_of(s) if s.median_ms else None}
                     for n, s in zip(nets, stats)]}


def check_drift(table: LatencyTable, profiler: Profiler, protocol: MeasurementProtocol, *,
                cache_dir: "str | os.PathLike | None" = None, apply: bool = True,
                networks: bool = True) -> Optional[Dict[str, Any]]:
    """Re-time ``table``'s references with ``profiler`` under ``protocol``; with ``apply``
    set ``table.speed_scale`` to the median ratio now / then. The references are the
    calibration's reference networks when the table has them (whole networks feel load the
    way the predicted networks do: a 10 ms run is preempted far more often than a 0.1 ms op),
    else the build's reference ops. Returns ``{"scale", "kind", "refs", "warning"}`` (None
    when the table records no references, e.g. imported tables)."""
    nets = (table.calibration or {}).get("reference_networks") if networks else None
    refs = _references(table)
    if not nets and not refs:
        return None
    if nets:
        out = _check_networks(table, profiler, protocol, nets)
        return _finish(table, out, apply)
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
    when = out["against"]
    warning = None
    if abs(scale - 1.0) > DRIFT_WARN:
        from profilers.measure import loadavg

        load = loadavg()
        warning = (f"the machine is {abs(scale - 1):.0%} {'slower' if scale > 1 else 'faster'} "
                   f"than when the table was {when} ({out['kind']} re-timed; load average "
                   f"{load[0] if load else '?'}; load, thermal state or CPU governor): "
                   f"predictions rescaled by x{scale:.3f}")
    if apply:
        table.speed_scale = scale
    return {"scale": scale, "warning": warning, **out}
