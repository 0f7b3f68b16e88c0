"""Local profilers (onnxruntime CPU, LiteRT CPU, CUDA events) and the shared timing discipline."""
from __future__ import annotations

import importlib.util
import os
import warnings

import numpy as np
import pytest
import torch

from profilers import DeviceSpec, LatencyStats, ProfilerError, get_profiler
from profilers.measure import (DriftMonitor, DriftWarning, host_info, parse_cpus, pinned,
                               time_callable, usable_cpus)
from supernet import ArchConfig, Supernet, extract_subnet, get_space
from supernet.export import export_onnx
from supernet.op_models import (OverheadModel, build_context_model, build_op_model,
                                fold_batchnorm, op_input_shape, overhead_input_shape)
from supernet.ops import OpKey, arch_ops, enumerate_ops

TINY = "ofa-mbv3-tiny"
HAS_LITERT_TORCH = importlib.util.find_spec("litert_torch") is not None


def _sane(s: LatencyStats, runs: int) -> None:
    assert s.runs == runs
    assert 0 < s.p10_ms <= s.median_ms <= s.p90_ms
    assert np.isfinite(s.std_ms) and s.std_ms >= 0


@pytest.fixture(scope="module")
def block_op() -> OpKey:
    ops = [o for o in enumerate_ops(TINY, [32]) if o.kind == "block" and o.se and o.skip]
    return ops[0]


@pytest.fixture(scope="module")
def subnet():
    space = get_space(TINY)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = Supernet(space).eval()
    arch = ArchConfig.min(space, r=32)
    return fold_batchnorm(extract_subnet(net, arch).eval()), (1, 3, 32, 32)


# ----------------------------------------------------------------------------- discipline
def test_time_callable_runs_warmup_then_timed_runs():
    calls = []
    ticks = iter(range(0, 10**9, 1_000_000))  # each timer read advances 1 ms
    out = time_callable(lambda: calls.append(1), runs=5, warmup=3, timer=lambda: next(ticks))
    assert len(calls) == 8
    before = []
    time_callable(lambda: calls.append(1), runs=4, warmup=2,
                  before=lambda: before.append(len(calls)))
    assert before == [10, 11, 12, 13]  # only ahead of timed calls, never during warm-up
    assert out == [1.0] * 5
    with pytest.raises(ProfilerError):
        time_callable(lambda: None, runs=0, warmup=0)
    with pytest.raises(ProfilerError):
        time_callable(lambda: None, runs=1, warmup=-1)


def test_drift_monitor_warns_only_beyond_tolerance():
    now = [0.0]
    values = iter([1.0, 1.03, 1.2, 0.9])
    mon = DriftMonitor(lambda: next(values), every_s=10, tolerance=0.05, clock=lambda: now[0])
    assert mon.check() is None  # not due yet
    now[0] = 11
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mon.check() == pytest.approx(0.03)
    now[0] = 22
    with pytest.warns(DriftWarning, match=r"\+20\.0%"):
        mon.check()
    got = []
    mon._on_warn = got.append
    assert mon.check(force=True) == pytest.approx(-0.1)
    assert len(got) == 1 and "-10.0%" in got[0]
    summary = mon.summary()
    assert summary["checks"] == 3 and summary["max_abs_drift"] == pytest.approx(0.2)
    assert len(summary["warnings"]) == 2


def test_cpu_lists_and_pinning():
    assert parse_cpus("0,2-3") == [0, 2, 3]
    assert parse_cpus([3, 1, 1]) == [1, 3]
    assert parse_cpus(None) is None
    with pytest.raises(ProfilerError):
        parse_cpus("a-b")
    with pytest.raises(ProfilerError, match="not available"):
        usable_cpus([10_000])
    if hasattr(os, "sched_getaffinity"):
        before = os.sched_getaffinity(0)
        cpu = min(before)
        with pinned([cpu]) as got:
            assert got == [cpu] and os.sched_getaffinity(0) == {cpu}
        assert os.sched_getaffinity(0) == before
    info = host_info()
    assert info["cpu_model"] and info["cpu_count"] >= 1


# ----------------------------------------------------------------------------- op models
def test_op_models_match_the_subnet_shapes():
    space = get_space(TINY)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        net = Supernet(space).eval()
    arch = ArchConfig.sample(space, np.random.default_rng(3), resolutions=[40])
    sub = extract_subnet(net, arch).eval()
    x = torch.randn(1, 3, 40, 40)
    # Feed each op model the activation shape the subnet produces at that point.
    acts = [x]
    with torch.no_grad():
        h = sub.first_conv(x)
        acts.append(h)
        for blk in sub.blocks:
            h = blk(h)
            acts.append(h)
        h = sub.final_expand_layer(h)
        acts.append(h)
        h = h.mean((2, 3), keepdim=True)
        acts.append(h)
        acts.append(sub.feature_mix_layer(h))
    ops = arch_ops(space, arch)
    assert len(ops) == len(acts) - 1 + 1  # + classifier
    for i, op in enumerate(ops):
        m = build_op_model(op, space, seed=0)
        assert tuple(acts[i].shape) == op_input_shape(op), op
        with torch.no_grad():
            y = m(torch.zeros(op_input_shape(op)))
        if i + 1 < len(acts):
            assert y.shape == acts[i + 1].shape, op
        else:
            assert tuple(y.shape) == (1, space.num_classes)
        # BN is folded: none left in the op model
        assert not any(isinstance(mm, torch.nn.BatchNorm2d) for mm in m.modules())


def test_op_models_are_seeded_and_context_prepends_a_producer(block_op):
    a = build_op_model(block_op, TINY, seed=5)
    b = build_op_model(block_op, TINY, seed=5)
    c = build_op_model(block_op, TINY, seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    ctx = build_op_model(block_op, TINY, seed=5, context=True)
    assert isinstance(ctx, torch.nn.Sequential) and len(ctx) == 2
    x = torch.randn(op_input_shape(block_op))
    with torch.no_grad():
        assert torch.allclose(ctx(x), a(build_context_model(op_input_shape(block_op), seed=5)(x)))
    # folding BN keeps the function
    unfolded = build_op_model(block_op, TINY, seed=5, fold_bn=False)
    with torch.no_grad():
        assert torch.allclose(unfolded(x), a(x), atol=1e-5)


# ----------------------------------------------------------------------------- onnxruntime
def test_ort_measures_an_op_and_a_subnet(tmp_path, block_op, subnet):
    prof = get_profiler("cpu", threads=1, runs=7, warmup=2)
    assert prof.artifact_format == "onnx" and prof.threads == 1
    op_path = export_onnx(build_op_model(block_op, TINY), op_input_shape(block_op),
                          tmp_path / "op.onnx")
    _sane(prof.measure(op_path, op_input_shape(block_op)), 7)
    _sane(prof.measure(op_path.read_bytes(), op_input_shape(block_op)), 7)
    model, shape = subnet
    net_path = export_onnx(model, shape, tmp_path / "net.onnx")
    _sane(prof.measure(net_path, shape), 7)
    over = export_onnx(OverheadModel(), overhead_input_shape(), tmp_path / "over.onnx")
    _sane(prof.measure(over, overhead_input_shape()), 7)
    d = prof.describe()
    assert d["intra_op_threads"] == 1 and d["runtime"] == "onnxruntime"
    assert d["runtime_version"] and d["cpu_model"] and d["graph_optimization"] == "all"
    with pytest.raises(ProfilerError, match="expects input"):
        prof.measure(net_path, (1, 3, 40, 40))
    with pytest.raises(ProfilerError, match="not found"):
        prof.measure(tmp_path / "missing.onnx", shape)
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(ProfilerError, match="cannot load"):
        prof.measure(tmp_path / "bad.onnx", shape)


def test_ort_spec_checks():
    with pytest.raises(ProfilerError, match="target 'cpu'"):
        get_profiler("ort:gpu")
    with pytest.raises(ProfilerError, match="threads"):
        get_profiler("cpu", threads=0)
    assert get_profiler(DeviceSpec.parse("cpu", threads=2)).threads == 2


# ----------------------------------------------------------------------------- LiteRT
@pytest.mark.skipif(not HAS_LITERT_TORCH, reason="litert-torch is not installed")
def test_tflite_measures_an_op_and_a_subnet(tmp_path, subnet):
    pytest.importorskip("ai_edge_litert")
    from supernet.export_tflite import export_tflite

    prof = get_profiler("tflite:cpu", threads=1, runs=5, warmup=1)
    assert prof.artifact_format == "tflite"
    op = [o for o in enumerate_ops(TINY, [32]) if o.kind == "final_expand"][0]
    op_path = export_tflite(build_op_model(op, TINY), op_input_shape(op), tmp_path / "op.tflite")
    _sane(prof.measure(op_path, op_input_shape(op)), 5)
    model, shape = subnet
    net_path = export_tflite(model, shape, tmp_path / "net.tflite")
    _sane(prof.measure(net_path, shape), 5)
    d = prof.describe()
    assert d["delegate"] == "xnnpack" and d["num_threads"] == 1 and d["runtime_version"]
    with pytest.raises(ProfilerError, match="expects input"):
        prof.measure(net_path, (1, 3, 40, 40))


def test_tflite_export_without_litert_torch_is_one_clear_error(monkeypatch, tmp_path):
    import builtins

    from supernet.export_tflite import TFLiteExportError, export_tflite

    real_import = builtins.__import__

    def fake_import(name, *a, **kw):
        if name == "litert_torch" or name.startswith("litert_torch."):
            raise ImportError("No module named 'litert_torch'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(TFLiteExportError, match=r"pip install 'ofa-deploy\[tflite\]'"):
        export_tflite(OverheadModel(), overhead_input_shape(), tmp_path / "x.tflite")


# ----------------------------------------------------------------------------- CUDA
def test_cuda_without_a_device_is_a_profiler_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ProfilerError, match="no CUDA device"):
        get_profiler("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_measures_an_op_and_a_subnet(block_op, subnet):
    prof = get_profiler("cuda:0", runs=5, warmup=2)
    assert prof.artifact_format == "torch"
    _sane(prof.measure(build_op_model(block_op, TINY), op_input_shape(block_op)), 5)
    model, shape = subnet
    _sane(prof.measure(model, shape), 5)
    half = get_profiler("cuda:0", runs=5, warmup=2, half=True)
    _sane(half.measure(model, shape), 5)
    d = prof.describe()
    assert d["gpu"] and d["dtype"] == "float32" and half.describe()["dtype"] == "float16"
    with pytest.raises(ProfilerError, match="no CUDA device"):
        get_profiler(f"cuda:{torch.cuda.device_count()}")
