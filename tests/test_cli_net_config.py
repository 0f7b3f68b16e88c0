"""``--arch net.config`` on the command line: ``inspect`` recognises the space, ``export``
writes the config's network (from a reference-layout checkpoint, space taken from the config)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import onnx
import torch

from supernet import Supernet, arch_cost
from supernet.net_config import read_net_config

DATA = Path(__file__).resolve().parent / "data" / "ofa-specialized"
CPU = DATA / "cpu_lat-10ms_top1-71.1_finetune-25"
PIXEL1 = DATA / "pixel1_lat-143ms_top1-80.1_finetune-75"


def test_inspect_recognises_the_space(run_cli):
    for d in (CPU, PIXEL1):
        res = run_cli("inspect", "--arch", d / "net.config", "--json")
        assert res.exit_code == 0, res.output
        data = json.loads(res.stdout)
        sp, arch = read_net_config(d)
        assert data["space"] == sp.name and data["arch"] == arch.to_dict()
        assert (data["params"], data["macs"]) == tuple(arch_cost(sp, arch).values())
    bad = run_cli("inspect", "--space", "ofa-mbv3-w1.2", "--arch", CPU)
    assert bad.exit_code != 0 and "not ofa-mbv3-w1.2" in bad.output
    assert len(bad.output.strip().splitlines()) == 1


def test_export_writes_the_config_network(run_cli, tmp_path):
    ckpt = tmp_path / "ofa_proxyless.pth"  # reference layout: a plain state_dict
    torch.save(Supernet("ofa-proxyless-w1.3").state_dict(), ckpt)
    out = tmp_path / "exp"
    res = run_cli("export", "--supernet", ckpt, "--arch", CPU, "--format", "onnx",
                  "--data", "none", "--out", out, "--json")
    assert res.exit_code == 0, res.output
    meta = json.loads(res.stdout)
    sp, arch = read_net_config(CPU)
    assert meta["arch"] == arch.to_dict() and meta["params"] == arch_cost(sp, arch)["params"]
    model = onnx.load(str(out / "model.onnx"))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 144, 144]
    init = {t.name: tuple(t.dims) for t in model.graph.initializer}
    depthwise = [init[n.input[1]] for n in model.graph.node
                 if n.op_type == "Conv" and init[n.input[1]][1] == 1]
    cfg = json.loads((CPU / "net.config").read_text())
    want = [((c["mid_channels"] or c["in_channels"]), 1, c["kernel_size"], c["kernel_size"])
            for c in (b["mobile_inverted_conv"] for b in cfg["blocks"])]
    assert depthwise == want
    # named as the reference names it, and bench labels the artifact with that name
    saved = json.loads((out / "model.json").read_text())
    assert saved["name"] == meta["name"] == CPU.name
    assert Path(saved["source"]) == CPU / "net.config"
    from ofa_deploy.bench import collect_artifacts

    (art,) = collect_artifacts([out])
    assert (art.name, art.label) == ("model.onnx", CPU.name)


def test_net_config_file_names_only_net_configs(tmp_path):
    from supernet.net_config import net_config_file

    assert net_config_file(str(CPU)) == CPU / "net.config"
    assert net_config_file(str(CPU / "net.config")) == CPU / "net.config"
    other = tmp_path / "arch.json"
    other.write_text(json.dumps({"arch": read_net_config(CPU)[1].to_dict()}))
    for text in ("min", str(other), (CPU / "net.config").read_text(), str(tmp_path / "no")):
        assert net_config_file(text) is None


RESNET = Path(__file__).resolve().parent / "data" / "ofa-resnet50-netconfig"


def _same_network(sp, got, want) -> bool:
    """Equal archs, or ones differing only in a width index whose channel count is the same
    (the first stem conv has 24 channels at two multipliers)."""
    if got == want:
        return True
    mids = sp.stem_mid_widths
    return (dataclasses.replace(got, w=want.w[:1] + got.w[1:]) == want
            and mids[got.w[0]] == mids[want.w[0]])


def test_resnet_net_configs_read_as_the_reference_built_them():
    from supernet.resnet_space import ResNetArch

    dirs = sorted(RESNET.iterdir())
    assert len(dirs) == 4
    for d in dirs:
        sp, arch = read_net_config(d)
        want = json.loads((d / "arch.json").read_text())
        ref = ResNetArch(want["d"], want["e"], want["w"], want["r"]).canonical(sp)
        assert sp.name == "ofa-resnet50" and _same_network(sp, arch, ref), d.name
        assert ResNetArch.parse(str(d), sp) == arch
        assert ResNetArch.parse(str(d / "net.config"), sp) == arch
    # the one the reference built with w[0] = 1 reads back as the same network at index 0
    sp, arch = read_net_config(RESNET / "resnet50_mixed_r288")
    assert arch.r == 288 and arch.w[0] == 0


def test_resnet_net_config_inspect_export_and_refusals(run_cli, tmp_path):
    from supernet.resnet import ResNetSupernet
    from supernet.resnet_space import resnet_arch_cost

    d = RESNET / "resnet50_mixed_r288"  # outside the search range (128..256): still inspected
    res = run_cli("inspect", "--arch", d, "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    sp, arch = read_net_config(d)
    assert data["space"] == "ofa-resnet50" and data["arch"] == arch.to_dict()
    cost = resnet_arch_cost(sp, arch)
    assert (data["params"], data["macs"]) == (cost["params"], cost["macs"])

    small = RESNET / "resnet50_min_r128"
    ckpt = tmp_path / "ofa_resnet50.pth"
    torch.save(ResNetSupernet("ofa-resnet50").state_dict(), ckpt)
    out = tmp_path / "exp"
    res = run_cli("export", "--supernet", ckpt, "--arch", small, "--format", "onnx",
                  "--data", "none", "--out", out, "--json")
    assert res.exit_code == 0, res.output
    meta = json.loads(res.stdout)
    assert meta["name"] == small.name and meta["space"] == "ofa-resnet50"
    dims = onnx.load(str(out / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [x.dim_value for x in dims] == [1, 3, 128, 128]

    for args, needle in [(("--space", "ofa-mbv3-w1.2"), "not ofa-mbv3-w1.2"),
                         ((), "block 0 middle channels")]:
        arch_arg = small
        if not args:  # a tampered config: a bottleneck whose width the space cannot build
            cfg = json.loads((small / "net.config").read_text())
            cfg["blocks"][0]["mid_channels"] += 8
            arch_arg = tmp_path / "bad.config"
            arch_arg.write_text(json.dumps(cfg))
        bad = run_cli("inspect", *args, "--arch", arch_arg)
        assert bad.exit_code != 0 and needle in bad.output, bad.output
        assert len(bad.output.strip().splitlines()) == 1
