"""``bench``: CI latency benchmarks of exported artifacts on attached devices."""
from __future__ import annotations

import click

from ._common import OutputPath, config_option, estimator_option, table


@click.command()
@click.argument("paths", nargs=-1, metavar="[PATH]...")
@click.option("--artifacts", "-a", multiple=True, metavar="PATH",
              help="A .onnx or .tflite file, or a directory holding them (searched recursively, "
                   "e.g. a specialize output). Repeatable; positional PATHs are added too.")
@click.option("--devices", "-d", "device_specs", multiple=True, metavar="SPEC[,SPEC...]",
              help="Devices to measure on: cpu, ort:cpu, tflite:cpu, cuda:0, adb:NAME, or 'all' "
                   "(every online device of `ofa-deploy devices`). Repeatable.")
@click.option("--runs", type=click.IntRange(min=1), default=None,
              help="Timed runs per round (default: the shared measurement protocol's, 10).")
@click.option("--warmup", type=click.IntRange(min=0), default=None,
              help="Untimed warm-up runs per round (default: the protocol's, 5).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Threads for the host CPU backends (cpu, tflite:cpu; default: the "
                   "protocol's, 1, as tables and specialize use). Phones use the registry's.")
@estimator_option("Default: the baseline's when --baseline is given, else best-round-median; a "
                  "baseline measured with another is refused.")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None,
              help="An earlier --json file; results slower than it by more than --tolerance fail.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=10.0, show_default=True,
              metavar="PCT", help="Allowed slowdown against the baseline, in percent.")
@click.option("--min-delta-ms", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Ignore slowdowns smaller than this many ms (jitter on tiny models).")
@click.option("--json", "json_path", type=OutputPath("file"), default=None,
              help="Write results here (rewritten atomically after each result).")
@click.option("--junit", "junit_path", type=OutputPath("file"), default=None,
              help="Write JUnit XML (regression = failure, device error = error).")
@click.option("--markdown", "markdown_path", type=OutputPath("file"), default=None,
              help="Write a Markdown summary (e.g. for $GITHUB_STEP_SUMMARY).")
@click.option("--resume", is_flag=True,
              help="Keep measured results already in the --json file; measure the rest.")
@click.option("--quiet", "-q", is_flag=True, help="No per-result progress lines.")
@config_option
@click.pass_context
def bench(ctx, paths, artifacts, device_specs, runs, warmup, threads, estimator, baseline,
          tolerance,
          min_delta_ms, json_path, junit_path, markdown_path, resume, quiet) -> None:
    """Measure every artifact on every device; compare with a baseline for CI.

    \b
    Artifacts map to devices by format: .onnx runs on cpu/ort:*, .tflite on tflite:cpu and
    adb:*; other pairs are listed as skipped with the reason. The input shape is read from
    each model file. Devices run in parallel, one measurement at a time per device (host CPU
    backends share one lane).

    \b
    Baseline results are matched per device by the artifact's path relative to its root plus
    its sha256 (a renamed directory still matches; then by sha256 alone, then by name alone).

    \b
    Exit status: 0 all good; 1 a regression beyond --tolerance, or a device/measurement error
    (errors keep the results already measured).
    """
    from .. import bench as B

    if resume and not json_path:
        raise click.UsageError("--resume needs --json FILE (the results to resume from)")
    arts = B.collect_artifacts(list(artifacts) + list(paths))
    if not device_specs:
        raise click.UsageError("give --devices SPEC[,SPEC...] (see `ofa-deploy devices`)")
    devs = B.resolve_devices(device_specs)

    def progress(r: B.BenchResult, done: int, total: int) -> None:
        if quiet:
            return
        s = r.stats
        what = (f"{s.median_ms:.3f} ms (p10 {s.p10_ms:.3f}, p90 {s.p90_ms:.3f})" if s
                else f"{r.status}: {r.reason}")
        if r.status == "regressed":
            what += f"  REGRESSED {r.baseline['delta_pct']:+.1f}%"
        label = f" ({r.artifact.label})" if r.artifact.label else ""
        click.echo(f"[{done}/{total}] {r.device:<14} {r.artifact.name}{label}  {what}", err=True)

    rep = B.run_bench(arts, devs, runs=runs, warmup=warmup, threads=threads, estimator=estimator,
                      baseline=baseline,
                      tolerance_pct=tolerance, min_delta_ms=min_delta_ms, json_path=json_path,
                      resume=resume, on_result=progress)
    if junit_path:
        B.write_junit(junit_path, rep)
    if markdown_path:
        B.write_markdown(markdown_path, rep)

    click.echo(table(B.result_rows(rep), B.RESULT_HEADERS))
    click.echo(f"measured with: {rep.meta['protocol_text']}")
    reg, err = rep.by_status("regressed"), rep.by_status("error")
    if reg:
        click.echo(f"\nRegressions (slower than baseline by more than {tolerance:g}%):")
        click.echo(table([(r.artifact.name, r.device, B.fmt_ms(r.stats.median_ms),
                           B.fmt_ms(r.baseline["median_ms"]), B.fmt_pct(r.baseline["delta_pct"]),
                           r.baseline["match"]) for r in reg],
                         ("artifact", "device", "median ms", "baseline ms", "change", "matched")))
    if err:
        click.echo("\nErrors:")
        click.echo(table([(r.artifact.name, r.device, r.reason) for r in err],
                         ("artifact", "device", "error")))
    if rep.unmatched_baseline:
        click.echo("\nBaseline entries with no result this run: " + ", ".join(
            f"{b['artifact']} on {b['device']}" for b in rep.unmatched_baseline))
    c = rep.counts
    summary = (f"{c['ok']} ok, {c['regressed']} regressed, {c['error']} errors, "
               f"{c['skipped']} skipped")
    if rep.failed:
        click.echo(f"FAILED: {summary}", err=True)
        ctx.exit(1)
    click.echo(f"passed: {summary}", err=True)
