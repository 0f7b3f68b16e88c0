"""Extracted subnets exported to ONNX run in onnxruntime and match torch."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from supernet import ArchConfig, OfaDeployError, extract_subnet
from supernet.export import ExportError, check_onnx, export_onnx, onnx_op_types
from supernet.layers import ConvBNAct, ResidualBlock, StaticMBConv

# What a static MobileNetV3 subnet may lower to; anything else (a custom domain, a Loop, a
# Slice left over from elastic code) would break mobile runtimes.
STANDARD_OPS = {"Conv", "BatchNormalization", "HardSwish", "HardSigmoid", "Relu", "Mul", "Add",
                "GlobalAveragePool", "ReduceMean", "Gemm", "MatMul", "Flatten", "Reshape",
                "Identity"}


def _one_file(path) -> onnx.ModelProto:
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == [path.name], f"export left {files}"
    model = onnx.load(str(path), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    onnx.checker.check_model(model)
    return model


def _check_graph(sub, path, *, folded: bool) -> dict:
    ops = onnx_op_types(path)
    assert set(ops) <= STANDARD_OPS, f"non-standard ops: {set(ops) - STANDARD_OPS}"
    n_conv = sum(isinstance(m, nn.Conv2d) for m in sub.modules())
    assert ops["Conv"] == n_conv
    n_se = sum(1 for b in sub.blocks if hasattr(b.conv.depth_conv, "se"))
    assert ops.get("HardSigmoid", 0) == n_se
    assert ops.get("Add", 0) == sum(1 for b in sub.blocks if b.skip)
    if folded:
        assert "BatchNormalization" not in ops
    return ops


@pytest.mark.parametrize("space,r,seeds", [("ofa-mbv3-tiny", 32, (0, 1, 2)),
                                           ("ofa-mbv3-w1.0", 160, (3,))])
def test_subnets_export_and_match_torch(filled_supernet, tmp_path, space, r, seeds):
    net = filled_supernet(space)
    for seed in seeds:
        arch = ArchConfig.sample(space, np.random.default_rng(seed), resolutions=[r])
        sub = extract_subnet(net, arch)
        path = tmp_path / f"{seed}" / "subnet.onnx"
        sub.train()  # export must use eval mode whatever the caller left
        export_onnx(sub, (1, 3, r, r), path)
        assert sub.training
        model = _one_file(path)
        assert model.opset_import[0].version == 17
        _check_graph(sub, path, folded=True)
        with torch.no_grad():
            scale = float(sub.eval()(torch.zeros(1, 3, r, r)).abs().max())
        diff = check_onnx(sub, path, (1, 3, r, r), atol=1e-4 * max(1.0, scale), seed=seed)
        assert 0.0 <= diff <= 1e-4 * max(1.0, scale)


class _SmallStatic(nn.Module):
    """The static building blocks of a subnet (stem, SE block with shortcut, head), small
    enough for the dynamo exporter, which takes 5-20 s on a whole subnet."""

    def __init__(self):
        super().__init__()
        self.stem = ConvBNAct(3, 16, 3, 2, act="h_swish")
        self.block = ResidualBlock(StaticMBConv(16, 16, mid=48, kernel=5, stride=1,
                                                act="h_swish", se_mid=16), True)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.block(self.stem(x)).mean((2, 3), keepdim=True), 1))


def test_dynamo_exporter(tmp_path):
    torch.manual_seed(0)
    model = _SmallStatic()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so folding shows
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "dyn.onnx"
    export_onnx(model, (2, 3, 32, 32), path, dynamo=True)
    onnx_model = _one_file(path)
    assert onnx_model.opset_import[0].version >= 18
    ops = onnx_op_types(path)
    assert set(ops) <= STANDARD_OPS and ops["Conv"] == 6 and ops["HardSigmoid"] == 1
    assert check_onnx(model, path, (2, 3, 32, 32), atol=1e-5, seed=1) <= 1e-5
    free = tmp_path / "free" / "dyn_batch.onnx"
    export_onnx(model, (1, 3, 32, 32), free, dynamo=True, dynamic_batch=True)
    assert check_onnx(model, free, (3, 3, 32, 32), atol=1e-5) <= 1e-5
    with pytest.raises(ExportError, match="dynamo exporter writes opset 18 or newer"):
        export_onnx(model, (1, 3, 32, 32), tmp_path / "old.onnx", dynamo=True, opset=17)


def test_dynamic_batch(filled_supernet, tmp_path):
    sub = extract_subnet(filled_supernet("ofa-mbv3-tiny"), ArchConfig.min("ofa-mbv3-tiny", 40))
    path = tmp_path / "dyn_batch.onnx"
    export_onnx(sub, (1, 3, 40, 40), path, dynamic_batch=True)
    assert check_onnx(sub, path, (3, 3, 40, 40), atol=1e-4) <= 1e-4
    fixed = tmp_path / "fixed.onnx"
    export_onnx(sub, (1, 3, 40, 40), fixed)
    with pytest.raises(ExportError, match="onnxruntime cannot run"):
        check_onnx(sub, fixed, (3, 3, 40, 40), atol=1e-4)


def test_check_detects_a_different_network(filled_supernet, tmp_path):
    net = filled_supernet("ofa-mbv3-tiny")
    sub = extract_subnet(net, ArchConfig.max("ofa-mbv3-tiny", 32))
    path = tmp_path / "m.onnx"
    export_onnx(sub, (1, 3, 32, 32), path)
    with torch.no_grad():
        sub.blocks[3].conv.point_linear.bn.bias.add_(0.5)
    with pytest.raises(ExportError, match="onnxruntime and torch differ by"):
        check_onnx(sub, path, (1, 3, 32, 32), atol=1e-4)


def test_relative_tolerance_scales_with_the_outputs(tmp_path):
    """Float32 round-off grows with the outputs: the relative check allows atol x (1 + the
    largest output), so a correct export of a net with large outputs passes it, while the
    absolute check at the same atol fails; a wrong network still fails the relative one."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.ReLU(), nn.Conv2d(64, 8, 3)).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(300.0)
    path = tmp_path / "big.onnx"
    export_onnx(model, (1, 3, 16, 16), path)
    diff = check_onnx(model, path, (1, 3, 16, 16), atol=1e-6, relative=True)
    assert diff > 1e-6  # a correct file, off by round-off alone
    with pytest.raises(ExportError, match="differ by"):
        check_onnx(model, path, (1, 3, 16, 16), atol=1e-6)
    with torch.no_grad():
        model[2].bias.add_(1.0)
    with pytest.raises(ExportError, match="differ by"):
        check_onnx(model, path, (1, 3, 16, 16), atol=1e-6, relative=True)


def test_export_errors_are_clear(tmp_path):
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            raise RuntimeError("forward exploded\nsecond line")

    path = tmp_path / "out" / "broken.onnx"
    with pytest.raises(ExportError) as exc:
        export_onnx(Broken(), (1, 3, 8, 8), path)
    assert "ONNX export of Broken failed" in str(exc.value) and "\n" not in str(exc.value)
    assert list(path.parent.iterdir()) == []  # nothing half-written
    with pytest.raises(ExportError, match=r"input shape must be \(N, C, H, W\)"):
        export_onnx(nn.Identity(), (3, 32, 32), tmp_path / "x.onnx")
    with pytest.raises(ExportError, match="sequence of integers"):
        export_onnx(nn.Identity(), "1x3x32x32", tmp_path / "x.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not onnx")
    with pytest.raises(ExportError, match="onnxruntime cannot run"):
        check_onnx(nn.Identity(), garbage, (1, 3, 8, 8))
    with pytest.raises(ExportError, match="cannot read ONNX file"):
        onnx_op_types(garbage)
    assert issubclass(ExportError, OfaDeployError)
