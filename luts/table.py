"""Latency lookup tables: per-op latency of one device, and the network latencies they predict.

A table maps every op shape a space can run (:class:`~supernet.ops.OpKey`) to measured
:class:`~profilers.base.LatencyStats`. A subnet's predicted latency is the sum of the median
latencies of its ops plus ``overhead_ms`` (what a whole network costs beyond its ops: input
copy, interpreter dispatch), evaluated for whole populations at once through the space
family's grid (:mod:`supernet.op_families`: an :class:`~supernet.ops.OpGrid` for MobileNet
spaces, a :class:`~supernet.resnet_ops.ResNetOpGrid` for ResNet ones, whose bottleneck ops also
depend on the previous stage's width).

Most tables measure each op shape once (``entries``). Tables imported from the reference
measured every op inside the network of each input resolution, so a shape that occurs at two
resolutions (the head, and the last stage at 176/192 px and 208/224 px) has two measurements;
those live in ``resolution_entries[r]`` and override ``entries`` for networks at resolution
``r``. That keeps predictions equal to the reference's own per-resolution sums.

File format (JSON, one object)::

    {"schema": "ofa-deploy-lut", "schema_version": 1,
     "meta": {"space": ..., "resolutions": [...], "device": ..., "backend": ...,
              "precision": "fp32" | "int8" | "fp16", ...},  # absent: fp32
     "overhead_ms": 0.0,
     "entries": {"<OpKey string>": {"median_ms", "p10_ms", "p90_ms", "std_ms", "runs"}},
     "resolution_entries": {"<r>": {"<OpKey string>": {...}}},     # optional
     "interpolated": {"<OpKey string>": {"from", "scale", ...}},    # optional, a report
     "calibration": {"model", "overhead_ms", "scale": {"<r>": s}, "p90_factor", ...}}

Calibration (:mod:`luts.calibrate`) corrects the op sum with what whole networks measured:
``calibrated = scale[r] * op_sum + overhead_ms``, and an upper quantile ``p90 = calibrated *
p90_factor``. The correction is linear, so the calibrated grid stays a per-op grid and the
search prices populations exactly as fast. :attr:`LatencyTable.speed_scale` (set by
:func:`luts.drift.check_drift` before a table is used, never saved) rescales everything to
the machine's speed of the day. :meth:`predict` and :meth:`grid` apply both by default.

The module is a little over 500 lines: the format (entries, meta, protocol, calibration), its
validation and the vectorised prediction over a grid are one record's code; where tables
live is in :mod:`luts.store`, how they are built in :mod:`luts.builder`.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from profilers.base import LatencyStats
from supernet.arch import ArchConfig
from supernet.errors import OfaDeployError
from supernet.fileio import atomic_write_text
from supernet.op_families import resolve_space
from supernet.ops import OpGrid, OpKey
from supernet.space import Space, SpaceError

__all__ = ["SCHEMA", "SCHEMA_VERSION", "LUTError", "LatencyTable", "PRECISIONS",
           "check_precision"]

# Where tables live (cache directory, built-in tables, name lookup) is luts.store; these names
# were defined here first and stay importable from luts.table.
_STORE_NAMES = ("BUILTIN_TABLES", "builtin_table_path", "cache_dir", "default_lut_path",
                "load_table")


def __getattr__(name: str):
    # Resolved on first use: luts.store imports this module, so it cannot be imported here.
    if name in _STORE_NAMES:
        from . import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

log = logging.getLogger("ofa_deploy.luts")

SCHEMA = "ofa-deploy-lut"
SCHEMA_VERSION = 1


class LUTError(OfaDeployError):
    """A latency table that is missing, unreadable, inconsistent with its space, or lacks an op."""


# Numeric precisions a table can describe (the same names as supernet.quantize.PRECISIONS; not
# imported from there so that reading a table never imports the quantizer).
PRECISIONS = ("fp32", "int8", "fp16")


def _parse_precision(value, source: str = "precision") -> str:
    p = str(value).strip().lower()
    if p not in PRECISIONS:
        raise LUTError(f"{source}: unknown precision {value!r}; choose from "
                       f"{', '.join(PRECISIONS)}")
    return p


def check_precision(table: "LatencyTable", precision: "str | None", *,
                    what: str = "the target") -> "LatencyTable":
    """Return ``table`` if it was measured at ``precision`` (None: any); else raise a one-line
    LUTError. An int8 network runs different kernels from an fp32 one (integer convolutions,
    quantize/dequantize at float islands), so a table of one precision never prices the other.
    ``what`` names who wants ``precision`` in the message (e.g. ``"--precision int8"``)."""
    if precision is None:
        return table
    want = _parse_precision(precision)
    have = table.precision
    if have != want:
        name = str(table.path) if table.path is not None else table._describe()
        raise LUTError(f"latency table {name} is {have}, {what} wants {want}: a table measured "
                       f"at one precision never prices the other; profile an {want} table "
                       f"(`ofa-deploy profile --precision {want}`)")
    return table


def _stats_sane(s: LatencyStats) -> str | None:
    vals = (s.median_ms, s.p10_ms, s.p90_ms, s.std_ms)
    if not all(math.isfinite(v) for v in vals):
        return "non-finite value"
    if min(vals) < 0:
        return "negative value"
    # a little slack: percentiles written with rounding may cross the median by an ulp
    tol = 1e-9 * max(1.0, s.median_ms)
    if not (s.p10_ms <= s.median_ms + tol and s.median_ms <= s.p90_ms + tol):
        return "p10 <= median <= p90 does not hold"
    if s.runs < 1:
        return "runs < 1"
    return None


def _work(op: OpKey) -> float:
    """Size proxy used to scale an interpolated latency: MACs, or elements read for pooling."""
    return float(op.macs if op.macs > 0 else op.h * op.h * op.cin) or 1.0


class LatencyTable:
    """Per-op latency of one device for one space at a set of input resolutions.

    ``space`` is a space of any family (:mod:`supernet.op_families`: MobileNetV3 and
    ProxylessNAS :class:`~supernet.space.Space`, OFA ResNet
    :class:`~supernet.resnet_space.ResNetSpace`); which ops exist, which ops an arch runs and
    the grid that prices populations are the family's, and the archs :meth:`predict` takes
    are the family's records (:class:`ArchConfig`, :class:`~supernet.resnet_space.ResNetArch`).
    """

    def __init__(self, space: "Space | str", resolutions: Sequence[int], *,
                 meta: Mapping | None = None, entries: Mapping[OpKey, LatencyStats] | None = None,
                 overhead_ms: float = 0.0,
                 resolution_entries: Mapping[int, Mapping[OpKey, LatencyStats]] | None = None):
        self.family, self.space = resolve_space(space)
        res = sorted({int(r) for r in resolutions})
        if not res:
            raise LUTError("a latency table needs at least one resolution")
        self.resolutions: Tuple[int, ...] = tuple(res)
        self.meta: dict = dict(meta or {})
        self.entries: Dict[OpKey, LatencyStats] = dict(entries or {})
        self.resolution_entries: Dict[int, Dict[OpKey, LatencyStats]] = {
            int(r): dict(v) for r, v in (resolution_entries or {}).items()}
        self.overhead_ms = float(overhead_ms)
        # op -> {"from", "scale", "median_ms", "resolutions"}: filled by grid(interpolate=True)
        self.interpolated: Dict[OpKey, dict] = {}
        # whole-network correction fitted by luts.calibrate (None: predictions are op sums)
        self.calibration: dict | None = None
        # today's speed relative to the calibration / build (luts.drift); in memory only
        self.speed_scale: float = 1.0
        self._grids: Dict[tuple, "OpGrid"] = {}
        self.path: Path | None = None  # where it was loaded from, if anywhere

    def __repr__(self) -> str:
        return (f"LatencyTable(space={self.space.name!r}, resolutions={list(self.resolutions)}, "
                f"entries={len(self.entries)}, device={self.meta.get('device')!r})")

    # -- entries -----------------------------------------------------------------------
    def add(self, op: OpKey, stats: LatencyStats, *, resolution: int | None = None) -> None:
        """Record ``stats`` for ``op`` (for every resolution, or only networks at ``resolution``)."""
        if not isinstance(op, OpKey):
            raise TypeError(f"op must be an OpKey, got {type(op).__name__}")
        if not isinstance(stats, LatencyStats):
            raise TypeError(f"stats must be LatencyStats, got {type(stats).__name__}")
        if resolution is None:
            self.entries[op] = stats
        else:
            self.resolution_entries.setdefault(int(resolution), {})[op] = stats
        self._grids.clear()
        self.interpolated = {}  # estimates made from the old entries no longer apply

    def get(self, op: OpKey, resolution: int | None = None) -> LatencyStats:
        """The stats of ``op`` (in networks at ``resolution`` when that has its own entry)."""
        if resolution is not None:
            s = self.resolution_entries.get(int(resolution), {}).get(op)
            if s is not None:
                return s
        s = self.entries.get(op)
        if s is None:
            where = f" at resolution {resolution}" if resolution is not None else ""
            raise LUTError(f"latency table ({self._describe()}) has no entry for op "
                           f"{op.to_string()}{where}")
        return s

    def has(self, op: OpKey, resolution: int | None = None) -> bool:
        """Whether ``op`` has a measured entry (for every resolution, or for networks at
        ``resolution``)."""
        return op in self.entries or (
            resolution is not None and op in self.resolution_entries.get(int(resolution), {}))

    def _describe(self) -> str:
        return f"device {self.meta.get('device', '?')}, space {self.space.name}"

    @property
    def precision(self) -> str:
        """``"fp32"``, ``"int8"`` or ``"fp16"``: the precision of the op models the table timed
        (``meta["precision"]``; tables written before int8 tables existed are fp32)."""
        return _parse_precision(self.meta.get("precision") or "fp32", "latency table meta")

    def ops(self, resolution: int | None = None) -> List[OpKey]:
        """The ops subnets run at ``resolution`` (all of the table's resolutions if None)."""
        return self.family.enumerate_ops(self.space, self.resolutions if resolution is None
                                         else [resolution])

    def missing_ops(self) -> List[OpKey]:
        """Ops of the space at the table's resolutions that have no entry (sorted)."""
        missing = set()
        for r in self.resolutions:
            missing.update(op for op in self.ops(r) if not self.has(op, r))
        return sorted(missing)

    def validate(self) -> None:
        """Raise :class:`LUTError` unless every entry is an op of the space at the table's
        resolutions and every stats record is sane."""
        bad_res = [r for r in self.resolutions if r not in self.space.resolutions]
        if bad_res:
            raise LUTError(f"latency table resolutions {bad_res} are not resolutions of space "
                           f"{self.space.name}")
        known = set(self.ops())
        for op, s in self.entries.items():
            if op not in known:
                raise LUTError(f"latency table entry {op.to_string()} is not an op of space "
                               f"{self.space.name} at resolutions {list(self.resolutions)}")
            why = _stats_sane(s)
            if why:
                raise LUTError(f"latency table entry {op.to_string()}: {why} ({s})")
        for r, ents in self.resolution_entries.items():
            if r not in self.resolutions:
                raise LUTError(f"latency table has entries for resolution {r}, which is not one "
                               f"of its resolutions {list(self.resolutions)}")
            known_r = set(self.ops(r))
            for op, s in ents.items():
                if op not in known_r:
                    raise LUTError(f"latency table entry {op.to_string()} (resolution {r}) is "
                                   f"not an op of space {self.space.name} at resolution {r}")
                why = _stats_sane(s)
                if why:
                    raise LUTError(f"latency table entry {op.to_string()} (resolution {r}): "
                                   f"{why} ({s})")
        if not math.isfinite(self.overhead_ms):
            raise LUTError(f"latency table overhead_ms is not finite ({self.overhead_ms})")

    # -- interpolation -----------------------------------------------------------------
    def _nearest_measured(self, op: OpKey, resolution: int) -> Tuple[OpKey, LatencyStats]:
        measured = dict(self.entries)
        measured.update(self.resolution_entries.get(resolution, {}))
        cands = [o for o in measured if o.kind == op.kind]
        if not cands:
            raise LUTError(f"latency table ({self._describe()}) has no entry for op "
                           f"{op.to_string()} and no measured {op.kind} op to interpolate from")
        w = _work(op)

        def distance(o: OpKey):
            structure = (o.stride != op.stride, o.act != op.act, (o.se > 0) != (op.se > 0),
                         o.skip != op.skip, o.kernel != op.kernel, o.h != op.h)
            return (sum(structure), abs(math.log(_work(o) / w)), o.to_string())

        src = min(cands, key=distance)
        return src, measured[src]

    # -- prediction --------------------------------------------------------------------
    def correction(self, quantile: int = 50, *, calibrated: bool = True
                   ) -> Tuple[Dict[int, float], float]:
        """``({resolution: scale}, offset_ms)`` that turn an op sum into the predicted latency
        at ``quantile`` (50: median, 90: the upper quantile), including :attr:`speed_scale`."""
        if quantile not in (50, 90):
            raise LUTError(f"latency quantile must be 50 or 90, got {quantile}")
        cal = self.calibration if calibrated else None
        sp = float(self.speed_scale)
        if cal is None:
            # without whole-network data the upper quantile is the ops' own p90/median spread
            q = self._op_p90_ratio() if quantile == 90 else 1.0
            return {r: sp * q for r in self.resolutions}, 0.0
        q = float(cal.get("p90_factor", 1.0)) if quantile == 90 else 1.0
        scale = {int(k): float(v) for k, v in cal.get("scale", {}).items()}
        s0 = float(cal.get("default_scale", 1.0))
        off = float(cal.get("overhead_ms", 0.0))
        return ({r: sp * q * scale.get(r, s0) for r in self.resolutions}, sp * q * off)

    def quantile_factor(self, quantile: int = 50) -> float:
        """Predicted ``quantile`` latency over the predicted median: the same for every arch
        (the upper quantile is a fixed multiple of the calibrated median)."""
        if quantile == 50:
            return 1.0
        if quantile != 90:
            raise LUTError(f"latency quantile must be 50 or 90, got {quantile}")
        if self.calibration is None:
            return self._op_p90_ratio()
        return float(self.calibration.get("p90_factor", 1.0))

    def _op_p90_ratio(self) -> float:
        meds = np.array([s.median_ms for s in self.entries.values()])
        p90s = np.array([s.p90_ms for s in self.entries.values()])
        tot = float(meds.sum())
        return float(p90s.sum() / tot) if tot > 0 else 1.0

    def grid(self, *, interpolate: bool = False, quantile: int = 50,
             calibrated: bool = True) -> "OpGrid":
        """Predicted latency per op laid out for vectorised scoring (the family's grid: an
        :class:`OpGrid` for MobileNet spaces); ``overhead_ms`` is added once per network, and the calibration (unless
        ``calibrated=False``) and :attr:`speed_scale` are applied (both are linear). Missing
        ops raise :class:`LUTError` naming the op, unless ``interpolate``: then each is
        estimated from the nearest measured op of the same kind scaled by MACs, and listed in
        :attr:`interpolated`."""
        scale, offset = self.correction(quantile, calibrated=calibrated)
        key = (interpolate, quantile, calibrated, tuple(sorted(scale.items())), offset)
        g = self._grids.get(key)
        if g is not None:
            return g
        if interpolate:
            self.interpolated = {}
        # the value of an op may depend on the network's resolution (per-resolution entries)
        def value(op: OpKey, r: int) -> float:
            if self.has(op, r):
                return self.get(op, r).median_ms
            if not interpolate:
                self.get(op, r)  # raises, naming the op
            src, s = self._nearest_measured(op, r)
            f = _work(op) / _work(src)
            rec = self.interpolated.setdefault(op, {
                "from": src.to_string(), "scale": f, "median_ms": s.median_ms * f,
                "resolutions": []})
            rec["resolutions"].append(r)
            return s.median_ms * f

        sc = np.array([scale[r] for r in self.resolutions])
        full = self.family.grid(self.space, value, self.resolutions).affine(
            sc, sc * self.overhead_ms + offset)
        if interpolate and self.interpolated:
            log.warning("latency table (%s): %d op(s) missing, interpolated from the nearest "
                        "measured op scaled by MACs", self._describe(), len(self.interpolated))
        self._grids[key] = full
        return full

    def _batch(self, archs):
        """The family's validated batch of ``archs`` (its own errors as :class:`LUTError`)."""
        try:
            return self.family.batch(self.space, archs)
        except LUTError:
            raise
        except OfaDeployError as exc:
            raise LUTError(f"latency table ({self._describe()}): {exc}") from None

    def predict(self, archs, *, interpolate: bool = False, quantile: int = 50,
                calibrated: bool = True) -> np.ndarray:
        """Predicted latency (ms) of each arch: a batch or a list of archs of the table's family
        (:class:`~supernet.batch.ArchBatch` / :class:`ArchConfig`, ResNet: ``ResNetBatch`` /
        ``ResNetArch``). Shape ``(N,)``. Calibrated (when the table has a calibration) and
        rescaled by :attr:`speed_scale`; ``quantile=90`` gives the upper quantile,
        ``calibrated=False`` the plain op sum (still rescaled)."""
        batch = self._batch(archs)
        g = self.grid(interpolate=interpolate, quantile=quantile, calibrated=calibrated)
        bad = ~np.isin(batch.r, self.resolutions)
        if bad.any():
            raise LUTError(f"resolution(s) {sorted(set(batch.r[bad].tolist()))} not in the "
                           f"latency table ({self._describe()}; resolutions "
                           f"{list(self.resolutions)})")
        return g.evaluate(batch)

    def predict_one(self, arch: ArchConfig, *, interpolate: bool = False,
                    quantile: int = 50) -> float:
        """:meth:`predict` of one arch, as a float."""
        return float(self.predict([arch], interpolate=interpolate, quantile=quantile)[0])

    def breakdown(self, arch: ArchConfig, *, calibrated: bool = False
                  ) -> List[Tuple[OpKey, float]]:
        """(op, ms) of each op of ``arch`` in execution order (overhead not included): the
        measured median, or with ``calibrated`` its share of the calibrated prediction (op
        times the resolution's scale; the calibration's offset is per network, not per op)."""
        f = self.correction(50, calibrated=calibrated)[0][arch.r] if calibrated else 1.0
        return [(op, f * self.get(op, arch.r).median_ms)
                for op in self.family.arch_ops(self.space, arch)]

    def explain(self, arch: ArchConfig, *, top: int = 10) -> dict:
        """Where ``arch``'s predicted time goes: the calibrated prediction and its p90, the op
        sum, the per-network parts (runtime overhead, calibration offset) and the ``top``
        costliest ops with their share of the calibrated prediction (JSON-able)."""
        arch = arch.validate(self.space)
        if arch.r not in self.resolutions:
            raise LUTError(f"resolution {arch.r} not in the latency table (resolutions "
                           f"{list(self.resolutions)})")
        scale, offset = self.correction(50)
        f = scale[arch.r]
        ops = self.breakdown(arch)
        pred = self.predict_one(arch)
        rows = [{"index": i, "op": op.to_string(), "kind": op.kind, "measured_ms": ms,
                 "predicted_ms": f * ms, "share": f * ms / pred if pred > 0 else None,
                 "cv": (self.meta.get("noise") or {}).get("per_entry_cv", {}).get(
                     op.to_string())}
                for i, (op, ms) in enumerate(ops)]
        by_kind: Dict[str, float] = {}
        for r in rows:
            by_kind[r["kind"]] = by_kind.get(r["kind"], 0.0) + r["predicted_ms"]
        return {"arch_string": arch.to_string(self.space), "r": arch.r,
                "precision": self.precision,
                "predicted_ms": pred, "predicted_p90_ms": self.predict_one(arch, quantile=90),
                "op_sum_ms": sum(ms for _, ms in ops), "ops": len(ops),
                "runtime_overhead_ms": f * self.overhead_ms, "calibration_offset_ms": offset,
                "scale": f, "calibration": None if self.calibration is None else
                self.calibration.get("model"), "speed_scale": self.speed_scale,
                "by_kind_ms": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
                "top_ops": sorted(rows, key=lambda r: -r["predicted_ms"])[:top]}

    def min_max(self, resolutions: Sequence[int] | None = None, *,
                interpolate: bool = False) -> Tuple[float, float]:
        """Exact smallest and largest predicted latency over every subnet at ``resolutions``
        (default: all of the table's)."""
        rs = self.resolutions if resolutions is None else [int(r) for r in resolutions]
        bad = [r for r in rs if r not in self.resolutions]
        if bad:
            raise LUTError(f"resolution(s) {bad} not in the latency table (resolutions "
                           f"{list(self.resolutions)})")
        return self.grid(interpolate=interpolate).min_max(rs)

    # -- (de)serialisation ---------------------------------------------------------------
    def get_state(self) -> dict:
        """The table as the JSON object of the file format (see the module docstring)."""
        meta = dict(self.meta)
        meta["space"] = self.space.name
        meta["resolutions"] = list(self.resolutions)
        state = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "meta": meta,
            "overhead_ms": self.overhead_ms,
            "entries": {op.to_string(): s.to_dict() for op, s in sorted(self.entries.items())},
        }
        if any(self.resolution_entries.values()):
            state["resolution_entries"] = {
                str(r): {op.to_string(): s.to_dict() for op, s in sorted(ents.items())}
                for r, ents in sorted(self.resolution_entries.items()) if ents}
        if self.interpolated:
            state["interpolated"] = {op.to_string(): dict(v)
                                     for op, v in sorted(self.interpolated.items())}
        if self.calibration is not None:
            state["calibration"] = dict(self.calibration)
        return state

    @classmethod
    def from_state(cls, state: Mapping, *, source: str = "latency table") -> "LatencyTable":
        """Read and validate the file format's JSON object; anything malformed or inconsistent with
        its space is a LUTError naming ``source`` and the field."""
        if not isinstance(state, Mapping):
            raise LUTError(f"{source}: expected a JSON object, got {type(state).__name__}")
        if state.get("schema") != SCHEMA:
            raise LUTError(f"{source}: not an ofa-deploy latency table (schema "
                           f"{state.get('schema')!r}, expected {SCHEMA!r})")
        ver = state.get("schema_version")
        if not isinstance(ver, int) or isinstance(ver, bool) or ver < 1:
            raise LUTError(f"{source}: bad schema_version {ver!r}")
        if ver > SCHEMA_VERSION:
            raise LUTError(f"{source}: written by a newer ofa-deploy (schema version {ver}, this "
                           f"version reads up to {SCHEMA_VERSION}); upgrade ofa-deploy")
        meta = state.get("meta")
        if not isinstance(meta, Mapping):
            raise LUTError(f"{source}: missing 'meta' object")
        if "space" not in meta:
            raise LUTError(f"{source}: meta has no 'space'")
        try:
            space = resolve_space(str(meta["space"]))[1]
        except SpaceError as exc:
            raise LUTError(f"{source}: {exc}") from None
        res = meta.get("resolutions")
        if not isinstance(res, list) or not res or not all(
                isinstance(r, int) and not isinstance(r, bool) for r in res):
            raise LUTError(f"{source}: meta 'resolutions' must be a non-empty list of integers")

        def read_entries(obj, where: str) -> Dict[OpKey, LatencyStats]:
            if not isinstance(obj, Mapping):
                raise LUTError(f"{source}: {where} must be an object")
            out = {}
            for k, v in obj.items():
                try:
                    op = OpKey.from_string(k)
                except ValueError as exc:
                    raise LUTError(f"{source}: {where}: {exc}") from None
                if not isinstance(v, Mapping):
                    raise LUTError(f"{source}: {where}: entry {k} must be an object")
                try:
                    out[op] = LatencyStats.from_dict(v)
                except ValueError as exc:
                    raise LUTError(f"{source}: {where}: entry {k}: {exc}") from None
            return out

        entries = read_entries(state.get("entries", None), "entries")
        rents = {}
        re_obj = state.get("resolution_entries", {})
        if not isinstance(re_obj, Mapping):
            raise LUTError(f"{source}: resolution_entries must be an object")
        for r, obj in re_obj.items():
            if not str(r).isdigit():
                raise LUTError(f"{source}: resolution_entries key {r!r} is not a resolution")
            rents[int(r)] = read_entries(obj, f"resolution_entries[{r}]")
        try:
            overhead = float(state.get("overhead_ms", 0.0))
        except (TypeError, ValueError):
            raise LUTError(f"{source}: overhead_ms must be a number") from None
        if meta.get("precision") is not None:
            _parse_precision(meta["precision"], f"{source}: meta 'precision'")
        t = cls(space, res, meta=meta, entries=entries, overhead_ms=overhead,
                resolution_entries=rents)
        cal = state.get("calibration")
        if cal is not None:
            if not isinstance(cal, Mapping) or not isinstance(cal.get("scale", {}), Mapping):
                raise LUTError(f"{source}: bad 'calibration' object")
            try:
                vals = [float(v) for v in cal.get("scale", {}).values()] + [
                    float(cal.get("overhead_ms", 0.0)), float(cal.get("p90_factor", 1.0))]
            except (TypeError, ValueError):
                raise LUTError(f"{source}: calibration values must be numbers") from None
            if not all(math.isfinite(v) for v in vals):
                raise LUTError(f"{source}: calibration values must be finite")
            t.calibration = dict(cal)
        interp = state.get("interpolated", {})
        if isinstance(interp, Mapping):
            for k, v in interp.items():
                try:
                    t.interpolated[OpKey.from_string(k)] = dict(v)
                except (ValueError, TypeError):
                    raise LUTError(f"{source}: bad 'interpolated' record {k!r}") from None
        t.validate()
        return t

    @classmethod
    def load(cls, path: "str | os.PathLike") -> "LatencyTable":
        """Read and validate a table file; a missing, unreadable or corrupt file is a one-line
        LUTError. Sets ``path``."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise LUTError(f"latency table not found: {p}") from None
        except IsADirectoryError:
            raise LUTError(f"latency table path is a directory: {p}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise LUTError(f"cannot read latency table {p}: {exc}") from None
        try:
            state = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LUTError(f"latency table {p} is corrupt (not valid JSON: {exc})") from None
        t = cls.from_state(state, source=f"latency table {p}")
        t.path = p
        return t

    def to_json(self) -> str:
        """The file's text: sorted keys, so saving an unchanged table rewrites the same bytes."""
        return json.dumps(self.get_state(), indent=1, sort_keys=True, allow_nan=False) + "\n"

    def save(self, path: "str | os.PathLike") -> Path:
        """Write atomically (temp file + rename): a crash never leaves a half-written table."""
        return atomic_write_text(path, self.to_json())

    def __eq__(self, other) -> bool:
        if not isinstance(other, LatencyTable):
            return NotImplemented
        return self.get_state() == other.get_state()

    __hash__ = None  # mutable
