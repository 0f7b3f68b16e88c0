"""``train``: progressive-shrinking training of an elastic supernet."""
from __future__ import annotations

import os

import click

from ._common import OutputPath, DATA_HELP, torch_device

# Kept in step with supernet.training.config.PHASES by a test; spelled out so --help needs no
# import of the trainer.
PHASE_NAMES = ("teacher", "kernel", "depth", "expand", "full")


@click.command()
@click.option("--space", "space_name", required=True, help="Search space (see `ofa-deploy spaces`).")
@click.option("--data", "data_spec", required=True, metavar="SPEC", help=DATA_HELP)
@click.option("--out", "out_dir", required=True, type=OutputPath("dir"),
              help="Run directory (checkpoints, logs, metrics, final supernet.pt).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML overriding fields of the space's default training config "
                   "(supernet/assets/train-<space>.yaml).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--phases", default=None, metavar="LIST",
              help=f"Comma-separated phases to run, in order (from {', '.join(PHASE_NAMES)}; default "
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
    from supernet import get_space
    from supernet.training.config import TrainConfig, parse_phases
    from supernet.training.data import load_dataset, parse_data_spec

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
    dev = torch_device(device)
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


