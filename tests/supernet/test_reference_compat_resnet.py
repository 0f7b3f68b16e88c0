"""``ofa-resnet50`` against facts measured on the reference OFA implementation.

``tests/data/reference_ofa_resnet50.json`` was produced by
``tests/data/make_reference_fixture_resnet.py`` running the reference package (``OFAResNets``
as ``ofa_net("ofa_resnet50")`` builds it, and its ResNet50 accuracy predictor).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ofa_deploy.accuracy import PredictorError
from ofa_deploy.accuracy_resnet import load_resnet_predictor
from supernet import ArchError
from supernet.resnet import (ResNetArch, ResNetSupernet, extract_resnet_subnet, get_resnet_space,
                             resnet_arch_cost, resnet_supernet_params)

from supernet_testutil import fill_value, filled_state

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "reference_ofa_resnet50.json"
REF = json.loads(FIXTURE.read_text(encoding="utf-8"))
SPACE = "ofa-resnet50"
CASES = [(a["name"], int(r)) for a in REF["archs"] for r in a["resolutions"]]


def _ref_arch(name: str) -> dict:
    return next(a for a in REF["archs"] if a["name"] == name)


def _arch(a: dict, r: int) -> ResNetArch:
    return ResNetArch.from_dict({"d": a["d"], "e": a["e"], "w": a["w"], "image_size": r}, SPACE)


def _input(r: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(r).standard_normal((1, 3, r, r)).astype(np.float32))


def _close(got, want, what: str) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    scale = max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got - want).max())
    assert err <= 1e-4 * scale, f"{what}: max |ours - reference| = {err:.3g} (scale {scale:.3g})"


def _summary(t: torch.Tensor, n: int = 8) -> dict:
    flat = t.detach().double().reshape(-1)
    idx = torch.from_numpy(np.linspace(0, flat.numel() - 1, n).astype(np.int64))
    return {"shape": list(t.shape), "sum": float(flat.sum()), "abs_sum": float(flat.abs().sum()),
            "sample": flat[idx].numpy()}


def _trace(net: ResNetSupernet, x: torch.Tensor, arch: ResNetArch):
    seen, order = {}, ["input_stem.0"] + ([] if arch.skip_stem else ["input_stem.1"]) + \
        ["input_stem.2"] + [f"blocks.{i}" for i in arch.active_blocks(net.space)]
    mods = dict(net.named_modules())
    hooks = [mods[n].register_forward_hook(lambda _m, _i, o, n=n: seen.__setitem__(n, _summary(o)))
             for n in order]
    try:
        with torch.no_grad():
            y = net(x, arch)[0].double().numpy()
    finally:
        for h in hooks:
            h.remove()
    return y, seen, order


@pytest.fixture(scope="module")
def ref_net():
    net = ResNetSupernet(SPACE)
    state = filled_state({k: torch.empty(tuple(s)) for k, s in REF["state_dict"].items()})
    net.load_state_dict(state, strict=True)
    return net.eval()


def test_state_dict_layout_and_params_match_reference():
    ours = {k: list(v.shape) for k, v in ResNetSupernet(SPACE).state_dict().items()}
    ref = REF["state_dict"]
    missing, extra = sorted(set(ref) - set(ours)), sorted(set(ours) - set(ref))
    assert not missing and not extra, f"missing {missing[:5]}, extra {extra[:5]}"
    bad = {k: (ours[k], s) for k, s in ref.items() if ours[k] != s}
    assert not bad, f"shape mismatches (ours, reference): {dict(list(bad.items())[:5])}"
    assert resnet_supernet_params(SPACE) == REF["supernet_params"]
    total = sum(float(fill_value(k, s).sum()) for k, s in ref.items())
    assert total == pytest.approx(REF["fill_checksum"], rel=1e-12)


@pytest.mark.parametrize("name,r", CASES)
def test_costs_match_reference(name, r):
    a = _ref_arch(name)
    res = a["resolutions"][str(r)]
    cost = resnet_arch_cost(SPACE, _arch(a, r))
    assert cost["params"] == a["params"]
    assert cost["macs"] == res["macs"]
    assert cost["macs"] == pytest.approx(res["reference_flops_counter"], rel=1e-6)


@pytest.mark.parametrize("name,r", CASES)
def test_activations_and_logits_match_reference(ref_net, name, r):
    a = _ref_arch(name)
    res = a["resolutions"][str(r)]
    y, layers, order = _trace(ref_net, _input(r), _arch(a, r))
    assert sorted(layers) == sorted(res["layers"])
    for n in order:
        got, want = layers[n], res["layers"][n]
        assert got["shape"] == want["shape"], n
        _close(got["sample"], want["sample"], f"{name} r{r} {n} values")
        numel = int(np.prod(want["shape"]))
        _close(np.array([got["sum"], got["abs_sum"]]) / numel,
               np.array([want["sum"], want["abs_sum"]]) / numel, f"{name} r{r} {n} sums")
    _close(y[:REF["n_logits"]], res["logits_head"], f"{name} r{r} logits")
    assert int(y.argmax()) == res["argmax"]


def test_extracted_subnet_matches_reference(ref_net):
    for name in ("min", "random1"):
        a = _ref_arch(name)
        r = 176
        sub = extract_resnet_subnet(ref_net, _arch(a, r)).eval()
        assert sum(p.numel() for p in sub.parameters()) == a["params"]
        with torch.no_grad():
            y = sub(_input(r))[0].double().numpy()
        _close(y[:REF["n_logits"]], a["resolutions"][str(r)]["logits_head"], f"{name} subnet")


def test_reference_check_is_sensitive(ref_net):
    """One corrupted tensor in a late block fails the comparison; a tensor the arch does not
    reach (the stem's residual conv when it is skipped) changes nothing."""
    a = _ref_arch("random0")
    arch = _arch(a, 128)
    res = a["resolutions"]["128"]
    late = arch.active_blocks(SPACE)[-1]
    net = copy.deepcopy(ref_net)
    with torch.no_grad():
        net.blocks[late].conv2["bn"].bn.running_var.mul_(1.3)
    _, layers, _ = _trace(net, _input(128), arch)
    with pytest.raises(AssertionError):
        _close(layers[f"blocks.{late}"]["sample"], res["layers"][f"blocks.{late}"]["sample"], "x")
    skip = _arch(_ref_arch("min"), 128)
    assert skip.skip_stem
    net2 = copy.deepcopy(ref_net)
    with torch.no_grad():
        net2.input_stem[1].conv.conv.conv.weight.mul_(3.0)
        y2 = net2(_input(128), skip)[0].double().numpy()
    _close(y2[:REF["n_logits"]], _ref_arch("min")["resolutions"]["128"]["logits_head"], "unused")


def test_arch_record_round_trips_and_refuses_bad_values(rng):
    sp = get_resnet_space(SPACE)
    for _ in range(20):
        a = ResNetArch.sample(sp, rng)
        assert ResNetArch.from_string(a.to_string(sp), sp) == a
        assert ResNetArch.from_dict(a.to_dict(), sp) == a.validate(sp)
    base = _ref_arch("random0")
    for bad, msg in ((dict(d=[1, 0, 0, 0, 0]), "input stem"), (dict(w=[3, 0, 0, 0, 0, 0]), "w\\[0\\]=3"),
                     (dict(e=[0.3] * 18), "not in expand choices"), (dict(d=[2, 3, 0, 0, 0]), "d\\[1\\]=3")):
        with pytest.raises(ArchError, match=msg):
            ResNetArch.from_dict({**{k: base[k] for k in ("d", "e", "w")}, **bad, "image_size": 224}, sp)


def test_predictor_matches_the_reference_mlp():
    ref = REF["predictor"]
    pred = load_resnet_predictor()
    assert pred.encoder.dim == ref["n_dim"] == 82
    archs = [ResNetArch.from_dict(a, SPACE) for a in ref["archs"]]
    for a, ones in zip(archs, ref["feature_ones"]):
        assert np.nonzero(pred.encoder.encode([a])[0])[0].tolist() == ones
    np.testing.assert_allclose(pred.predict(archs), [a["acc"] for a in ref["archs"]], rtol=1e-6)
    assert len(set(np.round(pred.predict(archs), 6))) > 10  # it tells archs apart
    with pytest.raises(PredictorError, match="resolution 208 cannot be encoded"):
        pred.predict([archs[0].__class__(archs[0].d, archs[0].e, archs[0].w, 208)])
    with pytest.raises(PredictorError, match="not the OFA ResNet50 reference predictor"):
        from ofa_deploy.accuracy_resnet import ResNetReferencePredictor
        ResNetReferencePredictor({"0.weight": torch.zeros(1)})


def test_inspect_cli_reports_reference_counts(run_cli):
    for a in REF["archs"]:
        r = 176
        arch = json.dumps({"d": a["d"], "e": a["e"], "w": a["w"], "image_size": r})
        res = run_cli("inspect", "--space", SPACE, "--arch", arch, "--json")
        assert res.exit_code == 0, res.output
        data = json.loads(res.stdout)
        assert data["supernet_params"] == REF["supernet_params"]
        assert data["params"] == a["params"]
        assert data["macs"] == pytest.approx(a["resolutions"][str(r)]["reference_flops_counter"],
                                             rel=1e-3)
        again = run_cli("inspect", "--space", SPACE, "--arch", data["arch_string"], "--json")
        assert json.loads(again.stdout)["macs"] == data["macs"]


def test_extracted_subnet_exports_to_onnx(ref_net, tmp_path):
    from supernet.export import check_onnx, export_onnx, onnx_op_types

    arch = _arch(_ref_arch("random2"), 144)  # odd sizes down the stages: ceil-mode pooling
    sub = extract_resnet_subnet(ref_net, arch).eval()
    path = export_onnx(sub, (1, 3, 144, 144), tmp_path / "r50.onnx")
    check_onnx(sub, path, (1, 3, 144, 144), atol=1e-3)
    ops = onnx_op_types(path)
    assert ops["Conv"] == sum(isinstance(m, torch.nn.Conv2d) for m in sub.modules())
    assert ops.get("MaxPool") == 1


def test_load_predictor_detects_the_resnet_file():
    from ofa_deploy.accuracy import load_predictor
    from ofa_deploy.accuracy_resnet import ResNetReferencePredictor, bundled_resnet_predictor_path

    path = bundled_resnet_predictor_path()
    pred = load_predictor(path)
    assert isinstance(pred, ResNetReferencePredictor)
    assert isinstance(load_predictor(path, "ofa-resnet50", format="ofa-reference"),
                      ResNetReferencePredictor)
    with pytest.raises(PredictorError, match="predicts ofa-resnet50 subnets, not ofa-mbv3-w1.2"):
        load_predictor(path, "ofa-mbv3-w1.2")
    a = ResNetArch.from_dict(REF["predictor"]["archs"][0], SPACE)
    assert pred.predict_one(a) == pytest.approx(REF["predictor"]["archs"][0]["acc"], rel=1e-6)


def test_commands_without_resnet_support_say_so(run_cli):
    res = run_cli("specialize", "--space", SPACE, "--target", "cpu", "--ms", "20")
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1
    assert "of the ResNet50 family" in res.output and "does not support" in res.output


def test_reference_checkpoint_naming_loads(ref_net, tmp_path):
    """Checkpoints saved from the reference's static layers name ``X.bn.Y``, ``X.conv.weight``
    and ``classifier.linear.weight``; they load (by the reference's own remapping rule) into
    the same network, and a wrong shape is reported by key."""
    from supernet.checkpoint import CheckpointError
    from supernet.resnet import load_resnet_supernet

    static = {}
    for k, v in ref_net.state_dict().items():
        k = k.replace(".linear.linear.", ".linear.").replace("bn.bn.", "bn.").replace(
            "conv.conv.weight", "conv.weight")
        static["module." + k] = v
    assert sum("bn.bn." in k for k in static) == 0
    torch.save({"state_dict": static}, tmp_path / "r50.pth")
    net = load_resnet_supernet(tmp_path / "r50.pth").eval()
    arch = _arch(_ref_arch("random1"), 128)
    with torch.no_grad():
        assert torch.equal(net(_input(128), arch), ref_net(_input(128), arch))
    static["module.classifier.linear.weight"] = torch.zeros(10, 10)
    torch.save(static, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="wrong shape classifier.linear.linear.weight"):
        load_resnet_supernet(tmp_path / "bad.pth")
