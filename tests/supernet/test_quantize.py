"""int8 post-training quantization: settings, graph rewrites, islands, and the export path."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from supernet import ArchConfig, build_supernet, extract_subnet, get_space
from supernet.export import export_onnx
from supernet.quantize import (QuantizeError, QuantSettings, float_islands, global_pools,
                               parse_precision, quantize_onnx)
from supernet.training.data import FASHION_MNIST_DIR

RES = 64


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    space = get_space("ofa-mbv3-tiny")
    net = build_supernet(space).eval()
    arch = ArchConfig.min(space).with_resolution(space.resolutions[0])
    sub = extract_subnet(net, arch).eval()
    path = tmp_path_factory.mktemp("q") / "f.onnx"
    r = arch.r
    export_onnx(sub, (1, 3, r, r), path)
    return sub, path, r


def _run(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_settings_validate_every_field_at_once_and_round_trip():
    s = QuantSettings(calib_images=10, activations="int8")
    assert QuantSettings.from_state(s.get_state()) == s
    assert s.get_state()["precision"] == "int8"
    with pytest.raises(QuantizeError) as err:
        QuantSettings(activations="fp8", calibration="magic", calib_images=0)
    msg = str(err.value)
    assert "activations" in msg and "calibration" in msg and "calib_images" in msg
    with pytest.raises(QuantizeError, match="unknown quantization setting"):
        QuantSettings.from_state({"bits": 4})
    # a record written before reduce_range existed describes a full-range quantization
    old = {k: v for k, v in QuantSettings().get_state().items() if k != "reduce_range"}
    assert QuantSettings.from_state(old).reduce_range is False
    assert QuantSettings().reduce_range is True
    assert parse_precision("INT8") == "int8"
    with pytest.raises(QuantizeError, match="fp32, int8"):
        parse_precision("int4")


def test_global_pools_rewrite_is_exact(float_model, tmp_path, rng):
    _, path, r = float_model
    out = tmp_path / "pooled.onnx"
    n = global_pools(path, out)
    assert n >= 1  # the head's mean at least
    x = rng.standard_normal((1, 3, r, r)).astype(np.float32)
    np.testing.assert_allclose(_run(out, x), _run(path, x), rtol=1e-5, atol=1e-6)
    import onnx

    types = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert "ReduceMean" not in types and "GlobalAveragePool" in types


def test_quantize_onnx_gives_integer_kernels_and_reports_what_stays_float(float_model, tmp_path,
                                                                           rng):
    sub, path, r = float_model
    import torch

    images = rng.standard_normal((16, 3, r, r)).astype(np.float32)
    out = tmp_path / "int8.onnx"
    info = quantize_onnx(path, out, [images[:8], images[8:]], QuantSettings(calib_images=12))
    assert info["calibrated_on"] == 12
    assert info["op_types"]["QuantizeLinear"] > 0 and info["op_types"]["DequantizeLinear"] > 0
    # onnxruntime has no integer HardSigmoid: the report must say so rather than hide it
    assert info["float_islands"].get("HardSigmoid", 0) > 0
    assert "Conv" not in info["float_islands"] and "GlobalAveragePool" not in info["float_islands"]
    assert os.path.getsize(out) < os.path.getsize(path)
    # reduce_range: 7-bit weights (no u8 x s8 pair-sum saturation on AVX2-only x86 CPUs)
    import onnx
    from onnx import numpy_helper

    weights = [numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer
               if i.data_type == onnx.TensorProto.INT8 and i.dims and len(i.dims) == 4]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64
    x = images[:1]
    with torch.no_grad():
        want = sub(torch.from_numpy(x)).numpy()
    got = _run(out, x)
    # quantized, so not equal, but close on the images it was calibrated on
    assert np.abs(got - want).max() < 0.5 * np.abs(want).max() + 1e-3


def test_quantize_without_images_is_a_clear_error(float_model, tmp_path):
    _, path, _ = float_model
    with pytest.raises(QuantizeError, match="calibration images"):
        quantize_onnx(path, tmp_path / "q.onnx", [], QuantSettings())


def test_float_islands_of_a_float_model_is_empty(float_model):
    assert float_islands(float_model[1]) == {}


def test_export_int8_refusals(run_cli, tmp_path):
    res = run_cli("export", "--arch", "min", "--precision", "int8", "--format", "onnx",
                  "--data", "none", "--out", tmp_path / "a")
    assert res.exit_code != 0 and "needs calibration images" in res.output
    assert res.output.count("\n") == 1


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR), reason="dataset-fashion-mnist absent")
def test_export_int8_of_the_bundled_default(run_cli, tmp_path):
    out = tmp_path / "e"
    res = run_cli("export", "--arch", "min", "--precision", "int8", "--format", "onnx,tflite",
                  "--calib-images", "64", "--out", out, "--json")
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "model.json").read_text())
    f = meta["files"]["onnx"]
    assert f["precision"] == "int8" and f["quantization"]["calib_images"] == 64
    assert f["calibrated_on"] == 64 and f["top1_agreement"] >= 0.9
    assert f["float_islands"] == {"HardSigmoid": f["op_types"]["HardSigmoid"]}
    t = meta["files"]["tflite"]
    assert t["precision"] == "int8" and t["float_islands"] == {} and t["top1_agreement"] >= 0.9
    # 7-bit weights are onnxruntime's; the TFLite file is quantized to the full int8 range
    assert f["quantization"]["reduce_range"] is True and t["quantization"]["reduce_range"] is False
    assert t["input"]["dtype"] == "int8" and t["input"]["scale"] > 0
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no temp file left


def test_integer_friendly_copy_is_numerically_identical(float_model, rng):
    import torch

    from supernet.export_tflite import integer_friendly

    sub, _, r = float_model
    friendly = integer_friendly(sub)
    assert not any(isinstance(m, torch.nn.Hardsigmoid) for m in friendly.modules())
    assert any(isinstance(m, torch.nn.Hardsigmoid) for m in sub.modules())  # original untouched
    x = torch.from_numpy(rng.standard_normal((2, 3, r, r)).astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(friendly(x), sub(x), rtol=1e-6, atol=1e-6)


def test_int8_tflite_graph_is_fully_integer(float_model, tmp_path, rng):
    pytest.importorskip("litert_torch")
    from supernet.export_tflite import export_tflite_int8

    sub, _, r = float_model
    images = rng.standard_normal((8, 3, r, r)).astype(np.float32)
    info = export_tflite_int8(sub, (1, 3, r, r), tmp_path / "m.tflite", [images], calib_images=8)
    assert info["calibrated_on"] == 8
    assert info["float_islands"] == {}
    assert "QUANTIZE" not in info["op_types"] and "DEQUANTIZE" not in info["op_types"]
    assert info["input"]["dtype"] == "int8" and info["output"]["dtype"] == "int8"
    assert info["op_types"].get("HARD_SWISH", 0) > 0  # the integer kernel, not a decomposition
    assert not list(tmp_path.glob(".*tmp"))
