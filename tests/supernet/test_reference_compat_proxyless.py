"""``ofa-proxyless-w1.3`` against facts measured on the reference OFA implementation.

``tests/data/reference_ofa_proxyless.json`` was produced by
``tests/data/make_reference_fixture_proxyless.py`` running the reference package
(``OFAProxylessNASNets``, as ``ofa_net("ofa_proxyless_d234_e346_k357_w1.3")`` builds it):
state_dict layout, parameter and MAC counts, and activations of a few subnets after every
tensor was filled by the deterministic ``fill_value``.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from supernet import ArchConfig, Supernet, arch_cost, extract_subnet, supernet_params
from supernet.checkpoint import load_reference_state_dict

from supernet_testutil import fill_value, filled_state

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "reference_ofa_proxyless.json"
REF = json.loads(FIXTURE.read_text(encoding="utf-8"))
SPACE = "ofa-proxyless-w1.3"
REF_SP = REF["widths"][SPACE]
CASES = [(a["name"], int(r)) for a in REF_SP["archs"] for r in a["resolutions"]]
HEAD = ("feature_mix_layer",)


def _ref_arch(name: str) -> dict:
    return next(a for a in REF_SP["archs"] if a["name"] == name)


def _arch(a: dict, r: int) -> ArchConfig:
    return ArchConfig.from_dict({"ks": a["ks"], "e": a["e"], "d": a["d"], "image_size": r}, SPACE)


def _input(r: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(r).standard_normal((1, 3, r, r)).astype(np.float32))


def _close(got, want, what: str) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got - want).max())
    assert err <= 1e-4 * scale, f"{what}: max |ours - reference| = {err:.3g} (scale {scale:.3g})"


def _summary(t: torch.Tensor, n: int) -> dict:
    flat = t.detach().double().reshape(-1)
    idx = torch.from_numpy(np.linspace(0, flat.numel() - 1, n).astype(np.int64))
    return {"shape": list(t.shape), "sum": float(flat.sum()), "abs_sum": float(flat.abs().sum()),
            "sample": flat[idx].numpy()}


def _trace(net: Supernet, x: torch.Tensor, arch: ArchConfig, n_samples: int = 8):
    seen = {}
    named = [("first_conv", net.first_conv), ("blocks.0", net.blocks[0])]
    named += [(f"blocks.{i + 1}", net.blocks[i + 1]) for i in arch.active_blocks(net.space)]
    named += [(n, getattr(net, n)) for n in HEAD]
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: seen.__setitem__(n, _summary(o, n_samples)))
             for n, m in named]
    try:
        with torch.no_grad():
            y = net(x, arch)[0].double().numpy()
    finally:
        for h in hooks:
            h.remove()
    return y, seen, [n for n, _ in named]


def test_state_dict_layout_matches_reference():
    ours = {k: list(v.shape) for k, v in Supernet(SPACE).state_dict().items()}
    ref = REF_SP["state_dict"]
    missing, extra = sorted(set(ref) - set(ours)), sorted(set(ours) - set(ref))
    assert not missing and not extra, f"missing {missing[:5]}, extra {extra[:5]}"
    bad = {k: (ours[k], s) for k, s in ref.items() if ours[k] != s}
    assert not bad, f"shape mismatches (ours, reference): {dict(list(bad.items())[:5])}"


def test_parameter_counts_match_reference():
    assert REF_SP["supernet_params"] == 7_956_882
    assert sum(p.numel() for p in Supernet(SPACE).parameters()) == REF_SP["supernet_params"]
    assert supernet_params(SPACE) == REF_SP["supernet_params"]


def test_fill_function_matches_generator():
    total = sum(float(fill_value(k, s).sum()) for k, s in REF_SP["state_dict"].items())
    assert total == pytest.approx(REF_SP["fill_checksum"], rel=1e-12)


@pytest.mark.parametrize("name,r", CASES)
def test_costs_match_reference(name, r):
    a = _ref_arch(name)
    res = a["resolutions"][str(r)]
    cost = arch_cost(SPACE, _arch(a, r))
    assert cost["params"] == a["params"]
    assert cost["macs"] == res["macs"]
    assert cost["macs"] == pytest.approx(res["reference_flops_counter"], rel=1e-6)


@pytest.fixture(scope="module")
def ref_net():
    net = Supernet(SPACE)
    state = filled_state({k: torch.empty(tuple(s)) for k, s in REF_SP["state_dict"].items()})
    load_reference_state_dict(net, state, "reference fill")
    return net.eval()


@pytest.mark.parametrize("name,r", CASES)
def test_activations_and_logits_match_reference(ref_net, name, r):
    a = _ref_arch(name)
    res = a["resolutions"][str(r)]
    y, layers, order = _trace(ref_net, _input(r), _arch(a, r))
    assert sorted(layers) == sorted(res["layers"]), "active blocks differ from the reference's"
    for n in order:  # execution order: the first wrong layer is the one reported
        got, want = layers[n], res["layers"][n]
        assert got["shape"] == want["shape"], n
        _close(got["sample"], want["sample"], f"{name} r{r} {n} values")
        numel = int(np.prod(want["shape"]))
        _close(np.array([got["sum"], got["abs_sum"]]) / numel,
               np.array([want["sum"], want["abs_sum"]]) / numel, f"{name} r{r} {n} sums")
    head = np.array(res["logits_head"])
    _close(y[: len(head)], head, f"{name} r{r} logits")
    assert y.sum() == pytest.approx(res["logits_sum"], abs=1e-4 * max(1.0, abs(res["logits_abs_sum"])))
    assert int(y.argmax()) == res["argmax"]


def test_extracted_subnet_matches_reference_logits(ref_net):
    a = REF_SP["archs"][-1]
    r = int(sorted(a["resolutions"])[0])
    sub = extract_subnet(ref_net, _arch(a, r)).eval()
    assert sum(p.numel() for p in sub.parameters()) == a["params"]
    with torch.no_grad():
        y = sub(_input(r))[0].double().numpy()
    head = np.array(a["resolutions"][str(r)]["logits_head"])
    _close(y[: len(head)], head, "extracted subnet logits")


def test_reference_dict_with_any_last_stage_depth():
    """The reference clamps the one-block last stage's depth (its sampler writes 1, a user may
    write 4): both mean the same network."""
    a = _ref_arch("random0")
    four = ArchConfig.from_dict({"ks": a["ks"], "e": a["e"], "d": a["d"][:-1] + [4], "image_size": 128},
                                SPACE)
    assert four == _arch(a, 128) and four.d[-1] == 1
    with pytest.raises(ValueError, match="d\\[5\\]=4"):
        ArchConfig(a["ks"], a["e"], a["d"][:-1] + [4], 128).validate(SPACE)


def test_reference_check_is_sensitive(ref_net):
    """A plausible bug in one late block (a transposed kernel transformation) must fail the
    comparison above; an unused tensor changed must not."""
    a = _ref_arch("max")
    arch = _arch(a, 128)
    net = copy.deepcopy(ref_net)
    with torch.no_grad():
        m = net.blocks[18].conv.depth_conv["conv"].transform_matrix(5, 3)
        m.copy_(m.t().clone())
    _, layers, _ = _trace(net, _input(128), arch)
    want = a["resolutions"]["128"]["layers"]["blocks.18"]["sample"]
    _close(layers["blocks.18"]["sample"], want, "unused transform")  # k=7: the matrix is unused
    k3 = ArchConfig(ks=(3,) * 21, e=arch.e, d=arch.d, r=128)
    _, l0, _ = _trace(ref_net, _input(128), k3)
    _, l1, _ = _trace(net, _input(128), k3)
    with pytest.raises(AssertionError):
        _close(l1["blocks.18"]["sample"], l0["blocks.18"]["sample"], "perturbed")
    # and a corrupted head weight shows in the logits the fixture holds
    net2 = copy.deepcopy(ref_net)
    with torch.no_grad():
        net2.feature_mix_layer.bn.running_var.mul_(1.5)
    y, _, _ = _trace(net2, _input(128), arch)
    with pytest.raises(AssertionError):
        _close(y[:50], a["resolutions"]["128"]["logits_head"], "corrupted head")


def test_inspect_cli_reports_reference_counts(run_cli):
    """``inspect --arch`` with the reference's own dict form gives the reference's numbers."""
    for a in REF_SP["archs"]:
        r = int(sorted(a["resolutions"])[-1])
        arch = json.dumps({"ks": a["ks"], "e": a["e"], "d": a["d"], "image_size": r})
        res = run_cli("inspect", "--space", SPACE, "--arch", arch, "--json")
        assert res.exit_code == 0, res.output
        data = json.loads(res.stdout)
        assert data["supernet_params"] == REF_SP["supernet_params"]
        assert data["params"] == a["params"]
        assert data["macs"] == pytest.approx(a["resolutions"][str(r)]["reference_flops_counter"],
                                             rel=1e-3)
