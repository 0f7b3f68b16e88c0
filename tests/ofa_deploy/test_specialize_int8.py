"""specialize --precision int8 / fp32,int8 on the tiny assets, the int8 accuracy estimate and
its drop model, and the int8 error paths."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from luts.table import LatencyTable, LUTError

SPACE = "ofa-mbv3-tiny"
ROOT = Path(__file__).resolve().parents[2]


def _int8_lut(assets, path):
    """The tiny fp32 table relabelled int8 (the search only needs its numbers)."""
    t = LatencyTable.load(assets / "lut.json")
    t = LatencyTable(t.space, t.resolutions, meta={**t.meta, "precision": "int8"},
                     entries=t.entries)
    t.save(path)
    return path


def _args(assets, out, *extra):
    return ["specialize", "--supernet", assets / "net.pt", "--predictor", assets / "pred.pt",
            "--target", "cpu", "--data", "synthetic", "--calib-images", "32", "--quant-images",
            "24", "--eval-images",
            "64", "--generations", "3", "--population", "12", "--aging-islands", "0", "--runs", "3", "--warmup", "1",
            "--threads", "1", "--max-rounds", "1", "--ms", "0.9", "--out", out,
            "--int8-min-agreement", "0", *extra]  # random weights: a coin-toss class


def _one_line_error(r):
    assert r.exit_code != 0
    msg = r.output.strip()
    assert msg.startswith("Error:") and msg.count("\n") == 0, r.output
    return msg


@pytest.mark.slow  # the full-integer TFLite conversion (PT2E) takes most of a minute
def test_int8_specialize_ships_measured_int8_files(assets, tmp_path, run_cli):
    import onnx

    from ofa_deploy.evaluate import accuracy_file
    from supernet.training.data import load_dataset

    out = tmp_path / "i8"
    lut = _int8_lut(assets, tmp_path / "lut-int8.json")
    r = run_cli(*_args(assets, out, "--lut", lut, "--precision", "int8", "--json"))
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["precision"] == "int8" and rep["lut_precision"] == "int8"
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    meta = json.loads((out / "model.json").read_text())
    assert meta["precision"] == "int8"
    assert {f["precision"] for f in meta["files"].values()} == {"int8"}
    assert meta["files"]["onnx"]["calibrated_on"] == 24  # --quant-images training images
    assert meta["files"]["tflite"]["calibrated_on"] == 24
    # accuracy of the shipped files themselves, recomputed here in their own runtimes
    ds = load_dataset("synthetic")
    r_ = rep["arch"]["r"]
    for fmt, name in (("onnx", "model.onnx"), ("tflite", "model.tflite")):
        got = accuracy_file(out / name, ds.test, r_, images=64)["accuracy"]
        assert rep["measured_accuracy_by_format"][fmt] == pytest.approx(got)
        assert rep["measured_latency_by_format"][fmt]["median"] > 0  # both files timed
        assert rep["bytes_by_format"][fmt] == (out / name).stat().st_size
    assert rep["measured_accuracy"] == rep["measured_accuracy_by_format"]["onnx"]
    assert rep["measured_accuracy_samples"] == 64
    # no drop model is fitted for this random supernet: drop 0, and the report says so
    assert rep["int8_accuracy_drop"]["model"] == "none"
    assert rep["predicted_accuracy"] == pytest.approx(rep["predicted_accuracy_fp32"])
    assert any("no int8 accuracy-drop model" in w for w in rep["warnings"])
    side = rep["by_precision"]
    assert list(side) == ["fp32", "int8"] and side["fp32"]["searched"] is False
    assert side["fp32"]["arch_string"] == side["int8"]["arch_string"] == rep["arch_string"]
    md = (out / "report.md").read_text()
    assert "## fp32 vs int8" in md and "file size (KiB)" in md


def test_fp32_and_int8_side_by_side(assets, tmp_path, run_cli, monkeypatch):
    from luts.store import default_lut_path

    monkeypatch.setenv("OFA_DEPLOY_HOME", str(tmp_path / "home"))
    p32 = default_lut_path("cpu", SPACE, "fp32")
    p32.parent.mkdir(parents=True)
    p32.write_bytes((assets / "lut.json").read_bytes())
    _int8_lut(assets, default_lut_path("cpu", SPACE, "int8"))
    out = tmp_path / "both"
    r = run_cli(*_args(assets, out, "--precision", "fp32,int8", "--formats", "onnx"))
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["ort-cpu-0.9ms",
                                                                   "ort-cpu-0.9ms-int8"]
    reps = {p: json.loads((out / d / "report.json").read_text())
            for p, d in (("fp32", "ort-cpu-0.9ms"), ("int8", "ort-cpu-0.9ms-int8"))}
    for p, rep in reps.items():
        assert rep["precision"] == p
        side = rep["by_precision"]
        assert list(side) == ["fp32", "int8"] and all(v["searched"] for v in side.values())
        for q in ("fp32", "int8"):  # each side is that precision's own report
            assert side[q]["measured_latency_ms"] == reps[q]["measured_latency_ms"]["median"]
            assert side[q]["measured_accuracy"] == reps[q]["measured_accuracy"]
            assert side[q]["bytes_by_format"] == reps[q]["bytes_by_format"]
    onnx32 = out / "ort-cpu-0.9ms" / "model.onnx"
    onnx8 = out / "ort-cpu-0.9ms-int8" / "model.onnx"
    assert json.loads((onnx32.parent / "model.json").read_text())["precision"] == "fp32"
    assert json.loads((onnx8.parent / "model.json").read_text())["precision"] == "int8"
    summary = json.loads((out / "summary.json").read_text())
    assert [s["precision"] for s in summary["scenarios"]] == ["fp32", "int8"]
    assert summary["by_precision"][0]["by_precision"] == reps["fp32"]["by_precision"]
    assert "## fp32 vs int8" in (out / "summary.md").read_text()


def test_int8_error_paths(assets, tmp_path, run_cli):
    # an fp32 table for an int8 search
    msg = _one_line_error(run_cli(*_args(assets, tmp_path / "a", "--lut", assets / "lut.json",
                                         "--precision", "int8")))
    assert "is fp32" in msg and "int8" in msg
    # an int8 table for an fp32 search
    lut8 = _int8_lut(assets, tmp_path / "lut-int8.json")
    msg = _one_line_error(run_cli(*_args(assets, tmp_path / "b", "--lut", lut8)))
    assert "is int8" in msg
    # no calibration data: refused before any table or search work
    args = _args(assets, tmp_path / "c", "--lut", lut8, "--precision", "int8")
    args[args.index("synthetic")] = "none"
    msg = _one_line_error(run_cli(*args))
    assert "needs calibration images" in msg
    assert not (tmp_path / "c" / "model.onnx").exists()
    # one --lut cannot price two precisions; an unknown precision
    msg = _one_line_error(run_cli(*_args(assets, tmp_path / "d", "--lut", lut8, "--precision",
                                         "fp32,int8")))
    assert "one precision" in msg
    msg = _one_line_error(run_cli(*_args(assets, tmp_path / "e", "--precision", "int4")))
    assert "int4" in msg
    # a CUDA target times torch modules: no int8 form
    args = _args(assets, tmp_path / "f", "--lut", lut8, "--precision", "int8")
    args[args.index("cpu")] = "cuda:0"
    assert "CUDA targets" in _one_line_error(run_cli(*args))


def test_builtin_fp32_table_refuses_int8():
    from ofa_deploy.specialize import resolve_lut
    from supernet import get_space

    with pytest.raises(LUTError, match="is fp32, --precision int8 wants int8"):
        resolve_lut("note10", get_space("ofa-mbv3-w1.2"), precision="int8")
    assert resolve_lut("note10", get_space("ofa-mbv3-w1.2")).precision == "fp32"


def test_bundled_drop_model_is_refitted_from_the_benchmark_records():
    from ofa_deploy.int8_accuracy import fit_drop_model, load_drop_model

    recs = [json.loads(x) for x in
            (ROOT / "benchmarks/int8/drop_records.jsonl").read_text().splitlines() if x.strip()]
    fit = fit_drop_model(recs)
    m = load_drop_model(SPACE, "default")
    assert m["model"] == fit["model"] == "constant"
    assert m["drop"] == pytest.approx(np.mean([r["fp32"] - r["int8"] for r in recs]))
    assert m["leave_one_out_mae_points"] == fit["leave_one_out_mae_points"]
    assert m["subnets"] == len(recs)
    assert load_drop_model(SPACE, "my-own.pt") is None  # another supernet: none fitted
    assert load_drop_model("ofa-mbv3-w1.2", "default") is None


def test_fit_drop_model_picks_the_better_model():
    from ofa_deploy.int8_accuracy import fit_drop_model

    rng = np.random.default_rng(0)
    macs, r = rng.uniform(4e6, 80e6, 30), rng.choice([32, 40, 48, 56, 64], 30)
    lin = [{"fp32": 0.9, "int8": 0.9 - (0.001 + 1e-4 * m / 1e6), "macs": m, "r": int(x)}
           for m, x in zip(macs, r)]
    f = fit_drop_model(lin)
    assert f["model"] == "linear" and f["coef"][1] == pytest.approx(1e-4, rel=1e-6)
    const = [{"fp32": 0.9, "int8": 0.9 - 0.002 + 1e-4 * e, "macs": m, "r": int(x)}
             for m, x, e in zip(macs, r, rng.standard_normal(30))]
    assert fit_drop_model(const)["model"] == "constant"
    with pytest.raises(Exception, match="at least 3"):
        fit_drop_model(const[:2])


def test_int8_predictor_subtracts_the_drop(assets):
    from ofa_deploy.accuracy import load_predictor
    from ofa_deploy.int8_accuracy import Int8Predictor, int8_accuracy
    from supernet import ArchConfig, arch_cost, get_space
    from supernet.batch import ArchBatch

    sp = get_space(SPACE)
    base = load_predictor(assets / "pred.pt", sp)
    archs = [ArchConfig.sample(sp, np.random.default_rng(i)) for i in range(5)]
    want = base.predict(archs)
    const = {"model": "constant", "drop": 0.01, "space": SPACE}
    p = Int8Predictor(base, const, sp)
    np.testing.assert_allclose(p.predict(archs), want - 0.01)
    x = base.encoder.encode(ArchBatch.from_archs(sp, archs))
    np.testing.assert_allclose(p.predict_features(x), want - 0.01)  # the search's fast path
    lin = {"model": "linear", "coef": [0.001, 1e-4, 1e-5], "space": SPACE}
    q = Int8Predictor(base, lin, sp)
    assert not callable(getattr(q, "predict_features", None))  # needs the archs themselves
    drop = [0.001 + 1e-4 * arch_cost(sp, a)["macs"] / 1e6 + 1e-5 * a.r for a in archs]
    np.testing.assert_allclose(q.predict(ArchBatch.from_archs(sp, archs)), want - drop)
    np.testing.assert_allclose(int8_accuracy(want, archs, None), want)
