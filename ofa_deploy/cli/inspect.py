"""``inspect``: the size of a space and the cost (params, MACs) of one of its subnets."""
from __future__ import annotations

import click

from ._common import emit, table


def _fmt_m(v: int) -> str:
    return f"{v / 1e6:.1f}M"


@click.command()
@click.option("--space", "space_name", default=None, help="Search space name (see `ofa-deploy spaces`)."
              " Optional with --supernet (read from the checkpoint).")
@click.option("--arch", default=None, metavar="FILE|min|max|STRING",
              help="An arch: JSON file, inline JSON, compact string, min/max, or a reference "
                   "net.config (file or directory; its space is recognised).")
@click.option("--resolution", type=int, default=None,
              help="Override the arch's input resolution.")
@click.option("--supernet", default=None, metavar="CKPT|NAME",
              help="A checkpoint path or registered name; its parameters are counted too.")
@click.option("--target", default=None, metavar="FILE|SPEC",
              help="Also predict --arch's latency with this latency table (a file, a built-in "
                   "table or a device spec whose table is cached), with a per-op breakdown.")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="Costliest ops to list with --target.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def inspect(space_name, arch, resolution, supernet, target, top, as_json) -> None:
    """Size of a space and cost (params, MACs) of one of its subnets.

    MACs are multiply-accumulates counted the reference OFA way (convolutions, linears and SE;
    not BN, activations or pooling), computed analytically without building the subnet. With
    --target, the arch's predicted latency (calibrated, p90) and where it goes, op by op.
    """
    from supernet import ArchConfig, arch_cost, get_space, space_stats
    from supernet.checkpoint import load_supernet
    from supernet.net_config import net_config_space
    from supernet.resnet_space import RESNET_SPACES, inspect_resnet

    if space_name is None and supernet is None and arch is not None:
        found = net_config_space(arch)  # a MobileNet or a ResNet space
        space_name = None if found is None else found.name
    if space_name is None and supernet is None:
        raise click.UsageError("give --space NAME (or --supernet CKPT, or --arch net.config)")
    net = None
    if space_name in RESNET_SPACES and supernet is None:  # the bottleneck family
        data = inspect_resnet(space_name, arch, resolution)
        if target is not None:
            if arch is None:
                raise click.UsageError("--target needs --arch")
            from luts.table import load_table
            from supernet.resnet_space import ResNetArch

            a = ResNetArch.from_dict(data["arch"], space_name)  # --resolution applied
            data["latency"] = load_table(target, space=space_name).explain(a, top=top)
        arch = resolution = target = None  # done
    elif supernet is not None:
        net = load_supernet(supernet, space_name)
        space = net.space
        data = space_stats(space)
    else:
        space = get_space(space_name)
        data = space_stats(space)
    if net is not None:
        data["checkpoint"] = {"path": str(supernet),
                              "params": sum(p.numel() for p in net.parameters()),
                              "metadata": getattr(net, "checkpoint_metadata", {})}
    if arch is not None:
        a = ArchConfig.parse(arch, space)
        if resolution is not None:
            a = a.with_resolution(resolution).validate(space)
        data.update({"arch": a.to_dict(), "arch_string": a.to_string(space),
                     **arch_cost(space, a)})
    elif resolution is not None:
        raise click.UsageError("--resolution needs --arch")
    if target is not None:
        if arch is None:
            raise click.UsageError("--target needs --arch")
        from luts.table import load_table

        data["latency"] = load_table(target, space=space.name).explain(a, top=top)

    def human(d: dict) -> str:
        n = d["num_subnets"]
        rows = [
            ("space", d["space"]),
            ("supernet params", f"{d['supernet_params']:,}"),
            ("subnets", f"{n['per_resolution']:.3e} per resolution x {n['resolutions']} "
                        f"= {n['total']:.3e}"),
            ("min subnet", f"{d['min']['params']:,} params, {_fmt_m(d['min']['macs'])} MACs "
                           f"@{d['min']['arch']['r']}"),
            ("max subnet", f"{d['max']['params']:,} params, {_fmt_m(d['max']['macs'])} MACs "
                           f"@{d['max']['arch']['r']}"),
        ]
        if "checkpoint" in d:
            rows.append(("checkpoint params", f"{d['checkpoint']['params']:,}"))
        if "arch" in d:
            rows += [("arch", d["arch_string"]), ("params", f"{d['params']:,}"),
                     ("MACs", f"{d['macs']:,} ({_fmt_m(d['macs'])})")]
        out = table(rows, ("field", "value"))
        if "latency" in d:
            from .lut_calibrate import explain_human

            out += "\n\nlatency:\n" + explain_human(d["latency"])
        return out

    emit(data, as_json, human)
