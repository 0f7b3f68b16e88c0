"""``lut``: inspect latency tables and convert the reference OFA YAML tables (``lut validate``
lives in lut_validate.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ._common import OutputPath, emit, precision_option, table

if TYPE_CHECKING:
    from luts.table import LatencyTable

# Kept in step with luts.store.BUILTIN_TABLES by a test; spelled out so --help needs no import.
BUILTIN_TARGETS = ("note10",)


_TARGET_HELP = ("FILE|NAME: a table file, a built-in table (" + ", ".join(BUILTIN_TARGETS)
                + ") or a device spec whose profiled table is cached (cpu, adb:NAME...)")


@click.group()
def lut() -> None:
    """Latency lookup tables: show, import/export the reference YAML format."""


def _top_ops(t: LatencyTable, n: int) -> list:
    rows = [(op, None, s) for op, s in t.entries.items()]
    rows += [(op, r, s) for r, ents in t.resolution_entries.items() for op, s in ents.items()]
    rows.sort(key=lambda x: (-x[2].median_ms, x[0], x[1] or 0))
    return [{"op": op.to_string(), "resolution": r, **s.to_dict()} for op, r, s in rows[:n]]


def describe_table(t: LatencyTable, *, interpolate: bool = False, top: int = 10) -> dict:
    """JSON-ready facts about LUT ``t``: path, space, resolutions, metadata, overhead, entry counts,
    missing ops, per-resolution latency range (only when complete, or when ``interpolate`` fills
    the gaps, whose values are listed), and the ``top`` slowest ops."""
    missing = t.missing_ops()
    ranges = None
    if not missing or interpolate:
        ranges = []
        for r in t.resolutions:
            lo, hi = t.min_max([r], interpolate=interpolate)
            ranges.append({"resolution": r, "min_ms": lo, "max_ms": hi})
    return {
        "path": str(t.path) if t.path else None,
        "space": t.space.name,
        "precision": t.precision,
        "resolutions": list(t.resolutions),
        "meta": t.meta,
        "overhead_ms": t.overhead_ms,
        "entries": len(t.entries),
        "resolution_entries": sum(len(v) for v in t.resolution_entries.values()),
        "missing_ops": [op.to_string() for op in missing],
        "interpolated": ({op.to_string(): v for op, v in sorted(t.interpolated.items())}
                         if interpolate else {}),
        "latency_range": ranges,
        "top_ops": _top_ops(t, top),
        "calibration": None if t.calibration is None else {
            k: v for k, v in t.calibration.items() if k not in ("rows", "archs")},
    }


def _meta_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        text = ", ".join(_meta_value(x) for x in v)
    else:
        text = str(v)
    # one table row stays one screen line; --json has everything
    return text if len(text) <= 80 else text[:77] + "..."


def _meta_rows(meta: dict, prefix: str = "") -> list:
    """Metadata as (key, value) rows; nested records (drift, profiler) become dotted keys,
    one row per field, instead of a raw dict a thousand characters wide."""
    rows = []
    for k, v in sorted(meta.items()):
        if v is None:
            continue
        if isinstance(v, dict):
            rows += _meta_rows(v, f"{prefix}{k}.")
        else:
            rows.append((f"{prefix}{k}", _meta_value(v)))
    return rows


def _human(d: dict) -> str:
    skip = {"space", "resolutions", "stats_note", "precision"}
    rows = [("table", d["path"] or "-"), ("space", d["space"]), ("precision", d["precision"]),
            ("resolutions", ", ".join(map(str, d["resolutions"])))]
    # the bulky records get one-line summaries (the JSON form has them whole)
    skip |= {"noise", "reference_ops", "protocol", "calibration"}
    rows += _meta_rows({k: v for k, v in d["meta"].items() if k not in skip})
    m = d["meta"]
    if m.get("protocol"):
        from profilers.protocol import MeasurementProtocol

        rows.append(("protocol", MeasurementProtocol.from_state(m["protocol"]).describe()))
    if (m.get("noise") or {}).get("median_cv") is not None:
        rows.append(("noise (median CV)", f"{m['noise']['median_cv']:.1%}"))
    c = d.get("calibration")
    rows.append(("calibration", "none" if not c else
                 f"{c['model']} on {c['samples']} subnets, held-out MAPE "
                 f"{c['heldout_mape']:.1%} (uncalibrated {c['uncalibrated_mape']:.1%})"))
    ent = f"{d['entries']}"
    if d["resolution_entries"]:
        ent += f" (+{d['resolution_entries']} resolution-specific)"
    rows += [("entries", ent), ("overhead", f"{d['overhead_ms']:.4f} ms"),
             ("missing ops", len(d["missing_ops"]))]
    if d["interpolated"]:
        rows.append(("interpolated ops", len(d["interpolated"])))
    parts = [table(rows, ("field", "value"))]
    if d["missing_ops"]:
        shown = d["missing_ops"][:10]
        more = len(d["missing_ops"]) - len(shown)
        parts.append("missing:\n  " + "\n  ".join(shown) + (f"\n  ... {more} more" if more else ""))
    if d["latency_range"] is None:
        parts.append("latency range: not available with missing ops (pass --interpolate for an "
                     "estimate)")
    else:
        parts.append(table([(x["resolution"], f"{x['min_ms']:.3f}", f"{x['max_ms']:.3f}")
                            for x in d["latency_range"]], ("resolution", "min ms", "max ms")))
    parts.append(table([(i + 1, x["op"], x["resolution"] or "all", f"{x['median_ms']:.4f}",
                         f"{x['p10_ms']:.4f}", f"{x['p90_ms']:.4f}", x["runs"])
                        for i, x in enumerate(d["top_ops"])],
                       ("#", "most expensive ops", "res", "median ms", "p10", "p90", "runs")))
    return "\n\n".join(parts)


@lut.command("show")
@click.argument("target", metavar="FILE|NAME")
@click.option("--space", "space_name", default=None,
              help="Space of the table (needed to pick a cached device table).")
@click.option("--interpolate", is_flag=True,
              help="Estimate missing ops from the nearest measured op (scaled by MACs).")
@click.option("--top", type=click.IntRange(0, None), default=10, show_default=True,
              help="How many of the most expensive ops to list.")
@precision_option("Which cached device table (default fp32); a table file of another "
                  "precision is refused.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def show(target, space_name, interpolate, top, precision, as_json) -> None:
    """Metadata, coverage, latency range per resolution and dearest ops of a table.

    TARGET is a table file, a built-in table name, or a device spec with a cached table.
    """
    from luts.store import load_table

    t = load_table(target, space=space_name, precision=precision and precision.lower(),
                   what=f"--precision {precision}")
    emit(describe_table(t, interpolate=interpolate, top=top), as_json, _human)


def _parse_meta(_ctx, _param, values):
    out = {}
    for v in values:
        if "=" not in v:
            raise click.BadParameter(f"{v!r} is not KEY=VALUE")
        k, val = v.split("=", 1)
        out[k.strip()] = val
    return out


@lut.command("import-reference")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--space", "space_name", required=True, help="Space the tables were measured for.")
@click.option("--out", "out", required=True, type=OutputPath("file"),
              help="Where to write the table (JSON).")
@click.option("--device", default=None, help="Device name recorded in the metadata.")
@click.option("--meta", "meta", multiple=True, callback=_parse_meta, metavar="KEY=VALUE",
              help="Extra metadata (repeatable), e.g. --meta provenance='...'.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def import_reference(directory, space_name, out, device, meta, as_json) -> None:
    """Convert reference OFA tables ({r}_lookup_table.yaml in DIRECTORY) to a table file.

    The reference mean becomes median_ms; p10/p90 are estimated as mean -/+ 1.2816 std.
    """
    from luts.reference import import_reference_tables

    if device is not None:
        meta = {**meta, "device": device}
    t = import_reference_tables(directory, space_name, meta)
    path = t.save(out)
    t.path = path
    emit(describe_table(t, top=5), as_json, _human)


@lut.command("export-reference")
@click.argument("target", metavar="FILE|NAME")
@click.option("--out", "out", required=True, type=OutputPath("dir"),
              help="Directory for the {r}_lookup_table.yaml files.")
@click.option("--space", "space_name", default=None, help="Space of the table.")
def export_reference(target, out, space_name) -> None:
    """Write a table in the reference OFA format, one YAML file per resolution."""
    from luts.reference import export_reference_tables
    from luts.store import load_table

    t = load_table(target, space=space_name)
    for p in export_reference_tables(t, out):
        click.echo(str(p))
