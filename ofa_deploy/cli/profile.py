"""``profile``: build a device's latency table for a space (resumable)."""
from __future__ import annotations

from typing import List, Optional

import click

from ._common import OutputPath, config_option, emit, estimator_option, precision_option, table


def parse_resolutions(value: "str | None", space) -> Optional[List[int]]:
    """``"160,192,224"`` -> [160, 192, 224]; ``all``/None -> None (every resolution). A value
    outside the space is a one-line usage error naming the valid ones."""
    if value is None or str(value).strip().lower() in ("", "all"):
        return None
    out = []
    for part in str(value).replace(" ", "").split(","):
        if not part:
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise click.BadParameter(f"{part!r} is not an integer resolution",
                                     param_hint="--resolutions") from None
    bad = [r for r in out if r not in space.resolutions]
    if bad or not out:
        raise click.BadParameter(
            f"{bad or value} not in space {space.name} (resolutions: "
            f"{', '.join(map(str, space.resolutions))})", param_hint="--resolutions")
    return sorted(set(out))


def _human(d: dict) -> str:
    rows = [("table", d["path"]), ("device", d["device"]), ("space", d["space"]),
            ("precision", d["precision"]),
            ("resolutions", ", ".join(map(str, d["resolutions"]))), ("ops", d["ops"]),
            ("timed this run", d["op_timings_this_run"]),
            ("models converted / from cache",
             f"{d['models_converted']} / {d['models_from_cache']}"),
            ("threads", d["threads"]), ("runs x rounds", f"{d['runs']} x {d['rounds']}"),
            ("estimator", d.get("estimator") or "-"),
            ("overhead", f"{d['overhead_ms']:.4f} ms"),
            ("build time", f"{d['build_seconds']:.1f} s"),
            ("max drift", f"{d['max_drift']:.1%}" if d["max_drift"] is not None else "-"),
            ("noise (median CV)", f"{d['median_cv']:.1%}" if d["median_cv"] is not None
             else "-"),
            ("entries re-timed (off their curve)", d.get("rechecked_entries") or 0)]
    c = d.get("calibration")
    if c:
        rows.append(("calibration", f"{c['model']} on {c['samples']} subnets: held-out MAPE "
                                    f"{c['heldout_mape']:.1%} (uncalibrated "
                                    f"{c['uncalibrated_mape']:.1%}), p90 x{c['p90_factor']:.3f}"))
        if c.get("remeasured"):
            rm = c["remeasured"]
            rows.append(("ops re-timed", f"held-out MAPE {rm['heldout_mape_before']:.1%} -> "
                                         f"{rm['heldout_mape_after']:.1%} ({rm['rounds']} "
                                         f"rounds)"))
    parts = [table(rows, ("field", "value"))]
    parts.append(table([(x["resolution"], f"{x['min_ms']:.3f}", f"{x['max_ms']:.3f}")
                        for x in d["latency_range"]], ("resolution", "min ms", "max ms")))
    return "\n\n".join(parts)


@click.command()
@click.option("--device", "device", required=True, metavar="SPEC",
              help="cpu (= ort:cpu), tflite:cpu, cuda[:N], adb:NAME.")
@click.option("--space", "space_name", required=True,
              help="Search space (see `ofa-deploy spaces`).")
@click.option("--resolutions", default=None, metavar="LIST",
              help="Comma-separated input sizes, or 'all' (default: every size of the space).")
@click.option("--out", type=OutputPath("file"), default=None,
              help="Table file (default: the per-device cache path `specialize` looks in).")
@click.option("--runs", type=click.IntRange(min=1), default=None,
              help="Timed runs per model per round (default: the measurement protocol's, 10).")
@click.option("--warmup", type=click.IntRange(min=0), default=None,
              help="Untimed runs before timing (default: the protocol's, 5).")
@click.option("--rounds", type=click.IntRange(min=1), default=None,
              help="Interleaved passes over all ops, every run pooled into one median "
                   "(default: the protocol's, 5).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Runtime threads (default: those of the table at --out if there is one, "
                   "else the measurement protocol's, 1). Recorded in the table; validate, "
                   "specialize and bench measure with the same.")
@click.option("--cache", "cache_policy", type=click.Choice(["warm", "cold"]), default="warm",
              show_default=True,
              help="warm: steady state, as an app running the model repeatedly sees it; "
                   "cold: caches flushed (--flush-mb) before every run.")
@estimator_option("Default: the estimator of the table at --out when resuming it, else "
                  "best-round-median; resuming a table built with another is refused.")
@click.option("--calibrate", "calib_samples", type=click.IntRange(min=0), default=20,
              show_default=True,
              help="After the op table, time this many random whole subnets through the "
                   "export path specialize ships and fit a correction (0: skip).")
@click.option("--cpus", default=None, metavar="LIST",
              help="Pin timing to these CPUs, e.g. 0 or 0-3 (host backends).")
@click.option("--convert-workers", type=click.IntRange(min=0), default=1, show_default=True,
              help="Processes converting op models ahead of timing (0: convert inline).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Op-model cache root (default: <cache>/ops).")
@click.option("--recheck/--no-recheck", default=True, show_default=True,
              help="Re-time entries far above the same op at other resolutions, and every op "
                   "once when the calibration shows the op sums disagree with whole networks "
                   "(held-out error over 3%).")
@click.option("--no-context", is_flag=True,
              help="Time ops alone (minus the overhead) instead of behind a producer layer.")
@click.option("--flush-mb", default="auto", show_default=True, metavar="MB|auto",
              help="With --cache cold: bytes flushed before each timed run (CPU backends); "
                   "'auto' = the bytes a typical subnet moves.")
@precision_option("int8: time every op quantized the way `export --precision int8` ships "
                  "it (ONNX QDQ / full-integer TFLite, calibrated on seeded random inputs); "
                  "the table is kept apart from the fp32 one (default file <space>-int8.json). "
                  "fp16 (TFLite devices: op models with fp16 weights as `export --precision "
                  "fp16` ships them; cuda: a .half() copy; refused on cpu/onnxruntime): "
                  "<space>-fp16.json.",
                  default="fp32")
@click.option("--fresh", is_flag=True, help="Ignore an existing (partial) table at --out.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of op-model weights.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@config_option
def profile(device, space_name, resolutions, out, runs, warmup, rounds, threads, cache_policy,
            estimator, calib_samples, cpus,
            convert_workers, cache_dir, recheck, no_context, flush_mb, precision, fresh, seed,
            quiet,
            as_json) -> None:
    """Time every op a space can run on DEVICE and write its latency table.

    The table is saved after every op: interrupt it and run the same command again to resume.
    Converted op models are cached (shared across devices of one format), so a second device
    or a rebuild skips conversion.
    """
    from luts.builder import build_lut, raw_path
    from luts.store import default_lut_path
    from profilers.base import DeviceSpec
    from supernet.op_families import resolve_space

    spec = DeviceSpec.parse(device)
    space = resolve_space(space_name)[1]
    res = parse_resolutions(resolutions, space)
    precision = precision.lower()
    path = out if out is not None else default_lut_path(spec, space.name, precision)
    flush: "int | str" = "auto"
    if str(flush_mb).strip().lower() != "auto":
        try:
            flush = int(round(float(flush_mb) * 2**20))
        except ValueError:
            flush = -1
        if flush < 0:
            raise click.BadParameter(f"{flush_mb!r} is not a size in MB or 'auto'",
                                     param_hint="--flush-mb")
    if threads is None and not fresh:
        threads = _existing_threads(path)
        if threads is not None and not (quiet or as_json):
            # e.g. the table `specialize` built with 1 thread: resume/refine it, not fail
            click.echo(f"note: {path} exists, built with {threads} thread(s): using them "
                       f"(--threads N --fresh rebuilds with other settings)", err=True)
    build_kw = dict(resolutions=res, out=path, runs=runs, warmup=warmup, threads=threads,
                    cache=cache_policy, estimator=estimator, cpus=cpus, cache_dir=cache_dir,
                    progress=not quiet and not as_json, context=not no_context,
                    convert_workers=convert_workers, seed=seed, flush_bytes=flush,
                    precision=precision, recheck=recheck,
                    on_warn=(lambda msg: click.echo(f"warning: {msg}", err=True))
                    if quiet or as_json else None)
    t = build_lut(space, spec, rounds=rounds, fresh=fresh, **build_kw)
    if calib_samples > 0:
        from luts.calibrate import REMEASURE_HELDOUT_MAPE, calibrate_or_remeasure

        # a second pass extends the same file: never --fresh again
        t = calibrate_or_remeasure(
            t, spec, lambda r: build_lut(space, spec, rounds=r, fresh=False, **build_kw),
            samples=calib_samples, seed=seed, progress=not quiet and not as_json,
            echo=lambda msg: click.echo(msg, err=True),
            max_heldout_mape=None if not recheck else REMEASURE_HELDOUT_MAPE)
    m = t.meta
    noise = m.get("noise") or {}
    if noise.get("warning"):
        click.echo(f"warning: {noise['warning']}", err=True)
    cal = t.calibration
    ranges = []
    for r in t.resolutions:
        lo, hi = t.min_max([r])
        ranges.append({"resolution": r, "min_ms": lo, "max_ms": hi})
    data = {
        "path": str(path), "progress_file": str(raw_path(path)), "device": str(spec),
        "space": space.name, "precision": t.precision, "resolutions": list(t.resolutions),
        "ops": len(t.entries),
        "op_timings_this_run": m.get("op_timings_this_run"),
        "models_converted": m.get("models_converted"),
        "models_from_cache": m.get("models_from_cache"), "threads": m.get("threads"),
        "runs": m.get("runs"), "warmup": m.get("warmup"), "rounds": m.get("rounds"),
        "method": m.get("method"), "flush_bytes": m.get("flush_bytes"),
        "estimator": (m.get("protocol") or {}).get("estimator"),
        "overhead_ms": t.overhead_ms,
        "build_seconds": m.get("build_seconds"),
        "max_drift": (m.get("drift") or {}).get("max_abs_drift"),
        "loadavg": [m.get("loadavg_start"), m.get("loadavg_end")],
        "latency_range": ranges,
        "protocol": m.get("protocol"),
        "median_cv": noise.get("median_cv"),
        "calibration": None if cal is None else {
            k: cal.get(k) for k in ("model", "scale", "overhead_ms", "p90_factor", "samples",
                                    "heldout_mape", "heldout_within_10pct",
                                    "uncalibrated_mape", "uncalibrated_within_10pct",
                                    "candidates", "remeasured")},
        "rechecked_entries": (m.get("recheck") or {}).get("suspects"),
    }
    emit(data, as_json, _human)


def _existing_threads(path) -> "int | None":
    """The thread count recorded in the table at ``path``, if one is there."""
    import json
    from pathlib import Path

    try:
        meta = json.loads(Path(path).read_text(encoding="utf-8")).get("meta") or {}
    except (OSError, ValueError, AttributeError):
        return None  # no table (or an unreadable one, which build_lut reports)
    n = meta.get("threads")
    return n if isinstance(n, int) and n >= 1 else None
