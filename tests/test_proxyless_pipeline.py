"""``ofa-proxyless-w1.3`` through the pipeline: extraction, ONNX export, op enumeration, a LUT
build, the cost model and ``search`` (MACs budget, and latency with a table)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from luts.builder import build_lut
from luts.table import LatencyTable
from ofa_deploy.accuracy import AccuracyPredictor, ArchEncoder
from ofa_deploy.search.costs import CostModel
from profilers.base import DeviceSpec, LatencyStats, Profiler
from supernet import ArchConfig, Supernet, arch_cost, arch_ops, enumerate_ops, extract_subnet
from supernet.batch import ArchBatch
from supernet.export import check_onnx, export_onnx, onnx_op_types

SPACE = "ofa-proxyless-w1.3"
RES = [128]


class ParamsProfiler(Profiler):
    """Times nothing: an op's latency is a deterministic function of its torch model's size,
    so the table is complete and reproducible without a real measurement."""

    def __init__(self):
        super().__init__(DeviceSpec("ort", "cpu"), threads=1, runs=3, warmup=0)
        self.artifact_format = "torch"
        self.calls = 0

    def measure(self, artifact, input_shape):
        self.calls += 1
        v = (1000 + sum(p.numel() for p in artifact.parameters())) * 1e-6
        return LatencyStats(v, 0.9 * v, 1.1 * v, 0.01 * v, self.runs)


@pytest.fixture(scope="module")
def supernet():
    g = torch.Generator().manual_seed(0)
    net = Supernet(SPACE)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point() and not name.endswith("_matrix"):
                t.copy_(torch.randn(t.shape, generator=g) * (0.1 if t.dim() == 1 else 0.05))
    return net.eval()


@pytest.fixture(scope="module")
def lut(tmp_path_factory):
    out = tmp_path_factory.mktemp("lut") / "proxyless.json"
    prof = ParamsProfiler()
    t = build_lut(SPACE, "cpu", resolutions=RES, out=out, profiler=prof, progress=False,
                  rounds=1, cache_dir=tmp_path_factory.mktemp("ops"))
    return t, out, prof


@pytest.fixture(scope="module")
def predictor_file(tmp_path_factory):
    pred = AccuracyPredictor(ArchEncoder.for_space(SPACE), hidden=(16, 16), space=SPACE, seed=3)
    return str(pred.save(tmp_path_factory.mktemp("pred") / "proxyless-pred.pt"))


def test_extracted_subnet_matches_supernet_and_exports(supernet, tmp_path):
    arch = ArchConfig.sample(SPACE, np.random.default_rng(1), resolutions=RES)
    assert len(arch.ks) == 21 and arch.d[-1] == 1
    sub = extract_subnet(supernet, arch).eval()
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(sub(x), supernet(x, arch), atol=1e-5, rtol=1e-4)
    assert sum(p.numel() for p in sub.parameters()) == arch_cost(SPACE, arch)["params"]
    path = export_onnx(sub, (1, 3, 128, 128), tmp_path / "sub.onnx")
    check_onnx(sub, path, (1, 3, 128, 128))
    ops = onnx_op_types(path)
    # ReLU6 lowers to Clip; no hard-swish or SE anywhere in this family
    assert ops["Conv"] == sum(isinstance(m, torch.nn.Conv2d) for m in sub.modules())
    assert "Clip" in ops and "HardSwish" not in ops and "HardSigmoid" not in ops


def test_op_enumeration_covers_every_subnet(rng):
    all_ops = set(enumerate_ops(SPACE, RES))
    # 21 blocks x 9 (kernel, expand) + stem + first block + feature mix, pool, classifier,
    # fewer where two blocks share a shape
    assert 100 < len(all_ops) <= 21 * 9 + 5
    for arch in ArchBatch.sample(SPACE, 20, rng, resolutions=RES).to_archs():
        ops = arch_ops(SPACE, arch)
        assert set(ops) <= all_ops
        assert [o.kind for o in ops[-3:]] == ["final_expand", "pool", "classifier"]
        assert ops[-3].cout == 1664 and ops[-1].cin == 1664


def test_lut_build_and_prediction(lut, rng):
    table, out, prof = lut
    assert prof.calls >= len(enumerate_ops(SPACE, RES))
    again = LatencyTable.from_state(json.loads(out.read_text()))
    batch = ArchBatch.sample(SPACE, 8, rng, resolutions=RES)
    want = [sum(table.get(op, 128).median_ms for op in arch_ops(SPACE, a)) + table.overhead_ms
            for a in batch.to_archs()]
    np.testing.assert_allclose(again.predict(batch), want, rtol=1e-9)
    lo, hi = table.min_max(RES)
    assert lo == pytest.approx(table.predict_one(ArchConfig.min(SPACE, 128)))
    assert hi == pytest.approx(table.predict_one(ArchConfig.max(SPACE, 128)))


def test_cost_model_prices_genes_like_the_archs(lut, rng):
    table = lut[0]
    cm = CostModel(SPACE, RES, latency_table=table)
    assert cm.ranges[2 * 21 + 5] == 1  # the fixed last stage has one depth value
    genes = (rng.random((30, cm.width)) * cm.ranges).astype(cm.dtype)
    batch = cm.batch(genes)
    assert (batch.d[:, -1] == 1).all()
    costs = cm.costs(genes)
    archs = batch.to_archs()
    np.testing.assert_allclose(costs[:, 0], table.predict(archs), rtol=1e-9)
    assert costs[:, 1].tolist() == [arch_cost(SPACE, a)["macs"] for a in archs]
    assert costs[:, 2].tolist() == [arch_cost(SPACE, a)["params"] for a in archs]
    lo, r = cm.minimum(1)
    assert lo == arch_cost(SPACE, ArchConfig.min(SPACE, 128))["macs"] and r == 128


def test_search_with_macs_budget(run_cli, predictor_file):
    res = run_cli("search", "--space", SPACE, "--mflops", "250", "--predictor", predictor_file,
                  "--resolution", "160", "--resolution", "224", "--population", "16",
                  "--generations", "6", "--aging-islands", "0", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    arch = ArchConfig.from_dict(data["arch"], SPACE)
    assert data["macs"] == arch_cost(SPACE, arch)["macs"] <= 250e6
    assert len(arch.ks) == 21 and arch.d[-1] == 1


def test_search_with_a_cpu_table(run_cli, predictor_file, lut):
    table, out, _ = lut
    lo, hi = table.min_max(RES)
    budget = lo + 0.3 * (hi - lo)
    res = run_cli("search", "--space", SPACE, "--lut", out, "--ms", f"{budget:.6f}",
                  "--predictor", predictor_file, "--population", "16", "--generations", "6", "--aging-islands", "0",
                  "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    arch = ArchConfig.from_dict(data["arch"], SPACE)
    assert data["resolutions"] == RES
    assert data["predicted_latency_ms"] == pytest.approx(table.predict_one(arch))
    assert data["predicted_latency_ms"] <= budget


def test_training_sampler_fits_the_fixed_last_stage():
    from supernet.training.sampler import SubnetSampler, phase_choices

    sampler = SubnetSampler(SPACE, seed=0, strategy="sandwich")
    for phase in ("teacher", "kernel", "depth", "expand", "full"):
        ch = phase_choices(SPACE, phase)
        archs = [ch.largest(sampler.space, 128), ch.smallest(sampler.space, 128),
                 *ch.corners(sampler.space, [128]), *sampler.sample_step(ch, 4)[1]]
        for a in archs:
            assert a.validate(SPACE, any_resolution=True).d[-1] == 1, phase
