"""``lut calibrate`` (fit the whole-network correction) and ``lut predict`` (where an arch's
predicted time goes)."""
from __future__ import annotations

import click

from ._common import emit, estimator_option, precision_option, table


def explain_human(d: dict) -> str:
    """Table view of :meth:`luts.table.LatencyTable.explain` output."""
    head = table([
        ("arch", d["arch_string"]), ("precision", d.get("precision", "fp32")),
        ("predicted", f"{d['predicted_ms']:.3f} ms"),
        ("predicted p90", f"{d['predicted_p90_ms']:.3f} ms"),
        ("op sum (measured)", f"{d['op_sum_ms']:.3f} ms over {d['ops']} ops"),
        ("runtime overhead", f"{d['runtime_overhead_ms']:.4f} ms"),
        ("calibration", f"{d['calibration'] or 'none'} (x{d['scale']:.3f}, "
                        f"{d['calibration_offset_ms']:+.4f} ms per network)"),
        ("by op kind", ", ".join(f"{k} {v:.3f} ms" for k, v in d["by_kind_ms"].items())),
    ], ("field", "value"))
    rows = table([(r["index"], r["op"], f"{r['predicted_ms']:.4f}",
                   f"{r['share']:.1%}" if r["share"] is not None else "-",
                   "-" if r["cv"] is None else f"{r['cv']:.1%}") for r in d["top_ops"]],
                 ("#", "op", "ms", "share", "noise (CV)"))
    return head + "\n\ntop ops:\n" + rows


@click.command("predict")
@click.option("--lut", "lut_path", required=True, metavar="FILE|SPEC",
              help="Table file, built-in table or a device spec whose table is cached.")
@click.option("--arch", required=True, metavar="FILE|min|max|STRING", help="The arch.")
@click.option("--resolution", type=int, default=None, help="Override the arch's input size.")
@click.option("--space", "space_name", default=None, help="Space (to pick a cached table).")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="Costliest ops to list.")
@precision_option("Which cached device table (default fp32); a table file of another "
                  "precision is refused.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def predict(lut_path, arch, resolution, space_name, top, precision, as_json) -> None:
    """Predicted latency of ARCH (calibrated, with p90) and its per-op breakdown."""
    from luts.table import load_table

    t = load_table(lut_path, space=space_name, precision=precision and precision.lower(),
                   what=f"--precision {precision}")
    a = t.family.parse_arch(arch, t.space)
    if resolution is not None:
        a = a.with_resolution(resolution).validate(t.space)
    emit(t.explain(a, top=top), as_json, explain_human)


@click.command("calibrate")
@click.option("--lut", "lut_path", required=True, metavar="FILE|SPEC",
              help="Table file (or a device spec whose profiled table is cached); updated "
                   "in place.")
@click.option("--device", default=None, metavar="SPEC",
              help="Where to measure (default: the device the table was built on).")
@click.option("--space", "space_name", default=None, help="Space (to pick a cached table).")
@click.option("--samples", type=click.IntRange(min=4), default=20, show_default=True,
              help="Random whole subnets to time.")
@click.option("--seed", type=int, default=0, show_default=True)
@precision_option("Which cached device table (default fp32); a table file of another "
                  "precision is refused. Subnets are timed at the table's precision.")
@estimator_option("Default: the table's; another is refused (it measures something else).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def calibrate(lut_path, device, space_name, samples, seed, precision, estimator, quiet,
              as_json) -> None:
    """Time random whole subnets through the export path specialize ships, under the table's
    measurement protocol, and store the best-generalising correction of the op sums.

    Candidates (scale, overhead+scale, per-resolution scale, overhead+per-resolution scale)
    are scored on held-out subnets (leave-one-out); the table keeps the best with its
    held-out error and an upper-quantile factor (p90).
    """
    from luts.calibrate import calibrate_lut
    from luts.table import load_table

    t = load_table(lut_path, space=space_name, precision=precision and precision.lower(),
                   what=f"--precision {precision}")
    t = calibrate_lut(t, device, samples=samples, seed=seed, estimator=estimator,
                      progress=not quiet and not as_json,
                      echo=lambda s: click.echo(s, err=True))
    cal = t.calibration
    data = {k: v for k, v in cal.items() if k not in ("rows", "archs")}
    data["path"] = str(t.path) if t.path else None

    def human(d: dict) -> str:
        rows = [("table", d["path"] or "-"), ("precision", d.get("precision", "fp32")),
                ("model", d["model"]),
                ("scale", ", ".join(f"{r}: x{s:.3f}" for r, s in d["scale"].items())),
                ("offset", f"{d['overhead_ms']:+.4f} ms per network"),
                ("p90 factor", f"x{d['p90_factor']:.3f}"),
                ("held-out MAPE", f"{d['heldout_mape']:.1%} (uncalibrated "
                                  f"{d['uncalibrated_mape']:.1%})"),
                ("held-out within ±10%", f"{d['heldout_within_10pct']:.0%} (uncalibrated "
                                         f"{d['uncalibrated_within_10pct']:.0%})"),
                ("noise (median CV)", f"{d['median_cv']:.1%}"), ("time", f"{d['seconds']} s")]
        cands = table([(m, f"{c['heldout_mape']:.2%}", f"{c['heldout_within_10pct']:.0%}",
                        c["params"]) for m, c in d["candidates"].items()],
                      ("model", "held-out MAPE", "within ±10%", "params"))
        return table(rows, ("field", "value")) + "\n\ncandidates:\n" + cands

    emit(data, as_json, human)
