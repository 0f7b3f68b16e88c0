"""``specialize``: search the best subnet per (target, budget), then export and measure it."""
from __future__ import annotations

import shlex
import sys

import click

from ._common import (OutputPath, check_positive, config_option, emit, estimator_option,
                      given_flags, load_data, load_predictor_for, output_dir_guard,
                      save_resolved_config, table)


@click.command()
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
@click.option("--precision", "precision", default="fp32", show_default=True,
              help="fp32, int8 or fp32,int8 (both, side by side). int8 searches an int8 latency "
                   "table with the float predictor minus the fitted int8 accuracy drop, ships "
                   "int8 files calibrated on --quant-images training images (needs --data) and "
                   "measures their accuracy in their own runtimes.")
@click.option("--quant-images", default=256, show_default=True, type=click.IntRange(1),
              help="Held-out training images that calibrate the int8 quantization (the "
                   "bundled int8 drop model was fitted with 256).")
@click.option("--int8-min-agreement", default=0.5, show_default=True,
              type=click.FloatRange(0, 1),
              help="Refuse an int8 file that picks the float subnet's class on a smaller share "
                   "of the calibration images (0 for random-weight supernets).")
@click.option("--population", default=None, type=click.IntRange(2),
              help="Archs per search island (default: the search's, 200).")
@click.option("--generations", default=None, type=click.IntRange(0),
              help="Search generations (default: the search's, 75).")
@click.option("--islands", default=None, type=click.IntRange(1),
              help="Independent search populations evolved together; the best wins "
                   "(default: the search's, 8, halved to 4 after 20 generations and to 3 "
                   "after 40).")
@click.option("--aging-islands", default=None, type=click.IntRange(0),
              help="Aging-evolution islands beside the others (default: the search's, 1; "
                   "0 for the other islands alone, e.g. with a small --population/"
                   "--generations).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--threads", default=None, type=click.IntRange(1),
              help="CPU threads for profiling/measuring (default: the LUT's; another count "
                   "than the LUT's is refused).")
@click.option("--runs", default=None, type=click.IntRange(1),
              help="Timed runs per round (default: the LUT's measurement protocol).")
@click.option("--warmup", default=None, type=click.IntRange(0),
              help="Untimed runs per round (default: the LUT's measurement protocol).")
@estimator_option("Default: the LUT's; another than the LUT's is refused (a missing local "
                  "LUT is profiled with it).")
@click.option("--latency-quantile", type=click.Choice(["50", "90"]), default="50",
              show_default=True,
              help="Which measured figure must fit the budget: the median (50) or p90 (90).")
@click.option("--max-rounds", type=click.IntRange(1), default=3, show_default=True,
              help="Search -> export -> measure rounds of the closed loop.")
@click.option("--out", "out_dir", default="runs/specialize", show_default=True,
              type=OutputPath("dir"))
@click.option("--json", "as_json", is_flag=True, help="Print the report(s) as JSON.")
@click.pass_context
def specialize(ctx, targets, budgets, mflops, supernet_name, space_name, lut_path,
               predictor_path, predictor_format, data_spec, calib_images, eval_images,
               finetune_epochs, formats, precision, quant_images, int8_min_agreement,
               population, generations, islands, aging_islands, seed, threads, runs, warmup,
               estimator, latency_quantile, max_rounds, out_dir, as_json) -> None:
    """Search the best subnet for each (target, budget), then export and measure it.

    \b
    ofa-deploy specialize --target cpu --ms 15
    ofa-deploy specialize --target cpu --ms 5 --ms 10 --ms 20      # Pareto front, one dir each
    ofa-deploy specialize --target cpu --target adb:pixel --ms 10 --ms 40
    ofa-deploy specialize --target cpu --ms 2 --precision fp32,int8   # fp32 vs int8

    The target's latency table comes from --lut, a built-in target, or the profile cache; a
    missing table of a local target (cpu, tflite:cpu, cuda) is built on the fly. Writes
    model.onnx, model.tflite, model.json, report.json, report.md and plots into --out (one
    sub-directory per scenario plus summary.md when there are several).

    --precision fp32,int8 runs each (target, budget) at both precisions (dirs ort-cpu-2ms
    and ort-cpu-2ms-int8); each report.json has "precision" and a "by_precision" section (predicted
    and measured latency, test accuracy, file size per format, side by side), also in
    report.md and summary.md. An int8 search needs an int8 table (`ofa-deploy profile
    --precision int8`; a local target builds it on the fly).
    """
    from supernet.checkpoint import load_supernet
    from supernet.errors import OfaDeployError
    from supernet.resnet_space import RESNET_SPACES

    from ..export import parse_formats
    from ..search import EvolutionConfig
    from ..specialize import DataContext, make_scenarios, parse_precisions
    from ..specialize import specialize as run

    if space_name in RESNET_SPACES:
        # its search, extraction and export exist; the closed loop (BN calibration data,
        # measured rounds, reports) is MobileNet-only so far
        raise OfaDeployError(
            f"specialize does not support space {space_name} (of the ResNet50 family) yet: "
            f"search it with `ofa-deploy search --space {space_name} --target TARGET --ms MS` "
            f"and export the winner with `ofa-deploy export`")
    echo = (lambda s: click.echo(s, err=True))
    for b in budgets:  # usage errors exit 2 here as in `search`
        check_positive(b, "--ms")
    check_positive(mflops, "--mflops")
    precisions = parse_precisions(precision)
    scenarios = make_scenarios(targets, budgets, mflops, precisions)
    fmts = parse_formats(formats)
    # the search's own defaults unless given: one measured default for search and specialize
    config = EvolutionConfig(seed=seed, **given_flags(population=population,
                                                     generations=generations, islands=islands,
                                                     aging_islands=aging_islands))
    net = load_supernet(supernet_name, space_name)
    net.eval()
    predictor = load_predictor_for(predictor_path, predictor_format, net.space)
    ds = load_data(data_spec, supernet_name, echo)
    if "int8" in precisions and ds is None:  # before the supernet's tables are built
        from supernet.quantize import QuantizeError

        raise QuantizeError("--precision int8 needs calibration images: give --data (training "
                            "images; the test split is never used)")
    spec = None if ds is None else (data_spec or "fashion-mnist")  # recorded for `export`
    command = " ".join(shlex.quote(a) for a in ["ofa-deploy", *sys.argv[1:]])
    with output_dir_guard(out_dir):
        reports = run(net, predictor, scenarios, out_dir=out_dir, search_config=config,
                      data=DataContext(ds, calib_images, eval_images, spec=spec,
                                       int8_min_agreement=int8_min_agreement,
                                       quant_images=quant_images),
                      formats=fmts,
                      lut_path=lut_path, threads=threads, runs=runs, warmup=warmup,
                      estimator=estimator,
                      finetune_epochs=finetune_epochs, supernet_name=str(supernet_name),
                      command=command, echo=echo, progress=not as_json,
                      latency_quantile=int(latency_quantile), max_rounds=max_rounds)
        save_resolved_config(ctx, out_dir)

    def human(reps):
        from ..report import budget_text

        rows = []
        for r in reps:
            m = r["measured_latency_ms"]
            acc = r["measured_accuracy"]
            meas = ("n/a" if m["median"] is None else
                    f"{m['median']:.3f} [{m['p10']:.3f}, {m['p90']:.3f}]")
            rows.append((r["scenario"], r.get("precision", "fp32"), f"{r['budget_ms']:g}", f"{r['predicted_latency_ms']:.3f}",
                         meas, "NO" if r["within_budget"] is False else budget_text(r["within_budget"]),
                         len(r["rounds"]),
                         f"{r['predicted_accuracy']:.4f}", "n/a" if acc is None else f"{acc:.4f}",
                         f"{r['macs'] / 1e6:.1f}M", r["arch_string"]))
        return table(rows, ("scenario", "precision", "budget ms", "pred ms", "measured ms [p10, p90]",
                            "in budget", "rounds", "pred acc", "test acc", "MACs", "arch")) + \
            f"\n\nreports in {out_dir}"

    emit(reports if len(reports) > 1 else reports[0], as_json,
         lambda d: human(d if isinstance(d, list) else [d]))


