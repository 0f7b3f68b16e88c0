"""The reference's ``net.config`` files (four published specialized nets, copied into
``tests/data/ofa-specialized``) read as space + arch, checked layer by layer."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import onnx
import pytest
import torch
import torch.nn as nn

from ofa_deploy.accuracy import ArchEncoder, PredictorError
from supernet import ArchConfig, ArchError, Supernet, arch_cost, extract_subnet
from supernet.batch import ArchBatch
from supernet.export import export_onnx
from supernet.net_config import arch_from_net_config, net_config_space, read_net_config, resolve_arch

DATA = Path(__file__).resolve().parents[1] / "data" / "ofa-specialized"
CONFIGS = {  # name -> (space, image_size of its run.config)
    "cpu_lat-10ms_top1-71.1_finetune-25": ("ofa-proxyless-w1.3", 144),
    "note10_lat-30ms_top1-78.4_finetune-75": ("ofa-mbv3-w1.2", 224),
    "note10_lat-8ms_top1-71.4_finetune-25": ("ofa-mbv3-w1.0", 160),
    "pixel1_lat-143ms_top1-80.1_finetune-75": ("ofa-mbv3-w1.2", 240),
}


def _cfg(name: str) -> dict:
    return json.loads((DATA / name / "net.config").read_text())


def _conv_shapes_from_config(cfg: dict) -> list:
    """(out, in/groups, k, k) of every conv, written from the config alone (no space)."""
    out = [(cfg["first_conv"]["out_channels"], 3, 3, 3)]
    for b in cfg["blocks"]:
        c = b["mobile_inverted_conv"]
        cin, cout, k = c["in_channels"], c["out_channels"], c["kernel_size"]
        mid = c["mid_channels"] or round(cin * c["expand_ratio"])
        if c["expand_ratio"] != 1:
            out.append((mid, cin, 1, 1))
        out.append((mid, 1, k, k))
        if c["use_se"]:
            se = max(8, int(mid // 4 + 4) // 8 * 8)
            se = se + 8 if se < 0.9 * (mid // 4) else se
            out += [(se, mid, 1, 1), (mid, se, 1, 1)]
        out.append((cout, mid, 1, 1))
    for key in ("final_expand_layer", "feature_mix_layer"):
        if cfg.get(key):
            out.append((cfg[key]["out_channels"], cfg[key]["in_channels"], 1, 1))
    return out


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_configs_parse_to_their_space_and_resolution(name):
    space, r = CONFIGS[name]
    sp, arch = read_net_config(DATA / name)
    assert sp.name == space and arch.r == r
    assert sum(arch.d) == len(_cfg(name)["blocks"]) - 1
    # the file and the directory, with or without --space, are the same arch
    assert read_net_config(DATA / name / "net.config", space) == (sp, arch)
    assert ArchConfig.parse(str(DATA / name), space) == arch
    assert resolve_arch(str(DATA / name / "net.config")) == (sp, arch)
    assert net_config_space(str(DATA / name)) == sp
    # without run.config the space's largest resolution is used
    assert arch_from_net_config(_cfg(name))[1] == arch.with_resolution(max(sp.resolutions))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_extracted_subnet_has_the_config_layers(name, tmp_path):
    sp, arch = read_net_config(DATA / name)
    cfg = _cfg(name)
    sub = extract_subnet(Supernet(sp), arch).eval()
    want = _conv_shapes_from_config(cfg)
    ran = []  # convs in execution order
    hooks = [m.register_forward_hook(lambda m, _i, _o: ran.append(m))
             for m in sub.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        assert sub(torch.zeros(1, 3, 64, 64)).shape == (1, cfg["classifier"]["out_features"])
    for h in hooks:
        h.remove()
    assert [tuple(m.weight.shape) for m in ran] == want
    strides = [m.stride[0] for m in ran if m.groups > 1 and m.kernel_size[0] > 1]
    assert strides == [b["mobile_inverted_conv"]["stride"] for b in cfg["blocks"]]
    assert sum(b.skip for b in sub.blocks) == sum(b["shortcut"] is not None for b in cfg["blocks"])
    lin = [m for m in sub.modules() if isinstance(m, nn.Linear)][-1]
    assert (lin.in_features, lin.out_features) == (cfg["classifier"]["in_features"],
                                                   cfg["classifier"]["out_features"])
    assert sum(p.numel() for p in sub.parameters()) == arch_cost(sp, arch)["params"]
    if name.startswith("cpu"):  # one ONNX export: its conv weights have the config's shapes
        path = export_onnx(sub, (1, 3, arch.r, arch.r), tmp_path / "m.onnx")
        model = onnx.load(str(path))
        init = {t.name: tuple(t.dims) for t in model.graph.initializer}
        convs = [init[n.input[1]] for n in model.graph.node if n.op_type == "Conv"]
        assert convs == want
        with torch.no_grad():
            assert sub(torch.zeros(1, 3, arch.r, arch.r)).shape == (1, 1000)


def test_resolution_outside_the_space_is_kept_and_refused_by_the_predictor():
    sp, arch = read_net_config(DATA / "pixel1_lat-143ms_top1-80.1_finetune-75")
    assert arch.r == 240 and 240 not in sp.resolutions
    with pytest.raises(ArchError, match="resolution 240 not in space ofa-mbv3-w1.2"):
        arch.validate(sp)
    # the reference predictor's bins end at 239
    with pytest.raises(PredictorError, match=r"resolution\(s\) \[240\] cannot be encoded"):
        ArchEncoder.reference().encode(ArchBatch.from_archs(sp, [arch]))


def _edit(name: str, fn) -> dict:
    cfg = copy.deepcopy(_cfg(name))
    fn(cfg)
    return cfg


@pytest.mark.parametrize("edit,msg", [
    (lambda c: c.update(name="ResNets"), "network 'ResNets' is not a family"),
    (lambda c: c["first_conv"].update(out_channels=48), "matches no registered space"),
    (lambda c: c["blocks"][3]["mobile_inverted_conv"].update(kernel_size=9),
     "has kernel 9, expand 3"),
    (lambda c: c["blocks"][3]["mobile_inverted_conv"].update(mid_channels=80),
     "stage 1 block 0 middle channels is 80, space expects 96"),
    (lambda c: c["blocks"][3]["mobile_inverted_conv"].update(act_func="h_swish"),
     "activation is 'h_swish', space expects 'relu6'"),
    (lambda c: c["blocks"].__setitem__(slice(2, 2), [copy.deepcopy(c["blocks"][2])] * 3),
     "stage 0 has 5 blocks"),
    (lambda c: c["bn"].update(eps=1e-5), "bn eps"),
])
def test_mismatching_configs_are_refused_with_the_reason(edit, msg):
    cfg = _edit("cpu_lat-10ms_top1-71.1_finetune-25", edit)
    with pytest.raises(ArchError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        arch_from_net_config(cfg)


def test_other_space_is_refused():
    with pytest.raises(ArchError, match="subnet of space ofa-proxyless-w1.3, not ofa-mbv3-w1.0"):
        ArchConfig.parse(str(DATA / "cpu_lat-10ms_top1-71.1_finetune-25"), "ofa-mbv3-w1.0")
    with pytest.raises(ArchError, match="give the space"):
        resolve_arch("max")
    inline = json.dumps(_cfg("note10_lat-8ms_top1-71.4_finetune-25"))
    sp, arch = resolve_arch(inline)
    assert sp.name == "ofa-mbv3-w1.0" and arch.r == 224
