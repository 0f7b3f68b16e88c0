"""``lut validate``: how well a latency table predicts whole networks on its device."""
from __future__ import annotations

import json

import click

from ._common import (OutputPath, atomic_write_text, emit, estimator_option, precision_option,
                      table)
from .profile import parse_resolutions


def _protocol_line(state: dict) -> str:
    from profilers.protocol import MeasurementProtocol

    return MeasurementProtocol.from_state(state).describe()


def _human(d: dict) -> str:
    m = d["meta"]
    head = table([
        ("device", m["device"]), ("space", m["space"]), ("table", m["table"] or "-"),
        ("precision", m["precision"]),
        ("samples", d["samples"]), ("MAPE", f"{d['mape']:.1%}"),
        ("within ±10%", f"{d['within_10pct']:.0%}"), ("within ±5%", f"{d['within_5pct']:.0%}"),
        ("Kendall tau", f"{d['kendall_tau']:.3f}"), ("mean error", f"{d['mean_rel_err']:+.1%}"),
        ("worst error", f"{d['max_abs_rel_err']:.1%}"), ("overhead", f"{m['overhead_ms']:.4f} ms"),
        ("uncalibrated", f"within ±10% {d['uncalibrated']['within_10pct']:.0%}, MAPE "
                         f"{d['uncalibrated']['mape']:.1%}"),
        ("calibration", m["calibration"]["model"] if m.get("calibration") else "none"),
        ("speed scale", f"x{m['speed_scale']:.3f}" + (
            f" ({m['drift']['kind']} re-timed"
            f"{' with the subnets' if m['drift'].get('interleaved') else ''}, spread "
            f"{m['drift'].get('spread', 0):.0%})" if m.get("drift") else "")),
        ("noise (median CV)", f"{d['median_cv']:.1%}"),
        ("protocol", _protocol_line(m["protocol"])),
        ("time", f"{m['seconds']:.1f} s"),
    ] + ([("plot", m["plot"])] if m.get("plot") else []), ("field", "value"))
    rows = table([(r["index"], r["arch_string"], f"{r['predicted_ms']:.3f}",
                   f"{r['measured_ms']:.3f}", f"{r['rel_err']:+.1%}") for r in d["rows"]],
                 ("#", "arch", "predicted ms", "measured ms", "error"))
    return head + "\n\n" + rows


@click.command("validate")
@click.option("--lut", "lut_path", required=True, metavar="FILE|SPEC",
              help="Table file (or a device spec whose profiled table is cached).")
@click.option("--device", default=None, metavar="SPEC",
              help="Where to measure (default: the device the table was built on).")
@click.option("--space", "space_name", default=None,
              help="Space of the table (needed only to pick a cached device table).")
@click.option("--samples", type=click.IntRange(min=2), default=30, show_default=True,
              help="Random subnets to measure end to end.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of archs and weights.")
@click.option("--resolutions", default=None, metavar="LIST",
              help="Sample only these input sizes (default: all of the table's).")
@click.option("--runs", type=click.IntRange(min=1), default=None,
              help="Timed runs per subnet per round (default: the table's).")
@click.option("--warmup", type=click.IntRange(min=0), default=None,
              help="Untimed runs (default: the table's).")
@click.option("--rounds", type=click.IntRange(min=1), default=None,
              help="Round-robin passes over the subnets, every run pooled (default: the "
                   "table protocol's network_rounds, 15).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Runtime threads (must be the table's: another count measures something "
                   "else and is refused).")
@estimator_option("Default: the table's; another is refused (it measures something else).")
@precision_option("Precision of the subnets timed (default: the table's). With a device "
                  "spec as --lut it picks that precision's cached table; a table of the "
                  "other precision is refused.")
@click.option("--plot", type=OutputPath("file"), default=None, metavar="FILE.png",
              help="Write a predicted-vs-measured scatter plot.")
@click.option("--out", type=OutputPath("file"), default=None, metavar="FILE.json",
              help="Also write the full JSON result to this file.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def validate(lut_path, device, space_name, samples, seed, resolutions, runs, warmup, rounds,
             threads, estimator, precision, plot, out, quiet, as_json) -> None:
    """Measure random full subnets end to end and compare with the table's predictions.

    Reports MAPE, the fraction within ±10%, Kendall's tau, and one row per subnet.
    """
    from luts.store import load_table
    from luts.table import LUTError
    from luts.validate import validate_lut

    precision = precision.lower() if precision else None
    t = load_table(lut_path, space=space_name, precision=precision,
                   what=f"--precision {precision}")
    if device is None:
        device = t.meta.get("device")
        if not device:
            raise LUTError("the table records no device; pass --device")
    res = parse_resolutions(resolutions, t.space)
    if plot is not None and not str(plot).lower().endswith((".png", ".svg", ".pdf")):
        raise click.BadParameter("plot file must end in .png, .svg or .pdf", param_hint="--plot")
    result = validate_lut(t, device, samples=samples, seed=seed, runs=runs, warmup=warmup,
                          rounds=rounds, threads=threads, estimator=estimator,
                          resolutions=res, plot=plot,
                          progress=not quiet and not as_json, precision=precision)
    for w in result["warnings"]:
        click.echo(f"warning: {w}", err=True)
    if out is not None:
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    emit(result, as_json, _human)
