"""The reference OFA latency tables (one YAML file per input resolution) to and from ours.

Reference key format (``{r}_lookup_table.yaml``, each key -> ``{count, mean, std}``)::

    Conv-input:224x224x3-output:112x112x24                         stem
    expanded_conv-input:112x112x24-output:112x112x24-expand:24-kernel:3-stride:1-idskip:1-se:0-hs:0
                                                                   first block (expand = its
                                                                   input width: no expansion)
    expanded_conv-input:...-expand:<middle channels>-kernel:K-stride:S-idskip:0|1-se:0|1-hs:0|1
    Conv_1-input:7x7x192-output:7x7x1152                           final expand
    AvgPool2D-input:7x7x1152-output:1x1x1152                       global pool
    Conv_2-input:1x1x1152-output:1x1x1536                          feature mix
    Logits-input:1x1x1536-output:1000                              classifier

The key leaves out what the space fixes (activation kind, SE width, stem kernel), so both
directions need the space. The reference's latency of a subnet is the plain sum of the ``mean``
of its ops in the table of its resolution; :class:`~luts.table.LatencyTable` predicts exactly
that sum from an imported table.

Statistics on import: the reference records the mean, the standard deviation and the number of
runs per op. ``median_ms`` is set to the reference **mean** (it is what the reference sums);
``std_ms`` and ``runs`` are copied; ``p10_ms``/``p90_ms`` are **estimated** as
``mean -/+ 1.2816 * std`` (the 10th/90th percentiles of a normal distribution, the lower one
clipped at 0) — the reference publishes no percentiles.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Dict, List, Mapping, Tuple

import yaml

from profilers.base import LatencyStats
from supernet.fileio import atomic_write_text, read_yaml
from supernet.ops import OpKey, conv_out, enumerate_ops
from supernet.space import Space, get_space

from .table import LatencyTable, LUTError

__all__ = [
    "Z_P90",
    "STATS_NOTE",
    "opkey_to_reference_key",
    "reference_key_to_opkey",
    "read_reference_yaml",
    "import_reference_tables",
    "export_reference_tables",
    "NOTE10_META",
    "make_note10_table",
]

Z_P90 = 1.2815515655446004  # standard normal 90th percentile
STATS_NOTE = ("imported from reference {count, mean, std} tables: median_ms is the reference "
              "mean, std_ms and runs are copied, p10_ms/p90_ms are estimated as "
              "mean -/+ 1.2816*std (normal approximation, p10 clipped at 0); an op measured at "
              "several resolutions has one entry per resolution (resolution_entries) and a "
              "count-weighted pooled entry")

_FILE_RE = re.compile(r"^(\d+)_lookup_table\.ya?ml$")
_KEY_RE = re.compile(
    r"^(?P<type>Conv|Conv_1|Conv_2|AvgPool2D|Logits|expanded_conv)"
    r"-input:(?P<ih>\d+)x(?P<iw>\d+)x(?P<ic>\d+)"
    r"-output:(?:(?P<oh>\d+)x(?P<ow>\d+)x)?(?P<oc>\d+)"
    r"(?:-expand:(?P<mid>\d+)-kernel:(?P<k>\d+)-stride:(?P<s>\d+)"
    r"-idskip:(?P<skip>[01])-se:(?P<se>[01])-hs:(?P<hs>[01]))?$")


def _shape(h: int, c: int) -> str:
    return f"{h}x{h}x{c}"


def _forward(op: OpKey) -> str:
    oh = op.out_h
    if op.kind == "stem":
        return f"Conv-input:{_shape(op.h, op.cin)}-output:{_shape(oh, op.cout)}"
    if op.kind in ("first_block", "block"):
        return (f"expanded_conv-input:{_shape(op.h, op.cin)}-output:{_shape(oh, op.cout)}"
                f"-expand:{op.mid}-kernel:{op.kernel}-stride:{op.stride}-idskip:{int(op.skip)}"
                f"-se:{int(op.se > 0)}-hs:{int(op.act == 'h_swish')}")
    if op.kind == "final_expand":
        return f"Conv_1-input:{_shape(op.h, op.cin)}-output:{_shape(op.h, op.cout)}"
    if op.kind == "pool":
        return f"AvgPool2D-input:{_shape(op.h, op.cin)}-output:{_shape(1, op.cout)}"
    if op.kind == "feature_mix":
        return f"Conv_2-input:{_shape(1, op.cin)}-output:{_shape(1, op.cout)}"
    if op.kind == "classifier":
        return f"Logits-input:{_shape(1, op.cin)}-output:{op.cout}"
    raise LUTError(f"op kind {op.kind!r} has no reference key")  # pragma: no cover


def opkey_to_reference_key(op: OpKey, space: "Space | str") -> str:
    """The reference table key of ``op``. Raises :class:`LUTError` if the key would not map
    back to the same op in ``space`` (the key format drops what the space fixes)."""
    key = _forward(op)
    try:
        back = reference_key_to_opkey(key, space)
    except LUTError as exc:
        raise LUTError(f"op {op.to_string()} cannot be written as a reference key for space "
                       f"{get_space(space).name}: {exc}") from None
    if back != op:
        raise LUTError(f"op {op.to_string()} cannot be written as a reference key for space "
                       f"{get_space(space).name} (it would read back as {back.to_string()})")
    return key


def reference_key_to_opkey(key: str, space: "Space | str") -> OpKey:
    """Our :class:`OpKey` for a reference key, filling in what ``space`` fixes."""
    sp = get_space(space)
    m = _KEY_RE.match(key.strip())
    if not m:
        raise LUTError(f"not a reference latency key: {key!r}")
    g = m.groupdict()
    typ, h, cin, cout = g["type"], int(g["ih"]), int(g["ic"]), int(g["oc"])
    oh = int(g["oh"]) if g["oh"] is not None else None
    if int(g["iw"]) != h or (g["ow"] is not None and int(g["ow"]) != oh):
        raise LUTError(f"reference key {key!r}: only square inputs are supported")
    is_block = typ == "expanded_conv"
    if is_block != (g["mid"] is not None):
        raise LUTError(f"reference key {key!r}: expand/kernel/stride fields "
                       f"{'missing' if is_block else 'unexpected'}")
    if (typ == "Logits") != (oh is None):
        raise LUTError(f"reference key {key!r}: malformed output shape")

    def expect(cond: bool, what: str) -> None:
        if not cond:
            raise LUTError(f"reference key {key!r} does not fit space {sp.name}: {what}")

    if typ == "Conv":
        expect(oh == conv_out(h, sp.stem_stride), f"stem output size should be "
               f"{conv_out(h, sp.stem_stride)}")
        return OpKey("stem", h, cin, cout, kernel=3, stride=sp.stem_stride, act=sp.stem_act)
    if typ == "Conv_1":
        expect(oh == h, "final expand keeps the spatial size")
        return OpKey("final_expand", h, cin, cout, act=sp.head_act)
    if typ == "AvgPool2D":
        expect(oh == 1 and cin == cout, "pooling outputs 1x1 with the same channels")
        return OpKey("pool", h, cin, cout)
    if typ == "Conv_2":
        expect(h == 1 and oh == 1, "feature mix runs on 1x1 inputs")
        return OpKey("feature_mix", 1, cin, cout, act=sp.head_act)
    if typ == "Logits":
        expect(h == 1, "classifier runs on 1x1 inputs")
        return OpKey("classifier", 1, cin, cout)

    mid, k, s = int(g["mid"]), int(g["k"]), int(g["s"])
    skip, se, hs = g["skip"] == "1", g["se"] == "1", g["hs"] == "1"
    expect(oh == conv_out(h, s), f"output size should be {conv_out(h, s)} for stride {s}")
    # The first block has no expansion: its "expand" (middle width) equals its input width,
    # which no elastic block can have (every expand ratio is > 1).
    if (cin, cout, mid, k, s) == (sp.stem_width, sp.first_block_width, sp.stem_width, 3, 1):
        expect(skip == sp.first_block_skip, f"first block idskip should be "
               f"{int(sp.first_block_skip)}")
        expect(se == sp.first_block_se, f"first block se should be {int(sp.first_block_se)}")
        expect(hs == (sp.first_block_act == "h_swish"), "first block hs flag")
        return OpKey("first_block", h, cin, cout, mid=mid, kernel=k, stride=s,
                     se=sp.se_channels(mid) if sp.first_block_se else 0,
                     act=sp.first_block_act, skip=sp.first_block_skip)
    specs = [b for b in sp.blocks if (b.in_channels, b.out_channels, b.stride) == (cin, cout, s)]
    expect(bool(specs), f"no block maps {cin} -> {cout} channels with stride {s}")
    b = specs[0]
    expect(skip == b.identity_skip, f"idskip should be {int(b.identity_skip)}")
    expect(se == b.se, f"se should be {int(b.se)}")
    expect(hs == (b.act == "h_swish"), f"hs should be {int(b.act == 'h_swish')}")
    return OpKey("block", h, cin, cout, mid=mid, kernel=k, stride=s,
                 se=sp.se_channels(mid) if b.se else 0, act=b.act, skip=b.identity_skip)


# -- YAML files ------------------------------------------------------------------------------
def read_reference_yaml(path: "str | os.PathLike") -> Dict[str, Tuple[int, float, float]]:
    """``{key: (count, mean, std)}`` of one reference file (``var`` is accepted for ``std``)."""
    p = Path(path)
    data = read_yaml(p, "reference table", LUTError, missing=f"reference table not found: {p}")
    if not isinstance(data, Mapping) or not data:
        raise LUTError(f"reference table {p} must be a non-empty mapping of op keys")
    out = {}
    for k, v in data.items():
        if not isinstance(v, Mapping) or "mean" not in v:
            raise LUTError(f"reference table {p}: entry {k!r} must hold count, mean, std")
        try:
            mean = float(v["mean"])
            std = float(v["std"]) if "std" in v else math.sqrt(float(v["var"]))
            count = int(v.get("count", 1))
        except (KeyError, TypeError, ValueError):
            raise LUTError(f"reference table {p}: entry {k!r} must hold numeric count, mean and "
                           f"std (or var)") from None
        if not (math.isfinite(mean) and math.isfinite(std) and mean >= 0 and std >= 0
                and count >= 1):
            raise LUTError(f"reference table {p}: entry {k!r} has impossible values "
                           f"(count {count}, mean {mean}, std {std})")
        out[str(k)] = (count, mean, std)
    return out


def _stats(count: int, mean: float, std: float) -> LatencyStats:
    return LatencyStats(median_ms=mean, p10_ms=max(0.0, mean - Z_P90 * std),
                        p90_ms=mean + Z_P90 * std, std_ms=std, runs=count)


def _pooled(samples: List[Tuple[int, float, float]]) -> LatencyStats:
    n = sum(c for c, _, _ in samples)
    mean = sum(c * m for c, m, _ in samples) / n
    var = sum(c * (s * s + (m - mean) ** 2) for c, m, s in samples) / n
    return _stats(n, mean, math.sqrt(var))


def _find_files(source) -> Dict[int, Path]:
    if isinstance(source, Mapping):
        files = {int(r): Path(p) for r, p in source.items()}
    else:
        d = Path(source)
        if not d.is_dir():
            raise LUTError(f"reference table directory not found: {d}")
        files = {}
        for p in sorted(d.iterdir()):
            m = _FILE_RE.match(p.name)
            if m:
                files[int(m.group(1))] = p
    if not files:
        raise LUTError(f"no reference tables ({{r}}_lookup_table.yaml) in {source}")
    return dict(sorted(files.items()))


def import_reference_tables(source, space: "Space | str", meta: Mapping | None = None
                            ) -> LatencyTable:
    """Build a :class:`LatencyTable` from reference YAML tables: ``source`` is a directory of
    ``{r}_lookup_table.yaml`` files or a ``{resolution: path}`` mapping. Every key must map to an
    op of ``space`` at its file's resolution (else :class:`LUTError` naming the key); see the
    module docstring for how the statistics are converted."""
    sp = get_space(space)
    files = _find_files(source)
    per_r: Dict[int, Dict[OpKey, Tuple[int, float, float]]] = {}
    for r, path in files.items():
        valid = set(enumerate_ops(sp, [r]))
        ops: Dict[OpKey, Tuple[int, float, float]] = {}
        for key, rec in read_reference_yaml(path).items():
            op = reference_key_to_opkey(key, sp)
            if op not in valid:
                raise LUTError(f"reference table {path}: key {key!r} ({op.to_string()}) is not "
                               f"an op of space {sp.name} at resolution {r}")
            if op in ops:
                raise LUTError(f"reference table {path}: two keys map to {op.to_string()}")
            ops[op] = rec
        per_r[r] = ops
    seen: Dict[OpKey, List[int]] = {}
    for r, ops in per_r.items():
        for op in ops:
            seen.setdefault(op, []).append(r)
    entries, res_entries = {}, {}
    for op, rs in seen.items():
        if len(rs) == 1:
            entries[op] = _stats(*per_r[rs[0]][op])
        else:
            entries[op] = _pooled([per_r[r][op] for r in rs])
            for r in rs:
                res_entries.setdefault(r, {})[op] = _stats(*per_r[r][op])
    m = {"source": "reference yaml tables", "stats_note": STATS_NOTE}
    m.update(meta or {})
    bad = [r for r in files if r not in sp.resolutions]
    if bad:
        raise LUTError(f"reference tables for resolution(s) {bad}, which space {sp.name} does not "
                       f"have")
    t = LatencyTable(sp, list(files), meta=m, entries=entries, resolution_entries=res_entries)
    t.validate()
    return t


def export_reference_tables(table: LatencyTable, out_dir: "str | os.PathLike") -> List[Path]:
    """Write ``{r}_lookup_table.yaml`` per resolution of ``table`` in the reference format
    (``count`` = runs, ``mean`` = median_ms, ``std`` = std_ms). Ops without an entry are left
    out. Returns the files written."""
    out = Path(out_dir)
    written = []
    for r in table.resolutions:
        data = {}
        for op in table.ops(r):
            if table.has(op, r):
                s = table.get(op, r)
                data[opkey_to_reference_key(op, table.space)] = {
                    "count": int(s.runs), "mean": float(s.median_ms), "std": float(s.std_ms)}
        path = out / f"{r}_lookup_table.yaml"
        atomic_write_text(path, yaml.safe_dump(data, sort_keys=True, default_flow_style=False))
        written.append(path)
    return written


# -- the built-in Note10 table -----------------------------------------------------------------
NOTE10_META = {
    "device": "note10",
    "backend": "tflite (reference)",
    "phone_model": "Samsung Galaxy Note10",
    "runtime": "TensorFlow Lite, as measured by the Once-for-All authors (version not published)",
    "threads": None,
    "date": "2023-07-18",
    "provenance": ("Once-for-All authors (Cai et al.), measured on Samsung Galaxy Note10, from "
                   "han-cai/files commit a7c9bcd (2023-07-18), MIT licence"),
    "attribution": ("Cai, Gan, Wang, Zhang, Han: Once-for-All: Train One Network and Specialize "
                    "it for Efficient Deployment, ICLR 2020; tables from "
                    "https://github.com/han-cai/files (ofa/note10/{r}_lookup_table.yaml)"),
    "licence": "MIT",
}
NOTE10_SPACE = "ofa-mbv3-w1.2"
NOTE10_RESOLUTIONS = (160, 176, 192, 208, 224)


def make_note10_table(src_dir: "str | os.PathLike") -> LatencyTable:
    """The built-in ``note10`` table from the reference Note10 YAML files in ``src_dir``."""
    files = {r: Path(src_dir) / f"{r}_lookup_table.yaml" for r in NOTE10_RESOLUTIONS}
    t = import_reference_tables(files, NOTE10_SPACE, NOTE10_META)
    missing = t.missing_ops()
    if missing:
        raise LUTError(f"the Note10 tables lack {len(missing)} op(s) of {NOTE10_SPACE}, e.g. "
                       f"{missing[0].to_string()}")
    return t
