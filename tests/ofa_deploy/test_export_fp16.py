"""`export --precision fp16`: a .tflite whose weights are float16, recorded as fp16 in
model.json and by bench; ONNX fp16 and `specialize --precision fp16` are one-line refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest


def _one_line(r):
    assert r.exit_code != 0 and isinstance(r.exception, SystemExit), r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.output
    return lines[0]


@pytest.fixture(scope="module")
def fp16_export(tmp_path_factory):
    pytest.importorskip("litert_torch")
    from click.testing import CliRunner

    from ofa_deploy.cli import main

    out = tmp_path_factory.mktemp("fp16") / "e"
    r = CliRunner().invoke(main, ["export", "--arch", "min", "--precision", "fp16", "--data",
                                  "none", "--out", str(out), "--json"])
    return out, r


def test_fp16_export_writes_fp16_weights(fp16_export):
    from ai_edge_litert.interpreter import Interpreter

    out, r = fp16_export
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.tflite"]  # no onnx
    details = Interpreter(model_path=str(out / "model.tflite")).get_tensor_details()
    by_type = {}
    for d in details:
        by_type.setdefault(np.dtype(d["dtype"]).name, []).append(d)
    # every conv / fully-connected weight is stored in fp16, nothing is integer-quantized
    assert len(by_type.get("float16", [])) >= 10
    assert not set(by_type) & {"int8", "uint8"}
    meta = json.loads((out / "model.json").read_text())
    f = meta["files"]["tflite"]
    assert f["precision"] == "fp16" and f["quantization"]["weights"] == "float16"
    assert f["fp16_weights"] == len(by_type["float16"]) == f["op_types"]["DEQUANTIZE"]
    assert f["max_abs_diff"] < 1e-2 and f["bytes"] == (out / "model.tflite").stat().st_size


def test_fp16_file_is_about_half_the_fp32_one(fp16_export, tmp_path, run_cli):
    out, _ = fp16_export
    r = run_cli("export", "--arch", "min", "--format", "tflite", "--data", "none", "--out",
                tmp_path / "f32")
    assert r.exit_code == 0, r.output
    ratio = (out / "model.tflite").stat().st_size / (tmp_path / "f32" / "model.tflite").stat().st_size
    assert 0.45 < ratio < 0.65


def test_bench_reads_fp16_from_model_json_and_from_the_graph(fp16_export, tmp_path):
    import shutil

    from ofa_deploy import bench as B

    out, _ = fp16_export
    assert B.collect_artifacts([out])[0].precision == "fp16"  # model.json
    shutil.copyfile(out / "model.tflite", tmp_path / "bare.tflite")
    assert B.read_precision(tmp_path / "bare.tflite") == "fp16"  # the graph's fp16 tensors


def test_fp16_onnx_is_refused_in_one_line(run_cli, tmp_path):
    for fmt in ("onnx", "onnx,tflite"):
        msg = _one_line(run_cli("export", "--arch", "min", "--precision", "fp16", "--format",
                                fmt, "--data", "none", "--out", tmp_path / fmt))
        assert "fp16 is offered for TFLite and CUDA only" in msg and "--format onnx" in msg
        assert not (tmp_path / fmt).exists()


def test_specialize_fp16_is_refused_naming_what_works(run_cli, tmp_path):
    for prec in ("fp16", "fp32,fp16"):
        msg = _one_line(run_cli("specialize", "--target", "tflite:cpu", "--ms", "5",
                                "--precision", prec, "--out", tmp_path / "s"))
        assert "specialize has no --precision fp16" in msg and "export --arch" in msg
