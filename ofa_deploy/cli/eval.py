"""``eval``: BN-calibrated top-1 accuracy of one subnet of a supernet."""
from __future__ import annotations

import click

from ._common import DATA_HELP, emit, table, torch_device


@click.command(name="eval")
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
    from supernet import ArchConfig
    from supernet.bn import evaluate_subnet
    from supernet.checkpoint import load_supernet
    from supernet.training.data import load_dataset

    import time

    dev = torch_device(device)
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
        from ..evaluate import evaluate_arch

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
