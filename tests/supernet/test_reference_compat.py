"""Our supernet against facts measured on the reference OFA implementation.

``tests/data/reference_ofa_mbv3.json`` was produced by ``tests/data/make_reference_fixture.py``
running the reference package: state_dict layouts, parameter and MAC counts, and activations
of a few subnets after every tensor was filled by the deterministic ``fill_value``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from supernet import ArchConfig, Supernet, arch_cost, extract_subnet, get_space, supernet_params
from supernet.checkpoint import load_reference_state_dict

from supernet_testutil import fill_value, filled_state

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "reference_ofa_mbv3.json"
REF = json.loads(FIXTURE.read_text(encoding="utf-8"))
SPACES = sorted(REF["widths"])
CASES = [(s, a["name"], int(r)) for s in SPACES for a in REF["widths"][s]["archs"]
         for r in a["resolutions"]]


def _ref_arch(space: str, name: str) -> dict:
    return next(a for a in REF["widths"][space]["archs"] if a["name"] == name)


def _input(r: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(r).standard_normal((1, 3, r, r)).astype(np.float32))


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    # The fixture keeps 6 significant digits; float32 reordering adds ~1e-6 relative.
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got - want).max())
    assert err <= 1e-4 * scale, f"{what}: max |ours - reference| = {err:.3g} (scale {scale:.3g})"


def _summary(t: torch.Tensor, n: int) -> dict:
    flat = t.detach().double().reshape(-1)
    idx = torch.from_numpy(np.linspace(0, flat.numel() - 1, n).astype(np.int64))
    return {"shape": list(t.shape), "sum": float(flat.sum()), "abs_sum": float(flat.abs().sum()),
            "sample": flat[idx].numpy()}


def _trace(net: Supernet, x: torch.Tensor, arch: ArchConfig, n_samples: int):
    """Logits plus layer summaries named as the reference names its modules."""
    seen = {}
    named = [("first_conv", net.first_conv), ("final_expand_layer", net.final_expand_layer),
             ("feature_mix_layer", net.feature_mix_layer), ("blocks.0", net.blocks[0])]
    named += [(f"blocks.{i + 1}", net.blocks[i + 1]) for i in arch.active_blocks(net.space)]
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: seen.__setitem__(n, _summary(o, n_samples)))
             for n, m in named]
    try:
        with torch.no_grad():
            y = net(x, arch)[0].double().numpy()
    finally:
        for h in hooks:
            h.remove()
    return y, seen


@pytest.mark.parametrize("space", SPACES)
def test_state_dict_layout_matches_reference(space):
    ref = REF["widths"][space]
    ours = {k: list(v.shape) for k, v in Supernet(space).state_dict().items()}
    missing, extra = sorted(set(ref["state_dict"]) - set(ours)), sorted(set(ours) - set(ref["state_dict"]))
    assert not missing and not extra, f"missing {missing[:5]}, extra {extra[:5]}"
    bad = {k: (ours[k], s) for k, s in ref["state_dict"].items() if ours[k] != s}
    assert not bad, f"shape mismatches (ours, reference): {dict(list(bad.items())[:5])}"


@pytest.mark.parametrize("space", SPACES)
def test_parameter_counts_match_reference(space):
    ref = REF["widths"][space]
    assert sum(p.numel() for p in Supernet(space).parameters()) == ref["supernet_params"]
    assert supernet_params(space) == ref["supernet_params"]


def test_fill_function_matches_generator():
    for space in SPACES:
        ref = REF["widths"][space]
        total = sum(float(fill_value(k, s).sum()) for k, s in ref["state_dict"].items())
        assert total == pytest.approx(ref["fill_checksum"], rel=1e-12), space


@pytest.mark.parametrize("space,name,r", CASES)
def test_costs_match_reference(space, name, r):
    a = _ref_arch(space, name)
    arch = ArchConfig.from_dict({"ks": a["ks"], "e": a["e"], "d": a["d"], "image_size": r}, space)
    res = a["resolutions"][str(r)]
    cost = arch_cost(space, arch)
    assert cost["params"] == a["params"]
    assert cost["macs"] == res["macs"]
    # The reference counter sums in float32, so it is only good to ~1e-7 relative.
    assert cost["macs"] == pytest.approx(res["reference_flops_counter"], rel=1e-6)


@pytest.fixture(scope="module")
def ref_nets():
    nets = {}
    for space in SPACES:
        net = Supernet(space)
        shapes = {k: tuple(s) for k, s in REF["widths"][space]["state_dict"].items()}
        state = filled_state({k: torch.empty(s) for k, s in shapes.items()})
        load_reference_state_dict(net, state, "reference fill")
        nets[space] = net.eval()
    return nets


@pytest.mark.parametrize("space,name,r", CASES)
def test_activations_and_logits_match_reference(ref_nets, space, name, r):
    a = _ref_arch(space, name)
    res = a["resolutions"][str(r)]
    arch = ArchConfig.from_dict({"ks": a["ks"], "e": a["e"], "d": a["d"], "r": r}, space)
    net = ref_nets[space]
    y, layers = _trace(net, _input(r), arch, len(next(iter(res["layers"].values()))["sample"]))
    assert sorted(layers) == sorted(res["layers"]), "active blocks differ from the reference's"
    # Walk in execution order so the first wrong layer is the one reported.
    order = ["first_conv", "blocks.0", *sorted((k for k in layers if k.startswith("blocks.")
                                                and k != "blocks.0"),
                                               key=lambda k: int(k.split(".")[1])),
             "final_expand_layer", "feature_mix_layer"]
    for name_ in order:
        got, want = layers[name_], res["layers"][name_]
        assert got["shape"] == want["shape"], name_
        _close(got["sample"], np.array(want["sample"]), f"{space} {name} r{r} {name_} values")
        numel = int(np.prod(want["shape"]))
        _close(np.array([got["sum"], got["abs_sum"]]) / numel,
               np.array([want["sum"], want["abs_sum"]]) / numel, f"{space} {name} r{r} {name_} sums")
    head = np.array(res["logits_head"])
    _close(y[: len(head)], head, f"{space} {name} r{r} logits")
    assert y.sum() == pytest.approx(res["logits_sum"], abs=1e-4 * max(1.0, abs(res["logits_abs_sum"])))
    assert int(y.argmax()) == res["argmax"]


@pytest.mark.parametrize("space", SPACES)
def test_extracted_subnet_matches_reference_logits(ref_nets, space):
    a = REF["widths"][space]["archs"][-1]
    r = int(sorted(a["resolutions"])[0])
    arch = ArchConfig.from_dict({**{k: a[k] for k in ("ks", "e", "d")}, "image_size": [r]}, space)
    sub = extract_subnet(ref_nets[space], arch).eval()
    assert sum(p.numel() for p in sub.parameters()) == a["params"]
    with torch.no_grad():
        y = sub(_input(r))[0].double().numpy()
    head = np.array(a["resolutions"][str(r)]["logits_head"])
    _close(y[: len(head)], head, f"{space} extracted subnet logits")


def test_legacy_naming_loads_to_same_network(ref_nets):
    space = SPACES[0]
    a = _ref_arch(space, "random0")
    arch = ArchConfig.from_dict({"ks": a["ks"], "e": a["e"], "d": a["d"], "r": 160}, space)
    shapes = REF["widths"][space]["state_dict"]
    state = filled_state({k: torch.empty(tuple(s)) for k, s in shapes.items()})
    # Older reference checkpoints name every block's body ``mobile_inverted_conv``, and ones
    # saved from DataParallel prefix ``module.``.
    legacy = {"module." + k.replace(".conv.", ".mobile_inverted_conv.", 1)
              if k.startswith("blocks.") else "module." + k: v for k, v in state.items()}
    assert sum(".mobile_inverted_conv." in k for k in legacy) == sum(k.startswith("blocks.") for k in state)
    net = load_reference_state_dict(Supernet(get_space(space)), {"state_dict": legacy}).eval()
    x = _input(160)
    with torch.no_grad():
        assert torch.equal(net(x, arch), ref_nets[space](x, arch))
    head = np.array(a["resolutions"]["160"]["logits_head"])
    with torch.no_grad():
        _close(net(x, arch)[0, : len(head)].double().numpy(), head, "legacy-named logits")


def test_reference_check_is_sensitive(ref_nets):
    """A change the size of a plausible bug in one late block must fail the comparison above
    (a fixture that pooled everything away would pass any network)."""
    import copy

    space = SPACES[0]
    a = _ref_arch(space, "max")
    arch = ArchConfig.from_dict({"ks": a["ks"], "e": a["e"], "d": a["d"], "r": 160}, space)
    net = copy.deepcopy(ref_nets[space])
    with torch.no_grad():
        m = net.blocks[18].conv.depth_conv["conv"].transform_matrix(5, 3)
        m.copy_(m.t().clone())  # e.g. a transposed kernel transformation
    y, layers = _trace(net, _input(160), arch, 8)
    res = a["resolutions"]["160"]
    want = np.array(res["layers"]["blocks.18"]["sample"])
    # max arch uses k=7 everywhere, so the transform is unused: the output must still match
    _close(layers["blocks.18"]["sample"], want, "unused transform")
    k3 = ArchConfig(ks=(3,) * 20, e=arch.e, d=arch.d, r=160)
    y0, l0 = _trace(ref_nets[space], _input(160), k3, 8)
    y1, l1 = _trace(net, _input(160), k3, 8)
    with pytest.raises(AssertionError):
        _close(l1["blocks.18"]["sample"], l0["blocks.18"]["sample"], "perturbed")
