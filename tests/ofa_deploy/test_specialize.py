"""specialize / export / predictor collect+train, end to end on the tiny space."""
from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest
import torch

from luts.table import LatencyTable
from ofa_deploy.accuracy import load_predictor
from ofa_deploy.collect import arch_for_index, read_records
from ofa_deploy.search import EvolutionConfig
from ofa_deploy.specialize import Scenario, _search, lut_id, make_scenarios
from supernet import (ArchConfig, OfaDeployError, Supernet, arch_cost,
                      extract_subnet, get_space)

SPACE = "ofa-mbv3-tiny"


def _spec_args(assets, out, *extra):
    return ["specialize", "--supernet", assets / "net.pt", "--lut", assets / "lut.json",
            "--predictor", assets / "pred.pt", "--target", "cpu", "--data", "synthetic",
            "--generations", "5", "--population", "16", "--aging-islands", "0", "--runs", "5", "--warmup", "1",
            "--threads", "1", "--out", out, *extra]


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_specialize_writes_artifacts_and_report(assets, tmp_path, run_cli):
    out = tmp_path / "run"
    r = run_cli(*_spec_args(assets, out, "--ms", "0.9", "--formats", "onnx,tflite", "--json"))
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "report.json").read_text())
    for key in ("arch", "target", "budget_ms", "predicted_latency_ms", "measured_latency_ms",
                "predicted_accuracy", "measured_accuracy", "params", "macs", "lut_min_ms",
                "lut_max_ms", "artifacts", "runtime", "command", "lut_id"):
        assert key in rep, key
    assert set(rep["measured_latency_ms"]) >= {"median", "p10", "p90"}
    assert rep["measured_latency_ms"]["p10"] <= rep["measured_latency_ms"]["median"] \
        <= rep["measured_latency_ms"]["p90"]
    assert rep["predicted_latency_ms"] <= 0.9
    assert rep["lut_min_ms"] <= rep["predicted_latency_ms"] <= rep["lut_max_ms"]
    assert rep["within_budget"] == (rep["measured_latency_ms"]["median"] <= 0.9)
    assert 0.0 <= rep["measured_accuracy"] <= 1.0
    sp = get_space(SPACE)
    arch = ArchConfig.from_dict(rep["arch"], sp)
    # metadata that travels with the model: every number recomputed here
    meta = json.loads((out / "model.json").read_text())
    sub = extract_subnet(Supernet(sp), arch)
    assert meta["params"] == rep["params"] == sum(p.numel() for p in sub.parameters())
    assert meta["macs"] == rep["macs"] == arch_cost(sp, arch)["macs"]
    assert meta["lut_id"] == lut_id(LatencyTable.load(assets / "lut.json"))
    assert meta["predicted_latency_ms"] == pytest.approx(
        LatencyTable.load(assets / "lut.json").predict_one(arch))
    for fmt, name in (("onnx", "model.onnx"), ("tflite", "model.tflite")):
        f = out / name
        assert meta["files"][fmt]["sha256"] == _sha(f)
        assert meta["files"][fmt]["bytes"] == f.stat().st_size
        assert rep["artifacts"][fmt]["max_abs_diff"] < 1e-3
    for f in ("report.md", "search.png", "latency.png", "config.yaml"):
        assert (out / f).is_file(), f
    assert "within budget" in (out / "report.md").read_text()


def test_exported_artifacts_match_torch(assets, tmp_path):
    """ONNX via onnxruntime and TFLite via LiteRT give the torch subnet's logits."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    from ofa_deploy.export import export_artifacts

    sp = get_space(SPACE)
    net = Supernet(sp).eval()
    arch = ArchConfig.sample(sp, np.random.default_rng(3), resolutions=[40])
    sub = extract_subnet(net, arch).eval()
    arts = export_artifacts(sub, (1, 3, 40, 40), tmp_path, ["onnx", "tflite"])
    x = np.random.default_rng(9).standard_normal((1, 3, 40, 40)).astype(np.float32)
    want = sub(torch.from_numpy(x)).detach().numpy()
    sess = ort.InferenceSession(arts["onnx"]["path"], providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, want, atol=1e-4)
    it = Interpreter(model_path=arts["tflite"]["path"])
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    np.testing.assert_allclose(it.get_tensor(it.get_output_details()[0]["index"]), want, atol=1e-3)


def test_infeasible_budget_fails_fast(assets, tmp_path, run_cli):
    lo, _ = LatencyTable.load(assets / "lut.json").min_max()
    t0 = time.perf_counter()
    r = run_cli(*_spec_args(assets, tmp_path / "x", "--ms", str(lo / 2), "--formats", "onnx"))
    assert time.perf_counter() - t0 < 30
    assert r.exit_code != 0
    msg = r.output.strip()
    assert msg.count("\n") == 0 and msg.startswith("Error:")
    assert f"{lo:.3f}" in msg and "infeasible" in msg
    assert not (tmp_path / "x" / "model.onnx").exists()


def test_search_is_deterministic_and_respects_budgets(assets):
    sp = get_space(SPACE)
    table = LatencyTable.load(assets / "lut.json")
    pred = load_predictor(assets / "pred.pt", sp)
    cfg = EvolutionConfig(aging_islands=0, population=16, generations=5, seed=4)
    scen = make_scenarios(["cpu"], [0.5, 0.8])
    a = _search(sp, pred, table, scen, cfg)
    b = _search(sp, pred, table, scen, cfg)
    assert [r.arch for r in a] == [r.arch for r in b]
    for s, r in zip(scen, a):
        assert table.predict_one(r.arch) <= s.budget_ms + 1e-9
    assert a[0].predicted_accuracy <= a[1].predicted_accuracy + 1e-12  # looser never worse


def test_multi_scenario_writes_one_dir_each_and_summary(assets, tmp_path, run_cli):
    out = tmp_path / "multi"
    r = run_cli(*_spec_args(assets, out, "--ms", "0.6", "--ms", "0.9", "--formats", "onnx"))
    assert r.exit_code == 0, r.output
    dirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert dirs == ["ort-cpu-0.6ms", "ort-cpu-0.9ms"]
    summary = json.loads((out / "summary.json").read_text())
    assert [s["budget_ms"] for s in summary["scenarios"]] == [0.6, 0.9]
    assert (out / "summary.md").is_file()
    for d in dirs:
        assert (out / d / "report.json").is_file() and (out / d / "model.onnx").is_file()


def test_make_scenarios_pairs_and_errors():
    assert make_scenarios(["cpu", "tflite:cpu"], [5, 9]) == [Scenario("cpu", 5.0),
                                                              Scenario("tflite:cpu", 9.0)]
    assert len(make_scenarios(["cpu"], [1, 2, 3])) == 3
    assert len(make_scenarios(["cpu", "tflite:cpu"], [4])) == 2
    with pytest.raises(OfaDeployError, match="budgets"):
        make_scenarios(["cpu", "tflite:cpu", "cuda"], [1, 2])
    with pytest.raises(OfaDeployError, match="positive"):
        make_scenarios(["cpu"], [-1])
    with pytest.raises(OfaDeployError):
        make_scenarios(["nonsense-device!"], [1])


def test_phone_target_without_table_names_profile_command(assets, tmp_path, run_cli,
                                                          monkeypatch):
    monkeypatch.setenv("OFA_DEPLOY_HOME", str(tmp_path / "home"))
    r = run_cli("specialize", "--supernet", assets / "net.pt", "--predictor", assets / "pred.pt",
                "--target", "adb:pixel", "--ms", "5", "--data", "none", "--out", tmp_path / "o")
    assert r.exit_code != 0
    assert "ofa-deploy profile --device adb:pixel --space ofa-mbv3-tiny" in r.output


def test_export_command_writes_checked_artifacts(assets, tmp_path, run_cli):
    out = tmp_path / "exp"
    r = run_cli("export", "--supernet", assets / "net.pt", "--arch", "min", "--format", "onnx",
                "--data", "none", "--out", out, "--json")
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "model.json").read_text())
    sp = get_space(SPACE)
    assert meta["arch"] == ArchConfig.min(sp).to_dict()
    assert meta["macs"] == arch_cost(sp, ArchConfig.min(sp))["macs"]
    assert meta["files"]["onnx"]["sha256"] == _sha(out / "model.onnx")
    bad = run_cli("export", "--supernet", assets / "net.pt", "--arch", "min", "--format", "pt")
    assert bad.exit_code != 0 and "unknown export format" in bad.output


def test_predictor_collect_resumes_and_trains(assets, tmp_path, run_cli):
    data = tmp_path / "acc.jsonl"
    common = ["predictor", "collect", "--supernet", assets / "net.pt", "--data", "synthetic",
              "--out", data, "--resolutions", "32", "--calib-images", "32", "--eval-images", "64",
              "--json"]
    r = run_cli(*common, "--samples", "3")
    assert r.exit_code == 0, r.output
    first = read_records(data)
    assert sorted(x["index"] for x in first) == [0, 1, 2]
    with open(data, "a") as fh:  # a torn line, as a kill mid-write would leave
        fh.write('{"index": 3, "arch"')
    r = run_cli(*common, "--samples", "5", "--shard", "1/2")  # odd indices only
    assert r.exit_code == 0, r.output
    recs = read_records(data)
    assert sorted(x["index"] for x in recs) == [0, 1, 2, 3]
    assert recs[:3] == first  # nothing recomputed
    sp = get_space(SPACE)
    for rec in recs:
        assert ArchConfig.from_dict(rec["arch"], sp) == arch_for_index(sp, 0, rec["index"], [32])
        assert 0.0 <= rec["accuracy"] <= 1.0 and rec["samples"] == 64
    # train needs >= 10 records: synthesise the rest from a known function of the arch
    with open(data, "a") as fh:
        for i in range(100, 160):
            a = arch_for_index(sp, 0, i)
            fh.write(json.dumps({"index": i, "seed": 0, "space": SPACE, "arch": a.to_dict(),
                                 "accuracy": 0.5 + 0.01 * sum(a.d) + 0.002 * sum(a.e)}) + "\n")
    out = tmp_path / "p.pt"
    r = run_cli("predictor", "train", "--data", data, "--out", out, "--epochs", "60",
                "--hidden", "32", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["n_train"] + rep["n_val"] == 64 and np.isfinite(rep["val_rmse"])
    p = load_predictor(out, sp)
    assert p.predict([ArchConfig.max(sp)]).shape == (1,)
    bad = run_cli("predictor", "collect", "--data", "synthetic", "--samples", "1", "--out",
                  data, "--shard", "3/2", "--supernet", assets / "net.pt")
    assert bad.exit_code != 0 and "shard" in bad.output
