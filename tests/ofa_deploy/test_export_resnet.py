"""``export --space <ResNet space>`` from a checkpoint file: a tiny ResNet space (same code
path as ofa-resnet50, small widths) with a saved random-weight supernet."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from supernet.resnet import (RESNET_SPACES, ResNetArch, ResNetSpace, ResNetSupernet,
                             resnet_arch_cost)

TINY = ResNetSpace(name="tiny-resnet-test", description="test", resolutions=(32,),
                   base_stage_widths=(32, 48, 64, 96), stem_base_width=16, num_classes=10)


@pytest.fixture()
def tiny_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setitem(RESNET_SPACES, TINY.name, TINY)
    torch.manual_seed(0)
    net = ResNetSupernet(TINY).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a wrong copy shows in the outputs
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "tiny_resnet.pth"
    torch.save(net.state_dict(), path)
    return net, path


def test_export_resnet_subnet_from_checkpoint(run_cli, tiny_checkpoint, tmp_path):
    import onnxruntime as ort

    net, path = tiny_checkpoint
    arch = ResNetArch.sample(TINY, np.random.default_rng(4))
    out = tmp_path / "exp"
    res = run_cli("export", "--space", TINY.name, "--supernet", path, "--arch",
                  arch.to_string(TINY), "--format", "onnx", "--out", out, "--json")
    assert res.exit_code == 0, res.output
    meta = json.loads(res.stdout)
    assert meta == json.loads((out / "model.json").read_text())
    assert meta["arch_string"] == arch.to_string(TINY) and meta["space"] == TINY.name
    assert {k: meta[k] for k in ("params", "macs")} == resnet_arch_cost(TINY, arch)
    assert meta["input_shape"] == [1, 3, 32, 32] and meta["bn_calibrated"] is False
    # the ONNX model computes what the supernet computes for this arch
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x, arch).numpy()
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i:i + 1].numpy()})[0]
                          for i in range(2)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_export_resnet_refusals(run_cli, tiny_checkpoint, tmp_path):
    _, path = tiny_checkpoint
    for args, needle in ((("--arch", "min"), "no tiny-resnet-test supernet is bundled"),
                         (("--arch", "r32-d0", "--supernet", path), "is not min, max")):
        res = run_cli("export", "--space", TINY.name, *args, "--out", tmp_path / "x")
        assert res.exit_code != 0
        text = res.output.strip()
        assert len(text.splitlines()) == 1 and needle in text, text
    other = ResNetSupernet(ResNetSpace(name="t2", description="t", resolutions=(32,),
                                       base_stage_widths=(24, 32, 48, 64), stem_base_width=8,
                                       num_classes=10))
    bad = tmp_path / "other.pth"
    torch.save(other.state_dict(), bad)
    res = run_cli("export", "--space", TINY.name, "--supernet", bad, "--arch", "min",
                  "--out", tmp_path / "y")
    assert res.exit_code != 0 and "wrong shape" in res.output
