"""``specialize`` and ``export``: turn a supernet into deployable artifacts."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click

from supernet import ArchConfig
from supernet.checkpoint import load_supernet
from supernet.errors import OfaDeployError

from .cli import atomic_write_text, config_option, emit, main, save_resolved_config, table


def _load_data(spec: str | None, supernet_name: str, echo):
    """``--data`` if given; for the bundled default, Fashion-MNIST when it is installed."""
    from supernet.training.data import DataError, load_dataset

    if spec == "none":
        return None
    if spec is None:
        if supernet_name != "default":
            return None
        try:
            return load_dataset("fashion-mnist")
        except DataError as exc:
            echo(f"warning: {exc} -- continuing without data (no BN calibration, no accuracy)")
            return None
    return load_dataset(spec)


def _load_predictor(path, fmt, space):
    from .accuracy import bundled_predictor_path, load_predictor

    if path is None:
        path = bundled_predictor_path(space)
        if path is None:
            raise OfaDeployError(f"no accuracy predictor is bundled for space {space.name}: pass "
                                 f"--predictor FILE (train one with `ofa-deploy predictor "
                                 f"collect` then `ofa-deploy predictor train`)")
    return load_predictor(path, space, format=fmt)


@main.command()
@config_option
@click.option("--target", "targets", multiple=True, default=("cpu",), show_default=True,
              help="Device spec (cpu, tflite:cpu, cuda:0, adb:NAME) or a built-in LUT target; "
                   "repeat for several scenarios.")
@click.option("--ms", "budgets", multiple=True, type=float, required=True,
              help="Latency budget in ms; repeat for one budget per target or several budgets.")
@click.option("--mflops", type=float, default=None,
              help="Also cap the subnet's MACs (millions of multiply-accumulates).")
@click.option("--supernet", "supernet_name", default="default", show_default=True,
              help="Checkpoint path or registered name.")
@click.option("--space", "space_name", default=None,
              help="Space of a reference-layout checkpoint (ours record it).")
@click.option("--lut", "lut_path", default=None, type=click.Path(dir_okay=False),
              help="Latency table to use instead of the target's cached one.")
@click.option("--predictor", "predictor_path", default=None, type=click.Path(dir_okay=False),
              help="Accuracy predictor (default: the one bundled for the space).")
@click.option("--predictor-format", default="auto", show_default=True,
              type=click.Choice(["auto", "ofa-deploy", "ofa-reference"]))
@click.option("--data", "data_spec", default=None,
              help="Data for BN calibration and accuracy: fashion-mnist[:DIR], imagefolder:PATH, "
                   "synthetic or none (default: Fashion-MNIST for the bundled default).")
@click.option("--calib-images", default=2000, show_default=True, type=click.IntRange(1))
@click.option("--eval-images", default=None, type=click.IntRange(1),
              help="Evaluate on the first N test images (default: all).")
@click.option("--finetune-epochs", default=0, show_default=True, type=click.IntRange(0))
@click.option("--formats", default="onnx,tflite", show_default=True,
              help="Artifacts to export (comma list of onnx, tflite).")
@click.option("--population", default=100, show_default=True, type=click.IntRange(2))
@click.option("--generations", default=500, show_default=True, type=click.IntRange(0))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--threads", default=None, type=click.IntRange(1),
              help="CPU threads for profiling/measuring (default: the LUT's).")
@click.option("--runs", default=50, show_default=True, type=click.IntRange(1))
@click.option("--warmup", default=10, show_default=True, type=click.IntRange(0))
@click.option("--out", "out_dir", default="runs/specialize", show_default=True,
              type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report(s) as JSON.")
@click.pass_context
def specialize(ctx, targets, budgets, mflops, supernet_name, space_name, lut_path,
               predictor_path, predictor_format, data_spec, calib_images, eval_images,
               finetune_epochs, formats, population, generations, seed, threads, runs, warmup,
               out_dir, as_json) -> None:
    """Search the best subnet for each (target, budget), then export and measure it.

    \b
    ofa-deploy specialize --target cpu --ms 15
    ofa-deploy specialize --target cpu --ms 5 --ms 10 --ms 20      # Pareto front, one dir each
    ofa-deploy specialize --target cpu --target adb:pixel --ms 10 --ms 40

    The target's latency table comes from --lut, a built-in target, or the profile cache; a
    missing table of a local target (cpu, tflite:cpu, cuda) is built on the fly. Writes
    model.onnx, model.tflite, model.json, report.json, report.md and plots into --out (one
    sub-directory per scenario plus summary.md when there are several).
    """
    from .export import parse_formats
    from .search import EvolutionConfig
    from .specialize import DataContext, make_scenarios
    from .specialize import specialize as run

    echo = (lambda s: click.echo(s, err=True))
    scenarios = make_scenarios(targets, budgets, mflops)
    fmts = parse_formats(formats)
    config = EvolutionConfig(population=population, generations=generations, seed=seed)
    net = load_supernet(supernet_name, space_name)
    net.eval()
    predictor = _load_predictor(predictor_path, predictor_format, net.space)
    ds = _load_data(data_spec, supernet_name, echo)
    save_resolved_config(ctx, out_dir)
    command = " ".join(shlex.quote(a) for a in ["ofa-deploy", *sys.argv[1:]])
    reports = run(net, predictor, scenarios, out_dir=out_dir, search_config=config,
                  data=DataContext(ds, calib_images, eval_images), formats=fmts,
                  lut_path=lut_path, threads=threads, runs=runs, warmup=warmup,
                  finetune_epochs=finetune_epochs, supernet_name=str(supernet_name),
                  command=command, echo=echo, progress=not as_json)

    def human(reps):
        rows = []
        for r in reps:
            m = r["measured_latency_ms"]
            acc = r["measured_accuracy"]
            rows.append((r["scenario"], f"{r['budget_ms']:g}", f"{r['predicted_latency_ms']:.3f}",
                         f"{m['median']:.3f} [{m['p10']:.3f}, {m['p90']:.3f}]",
                         "yes" if r["within_budget"] else "NO",
                         f"{r['predicted_accuracy']:.4f}", "n/a" if acc is None else f"{acc:.4f}",
                         f"{r['macs'] / 1e6:.1f}M", r["arch_string"]))
        return table(rows, ("scenario", "budget ms", "pred ms", "measured ms [p10, p90]",
                            "in budget", "pred acc", "test acc", "MACs", "arch")) + \
            f"\n\nreports in {out_dir}"

    emit(reports if len(reports) > 1 else reports[0], as_json,
         lambda d: human(d if isinstance(d, list) else [d]))


@main.command("export")
@click.option("--supernet", "supernet_name", default="default", show_default=True,
              help="Checkpoint path or registered name.")
@click.option("--space", "space_name", default=None,
              help="Space of a reference-layout checkpoint (ours record it).")
@click.option("--arch", required=True, metavar="FILE|min|max|STRING",
              help="The subnet: JSON file (e.g. a report.json), compact string, min, max, or "
                   "a reference net.config (file or directory; its space is recognised).")
@click.option("--format", "formats", default="onnx,tflite", show_default=True,
              help="Comma list of onnx, tflite.")
@click.option("--data", "data_spec", default=None,
              help="Data for BN calibration (default: Fashion-MNIST for the bundled default; "
                   "'none' to skip).")
@click.option("--calib-images", default=2000, show_default=True, type=click.IntRange(1))
@click.option("--out", "out_dir", default="runs/export", show_default=True,
              type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True)
def export_cmd(supernet_name, space_name, arch, formats, data_spec, calib_images, out_dir,
               as_json) -> None:
    """Export any subnet as model.onnx / model.tflite (each checked against torch) plus
    model.json metadata (arch, params, MACs, sizes, hashes)."""
    from supernet.bn import calibrate_bn, calibration_batches
    from supernet import extract_subnet

    from .export import export_artifacts, parse_formats
    from .specialize import subnet_metadata

    from supernet.net_config import net_config_space

    fmts = parse_formats(formats)
    if space_name is None:  # a net.config names its space: a reference checkpoint needs it
        sp = net_config_space(arch)
        space_name = None if sp is None else sp.name
    net = load_supernet(supernet_name, space_name).eval()
    a = ArchConfig.parse(arch, net.space)
    sub = extract_subnet(net, a).eval()
    ds = _load_data(data_spec, supernet_name, lambda s: click.echo(s, err=True))
    if ds is not None:
        calibrate_bn(sub, calibration_batches(ds.holdout, a.r, calib_images, 200,
                                              channels_last=False))
    arts = export_artifacts(sub, (1, 3, a.r, a.r), out_dir, fmts)
    meta = subnet_metadata(net.space, a, arts, supernet=str(supernet_name),
                           bn_calibrated=ds is not None)
    atomic_write_text(Path(out_dir) / "model.json", json.dumps(meta, indent=2))
    emit(meta, as_json, lambda m: table(
        [(f, v["path"], f"{v['bytes']:,}", f"{v['max_abs_diff']:.2e}") for f, v in m["files"].items()],
        ("format", "file", "bytes", "max |diff| vs torch")) +
        f"\narch {m['arch_string']}: {m['params']:,} params, {m['macs'] / 1e6:.1f}M MACs")
