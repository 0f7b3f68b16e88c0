"""``train`` (progressive shrinking) and ``eval`` (BN-calibrated accuracy of one subnet)."""
from __future__ import annotations

import os

import click

from supernet import ArchConfig, get_space
from supernet.bn import evaluate_subnet
from supernet.checkpoint import load_supernet
from supernet.training.data import load_dataset, parse_data_spec
from supernet.training.config import PHASES, TrainConfig, parse_phases

from .cli import emit, main, table

DATA_HELP = ("fashion-mnist[:DIR] (Debian package dataset-fashion-mnist), imagefolder:PATH "
             "(train/ and val/ class folders) or synthetic.")


def _device(name: str) -> str:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine", param_hint="--device")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise click.BadParameter(f"{name!r}: use auto, cpu, cuda or cuda:N", param_hint="--device")
    return name


@main.command()
@click.option("--space", "space_name", required=True, help="Search space (see `ofa-deploy spaces`).")
@click.option("--data", "data_spec", required=True, metavar="SPEC", help=DATA_HELP)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory (checkpoints, logs, metrics, final supernet.pt).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML overriding fields of the space's default training config "
                   "(supernet/assets/train-<space>.yaml).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--phases", default=None, metavar="LIST",
              help=f"Comma-separated phases to run, in order (from {', '.join(PHASES)}; default "
                   "teacher,kernel,depth,expand).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(1, 512), default=None,
              help="CPU threads for torch (default: torch's choice).")
@click.option("--no-progress", is_flag=True, help="No progress bars (logs still go to log.jsonl).")
def train(space_name, data_spec, out_dir, config_file, resume, phases, device, threads,
          no_progress) -> None:
    """Train an elastic supernet with progressive shrinking (OFA).

    \b
    Phases: teacher (largest network), kernel (elastic kernel), depth (two stages), expand
    (two stages, channels re-sorted at each); `full` samples everything from the start.
    Launch data-parallel runs with `torchrun --nproc_per_node N -m ofa_deploy train ...`
    (gloo on CPU, nccl on CUDA). A killed run continues exactly with --resume.

    \b
    Example (a small supernet end to end on CPU):
      ofa-deploy train --space ofa-mbv3-tiny --data fashion-mnist --out runs/fmnist
      ofa-deploy eval --supernet runs/fmnist/supernet.pt --arch max --data fashion-mnist
    """
    import torch

    from supernet.training.trainer import Trainer
    from supernet.training.distributed import init_distributed

    space = get_space(space_name)
    saved = None
    if resume and os.path.exists(os.path.join(out_dir, "config.yaml")):
        saved = _saved_run(out_dir)
    # A resumed run keeps its own config and phases unless they are given again (then they
    # must match the run's, which the trainer checks).
    if saved is not None and phases is None:
        phases = saved.get("phases")
    phase_list = parse_phases(phases)
    if saved is not None and config_file is None:
        cfg = TrainConfig(saved.get("config"), space)
    else:
        cfg = TrainConfig.for_space(space, config_file=config_file)
    if threads:
        torch.set_num_threads(threads)
    dev = _device(device)
    spec = parse_data_spec(data_spec)
    dataset = load_dataset(spec, holdout=cfg["data"]["holdout"])
    ctx = init_distributed(dev)
    try:
        if ctx.enabled and dev.startswith("cuda"):
            dev = f"cuda:{ctx.local_rank}"
        trainer = Trainer(space, dataset, cfg, out_dir, phases=phase_list, data_spec=str(spec),
                          device=dev, dist=ctx, progress=not no_progress)
        summary = trainer.run(resume=resume)
    finally:
        ctx.close()
    if ctx.is_main:
        click.echo(f"done: {summary['global_step']} steps, {summary['elapsed_s']:.0f} s of "
                   f"training; supernet: {os.path.join(out_dir, 'supernet.pt')}, metrics: "
                   f"{os.path.join(out_dir, 'metrics.jsonl')}")


def _saved_run(out_dir: str) -> dict:
    import yaml

    from supernet.training.config import ConfigError

    path = os.path.join(out_dir, "config.yaml")
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the run's saved config {path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
        raise ConfigError(f"{path} is not a run config written by `ofa-deploy train`")
    return doc


@main.command(name="eval")
@click.option("--supernet", "supernet_src", required=True, metavar="CKPT|default",
              help="A supernet checkpoint or a registered name (default: the bundled one).")
@click.option("--space", "space_name", default=None,
              help="Space of a reference-layout checkpoint (ours record it).")
@click.option("--arch", default="max", show_default=True, metavar="FILE|min|max|STRING",
              help="The subnet: JSON file, inline JSON, compact string, min or max.")
@click.option("--resolution", type=int, default=None, help="Override the arch's resolution.")
@click.option("--data", "data_spec", required=True, metavar="SPEC", help=DATA_HELP)
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="test: the dataset's test set; val: the fixed held-out part of training.")
@click.option("--calib-images", type=click.IntRange(1), default=2000, show_default=True,
              help="Held-out training images used to re-calibrate BN statistics.")
@click.option("--images", type=click.IntRange(1), default=None,
              help="Evaluate on the first N images of the split only.")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def eval_cmd(supernet_src, space_name, arch, resolution, data_spec, split, calib_images, images,
             batch_size, device, as_json) -> None:
    """BN-calibrate one subnet of a supernet and measure its top-1 accuracy."""
    import time

    dev = _device(device)
    net = load_supernet(supernet_src, space_name)
    space = net.space
    a = ArchConfig.parse(arch, space)
    if resolution is not None:
        a = a.with_resolution(resolution).validate(space)
    ds = load_dataset(data_spec)
    if ds.num_classes != space.num_classes:
        raise click.UsageError(f"{ds.name} has {ds.num_classes} classes but the supernet's "
                               f"space {space.name} has {space.num_classes}")
    net = net.to(dev)
    t0 = time.time()
    if dev == "cpu":
        # onnxruntime runs these depthwise-heavy subnets several times faster than torch
        from .evaluate import evaluate_arch

        res = evaluate_arch(net, a, ds.split(split), ds.holdout, calib_images=calib_images,
                            images=images, batch_size=batch_size)
    else:
        res = evaluate_subnet(net, a, ds.split(split), ds.holdout, calib_images=calib_images,
                              images=images, batch_size=batch_size, device=dev,
                              amp=dev.startswith("cuda"))
    data = {"accuracy": res["accuracy"], "samples": res["samples"], "loss": res["loss"],
            "backend": "onnxruntime" if dev == "cpu" else "torch",
            "split": split, "data": data_spec, "supernet": str(supernet_src),
            "arch": a.to_dict(), "arch_string": a.to_string(space),
            "calib_images": min(calib_images, len(ds.holdout)),
            "seconds": round(time.time() - t0, 2)}
    emit(data, as_json, lambda d: table(
        [("accuracy", f"{d['accuracy']:.4f}"), ("samples", d["samples"]),
         ("split", d["split"]), ("arch", d["arch_string"])], ("field", "value")))
