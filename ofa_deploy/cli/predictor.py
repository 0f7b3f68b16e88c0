"""``predictor collect`` / ``predictor train``: the accuracy predictor of a trained supernet."""
from __future__ import annotations

import subprocess
import sys

import click

from supernet.errors import OfaDeployError

from ._common import OutputPath, emit, table


@click.group()
def predictor() -> None:
    """Collect (arch, accuracy) data from a supernet and train the accuracy predictor."""


def _parse_res(text, space):
    if text is None:
        return None
    try:
        res = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma list of integers",
                                 param_hint="--resolutions")
    bad = [r for r in res if r not in space.resolutions]
    if bad or not res:
        raise click.BadParameter(f"{bad or text} not in the space's resolutions "
                                 f"{list(space.resolutions)}", param_hint="--resolutions")
    return res


@predictor.command()
@click.option("--supernet", "supernet_name", default="default", show_default=True)
@click.option("--space", "space_name", default=None, help="For reference-layout checkpoints.")
@click.option("--data", "data_spec", required=True, help="fashion-mnist[:DIR], imagefolder:PATH, synthetic")
@click.option("--samples", required=True, type=click.IntRange(1), help="Archs to evaluate in all.")
@click.option("--out", required=True, type=OutputPath("file"), help="JSON-lines file (appended).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--resolutions", default=None, help="Comma list (default: all of the space).")
@click.option("--calib-images", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--eval-images", default=None, type=click.IntRange(1),
              help="Held-out images per arch (default: the whole held-out split).")
@click.option("--shard", default="0/1", show_default=True,
              help="K/N: this process evaluates archs i with i %% N == K.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Start N processes (shards) here.")
@click.option("--threads", default=None, type=click.IntRange(1), help="torch threads per process.")
@click.option("--json", "as_json", is_flag=True)
def collect(supernet_name, space_name, data_spec, samples, out, seed, resolutions, calib_images,
            eval_images, shard, workers, threads, as_json) -> None:
    """Evaluate random subnets (BN re-calibrated) on the held-out split; resumable."""
    import numpy as np
    import torch

    from supernet.checkpoint import load_supernet
    from supernet.training.data import load_dataset

    from ..collect import collect as run
    from ..collect import parse_shard, read_records

    k, n = parse_shard(shard)
    if workers > 1:
        if n != 1:
            raise click.UsageError("use either --workers or --shard, not both")
        base = [sys.executable, "-m", "ofa_deploy", "predictor", "collect",
                "--supernet", str(supernet_name), "--data", data_spec, "--samples", str(samples),
                "--out", str(out), "--seed", str(seed), "--calib-images", str(calib_images)]
        for flag, val in (("--space", space_name), ("--resolutions", resolutions),
                          ("--eval-images", eval_images), ("--threads", threads)):
            if val is not None:
                base += [flag, str(val)]
        procs = [subprocess.Popen(base + ["--shard", f"{w}/{workers}", "--json"],
                                  stdout=subprocess.DEVNULL) for w in range(workers)]
        rcs = [p.wait() for p in procs]
        if any(rcs):
            raise OfaDeployError(f"collect workers exited with {rcs}")
    else:
        if threads:
            torch.set_num_threads(threads)
        net = load_supernet(supernet_name, space_name).eval()
        res = _parse_res(resolutions, net.space)
        ds = load_dataset(data_spec)
        from supernet.progress import progress_bar

        bar = progress_bar(None, desc=f"collect shard {k}/{n}", unit="arch") if not as_json \
            else None

        def prog(done, total):
            if bar is not None:
                bar.total = total
                bar.n = done
                bar.refresh()

        run(net, ds, out, samples=samples, seed=seed, shard=(k, n), resolutions=res,
            calib_images=calib_images, eval_images=eval_images, progress=prog)
        if bar is not None:
            bar.close()
    recs = read_records(out)
    accs = np.array([r["accuracy"] for r in recs]) if recs else np.zeros(0)
    summary = {"file": str(out), "records": len(recs),
               "accuracy_min": float(accs.min()) if len(accs) else None,
               "accuracy_max": float(accs.max()) if len(accs) else None,
               "accuracy_mean": float(accs.mean()) if len(accs) else None}
    emit(summary, as_json, lambda d: table(d.items(), ("field", "value")))


@predictor.command()
@click.option("--data", "data_file", required=True, type=click.Path(dir_okay=False, exists=True),
              help="JSON-lines file from `predictor collect`.")
@click.option("--out", required=True, type=OutputPath("file"))
@click.option("--space", "space_name", default=None, help="Default: from the records.")
@click.option("--hidden", default="400,400,400", show_default=True)
@click.option("--epochs", default=300, show_default=True, type=click.IntRange(1))
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--val-fraction", default=0.2, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True))
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--json", "as_json", is_flag=True)
def train(data_file, out, space_name, hidden, epochs, lr, val_fraction, seed, as_json) -> None:
    """Fit the MLP accuracy predictor (Adam); report held-out RMSE and Kendall tau."""
    from supernet import ArchConfig, get_space

    from ..accuracy import AccuracyPredictor, ArchEncoder
    from ..collect import read_records

    recs = read_records(data_file)
    if len(recs) < 10:
        raise OfaDeployError(f"{data_file} holds {len(recs)} records; need at least 10")
    names = {r.get("space") for r in recs} - {None}
    if space_name is None:
        if len(names) != 1:
            raise click.UsageError("records name no single space: pass --space")
        space_name = names.pop()
    space = get_space(space_name)
    archs = [ArchConfig.from_dict(r["arch"], space) for r in recs]
    accs = [float(r["accuracy"]) for r in recs]
    try:
        hid = [int(h) for h in hidden.split(",")]
    except ValueError:
        raise click.BadParameter(f"{hidden!r} is not a comma list of integers", param_hint="--hidden")
    enc = ArchEncoder.for_space(space, sorted({a.r for a in archs} | set(space.resolutions)))
    pred = AccuracyPredictor(enc, hid, space=space, seed=seed,
                             metadata={"data": str(data_file), "records": len(recs)})
    rep = pred.fit(archs, accs, epochs=epochs, lr=lr, seed=seed, val_fraction=val_fraction)
    pred.metadata["fit"] = rep.to_dict()
    pred.save(out)
    data = {"out": str(out), "space": space.name, **rep.to_dict()}
    emit(data, as_json, lambda d: table(d.items(), ("field", "value")))
