"""int8 latency tables: quantized op models, cache and file separation from fp32, precision
checks, `profile/lut validate/show/predict --precision`, bench's precision column."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from luts.convert import OpModelCache, _convert, _Job, converter_tag
from luts.store import default_lut_path, load_table
from luts.table import LatencyTable, LUTError, check_precision
from profilers.base import DeviceSpec, LatencyStats, Profiler
from supernet.op_models import op_input_shape
from supernet.ops import enumerate_ops

TINY = "ofa-mbv3-tiny"
RES = [32]
QDQ = {"QuantizeLinear", "DequantizeLinear"}


def onnx_ops(path) -> set:
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node}


def is_quantized_onnx(path) -> bool:
    ops = onnx_ops(path)
    return bool(ops & QDQ) or any(o.startswith("QLinear") for o in ops)


class FakeProfiler(Profiler):
    """Times nothing (latency = file size); records every artifact it was given."""

    def __init__(self, fmt: str = "onnx"):
        super().__init__(DeviceSpec("ort", "cpu"), threads=1, runs=2, warmup=0)
        self.artifact_format = fmt
        self.seen = []

    def measure(self, artifact, input_shape):
        self.seen.append(artifact)
        v = 1e-6 * (os.path.getsize(artifact) if self.artifact_format != "torch" else 1000)
        return LatencyStats(v, 0.9 * v, 1.1 * v, 0.01 * v, self.runs)


@pytest.fixture(scope="module")
def int8_build(tmp_path_factory):
    """`profile --precision int8` on the real onnxruntime CPU backend, one tiny resolution, few
    runs, calibrated on 4 subnets, with the cache directory of a fresh home."""
    from click.testing import CliRunner

    from ofa_deploy.cli import main

    home = tmp_path_factory.mktemp("int8-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("OFA_DEPLOY_HOME", str(home))
    try:
        r = CliRunner().invoke(main, ["profile", "--device", "cpu", "--space", TINY,
                                      "--resolutions", "32", "--precision", "int8", "--runs", "3",
                                      "--warmup", "1", "--rounds", "1", "--calibrate", "4",
                                      "--json"])
        yield home, r
    finally:
        mp.undo()


@pytest.fixture
def home(int8_build, monkeypatch):
    monkeypatch.setenv("OFA_DEPLOY_HOME", str(int8_build[0]))
    return int8_build[0]


def test_profile_int8_builds_a_quantized_table_apart_from_fp32(int8_build, home):
    _, r = int8_build
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    path = default_lut_path("cpu", TINY, "int8")
    assert data["precision"] == "int8" and Path(data["path"]) == path
    assert path.name == f"{TINY}-int8.json" and path.is_file()
    assert not default_lut_path("cpu", TINY).exists()  # the fp32 table's file is untouched
    t = LatencyTable.load(path)
    assert t.precision == "int8" and t.meta["precision"] == "int8"
    assert t.meta["quantization"]["precision"] == "int8"
    assert t.meta["quantization"]["per_channel"] is True
    assert t.missing_ops() == [] and t.calibration["precision"] == "int8"
    assert all(r["precision"] == "int8" for r in t.meta["reference_ops"])
    # every op model timed is quantized, and lives in the int8 cache directory only
    ops_root = home / "ops" / "onnx"
    assert [p.name for p in ops_root.iterdir()] == [converter_tag("onnx", "int8")]
    files = sorted((ops_root / converter_tag("onnx", "int8")).glob("*.onnx"))
    assert len(files) == t.meta["models_converted"] > len(t.entries)
    assert all(is_quantized_onnx(f) for f in files[::10])


def test_int8_op_models_are_quantized_and_cached_apart(tmp_path):
    op = [o for o in enumerate_ops(TINY, RES) if o.kind == "block" and o.se][0]
    paths = {}
    for prec in ("fp32", "int8"):
        cache = OpModelCache(tmp_path, "onnx", prec)
        job = _Job(op.to_string(), op_input_shape(op), TINY, 0, True, prec)
        paths[prec] = cache.path(job)
        _convert(job, "onnx", str(paths[prec]))
    assert converter_tag("onnx") != converter_tag("onnx", "int8")
    assert paths["fp32"].parent != paths["int8"].parent
    assert not onnx_ops(paths["fp32"]) & QDQ
    ops = onnx_ops(paths["int8"])
    assert QDQ <= ops and "GlobalAveragePool" in ops  # the shipped int8 graph's SE pooling
    # an fp32 cache never hands out an int8 op model, nor the reverse
    with pytest.raises(LUTError, match="is int8; this cache holds fp32"):
        OpModelCache(tmp_path, "onnx").path(_Job("x", (1, 3, 8, 8), TINY, 0, False, "int8"))
    with pytest.raises(LUTError, match="no int8 op models for artifact format 'torch'"):
        converter_tag("torch", "int8")


def test_int8_tflite_op_model_is_full_integer_and_times_on_litert(tmp_path):
    pytest.importorskip("litert_torch")
    from profilers.litert import LiteRTProfiler

    op = [o for o in enumerate_ops(TINY, RES) if o.kind == "stem"][0]
    job = _Job(op.to_string(), op_input_shape(op), TINY, 0, False, "int8")
    path = OpModelCache(tmp_path, "tflite", "int8").path(job)
    _convert(job, "tflite", str(path))
    assert path.parent.name == converter_tag("tflite", "int8") != converter_tag("tflite")
    prof = LiteRTProfiler(DeviceSpec.parse("tflite:cpu"), threads=1, runs=2, warmup=1,
                          flush_bytes=0)
    inp = prof.interpreter(str(path)).get_input_details()[0]
    assert inp["dtype"].__name__ == "int8"  # full-integer: int8 in, as on a phone
    assert prof.measure(str(path), job.shape).median_ms > 0


def test_precision_meta_round_trip_and_old_tables_read_as_fp32(tmp_path):
    t = LatencyTable(TINY, RES, meta={"device": "ort:cpu", "precision": "int8"})
    t.save(tmp_path / "t.json")
    back = LatencyTable.load(tmp_path / "t.json")
    assert back.precision == "int8" and back.meta["precision"] == "int8" and back == t
    old = LatencyTable(TINY, RES, meta={"device": "ort:cpu"})  # written before int8 tables
    old.save(tmp_path / "old.json")
    assert "precision" not in json.loads((tmp_path / "old.json").read_text())["meta"]
    assert LatencyTable.load(tmp_path / "old.json").precision == "fp32"
    state = t.get_state()
    state["meta"]["precision"] = "int4"
    with pytest.raises(LUTError, match="unknown precision 'int4'"):
        LatencyTable.from_state(state, source="x.json")


def test_check_precision_passes_the_same_and_refuses_the_other(tmp_path):
    t = LatencyTable(TINY, RES, meta={"device": "ort:cpu", "precision": "int8"})
    t.path = tmp_path / "t.json"
    assert check_precision(t, "int8") is t and check_precision(t, None) is t
    assert check_precision(t, "INT8") is t
    with pytest.raises(LUTError) as err:
        check_precision(t, "fp32", what="the target")
    msg = str(err.value)
    assert "\n" not in msg and f"{t.path} is int8, the target wants fp32" in msg
    old = LatencyTable(TINY, RES, meta={"device": "ort:cpu"})
    with pytest.raises(LUTError, match="is fp32, specialize wants int8"):
        check_precision(old, "int8", what="specialize")
    with pytest.raises(LUTError, match="unknown precision"):
        check_precision(old, "bf16")


def test_device_tables_of_each_precision_live_side_by_side(tmp_path, monkeypatch):
    monkeypatch.setenv("OFA_DEPLOY_HOME", str(tmp_path))
    fp, q = default_lut_path("cpu", TINY), default_lut_path("cpu", TINY, "int8")
    assert fp != q and fp.parent == q.parent and fp.name == f"{TINY}.json"
    for prec, path in (("fp32", fp), ("int8", q)):
        meta = {"device": "ort:cpu"} if prec == "fp32" else {"device": "ort:cpu",
                                                              "precision": prec}
        LatencyTable(TINY, RES, meta=meta).save(path)
    assert load_table("cpu", space=TINY).precision == "fp32"
    assert load_table("cpu", space=TINY, precision="int8").precision == "int8"
    assert load_table("cpu", precision="int8").path == q  # the only space with an int8 table
    with pytest.raises(LUTError, match="is fp32, --precision int8 wants int8"):
        load_table(str(fp), precision="int8", what="--precision int8")
    q.unlink()
    with pytest.raises(LUTError, match="no int8 latency table.*--precision int8`"):
        load_table("cpu", space=TINY, precision="int8")


def test_resuming_a_table_of_the_other_precision_is_refused(tmp_path):
    from luts.builder import build_lut

    from luts.convert import METHOD_VERSION

    out = tmp_path / "t.json"
    # an fp32 table of before int8 tables (no precision key), built with what this build uses
    LatencyTable(TINY, RES, meta={
        "device": "ort:cpu", "method": "context-difference", "method_version": METHOD_VERSION,
        "threads": 1, "artifact_format": "onnx", "seed": 0, "runs": 2, "warmup": 0,
        "flush_bytes": None, "cache": "warm"}).save(out)
    with pytest.raises(LUTError, match="built with precision='fp32', this build has "
                                       "precision='int8'"):
        build_lut(TINY, "cpu", resolutions=RES, out=out, profiler=FakeProfiler(),
                  cache_dir=tmp_path / "ops", progress=False, precision="int8")
    with pytest.raises(LUTError, match="no int8 form"):
        build_lut(TINY, "cuda:0", resolutions=RES, out=tmp_path / "c.json",
                  profiler=FakeProfiler("torch"), progress=False, precision="int8")


def test_int8_whole_subnets_and_references_are_quantized(int8_build, home, tmp_path):
    from luts.calibrate import measure_subnets, table_protocol
    from luts.drift import reference_artifacts
    from luts.validate import sample_archs, validate_lut

    t = load_table("cpu", space=TINY, precision="int8")
    prof = FakeProfiler()
    archs = sample_archs(t, 2, seed=5)
    checked = []

    class Checking(FakeProfiler):
        def measure(self, artifact, input_shape):
            checked.append(is_quantized_onnx(artifact))
            return super().measure(artifact, input_shape)

    measure_subnets(t, archs, Checking(), table_protocol(t).with_(network_rounds=1))
    assert checked == [True, True]
    refs = reference_artifacts(t, "onnx")
    assert refs and all(Path(p).parent.name == converter_tag("onnx", "int8") for p in refs)
    assert all(is_quantized_onnx(p) for p in refs)
    with pytest.raises(LUTError, match="is int8, this validation wants fp32"):
        validate_lut(t, "cpu", samples=2, profiler=prof, precision="fp32", progress=False)


def test_lut_validate_show_predict_int8_cli(int8_build, home, run_cli):
    r = run_cli("lut", "validate", "--lut", "cpu", "--space", TINY, "--precision", "int8",
                "--samples", "2", "--runs", "2", "--warmup", "1", "--json")
    assert r.exit_code == 0, r.output
    v = json.loads(r.stdout)
    assert v["meta"]["precision"] == "int8" and v["samples"] == 2
    r = run_cli("lut", "show", "cpu", "--space", TINY, "--precision", "int8")
    assert r.exit_code == 0, r.output
    assert any(line.split()[:2] == ["precision", "int8"] for line in r.stdout.splitlines())
    path = default_lut_path("cpu", TINY, "int8")
    r = run_cli("lut", "predict", "--lut", path, "--arch", "max", "--resolution", "32", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["precision"] == "int8"
    # no fp32 table for this device: the fp32 lookup says so and names the command
    r = run_cli("lut", "show", "cpu", "--space", TINY)
    assert r.exit_code != 0 and "no fp32 latency table" in r.output


@pytest.mark.parametrize("have,want", [("fp32", "int8"), ("int8", "fp32")])
def test_lut_validate_precision_mismatch_is_one_line(run_cli, tmp_path, have, want):
    meta = {"device": "ort:cpu"} if have == "fp32" else {"device": "ort:cpu", "precision": have}
    LatencyTable(TINY, RES, meta=meta).save(tmp_path / "t.json")
    r = run_cli("lut", "validate", "--lut", tmp_path / "t.json", "--precision", want,
                "--samples", "2")
    assert r.exit_code != 0 and isinstance(r.exception, SystemExit)  # not a crash
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"is {have}, --precision {want} wants {want}" in lines[0]


def test_bench_records_and_shows_each_artifacts_precision(tmp_path):
    from ofa_deploy import bench as B

    op = [o for o in enumerate_ops(TINY, RES) if o.kind == "stem"][0]
    for prec in ("fp32", "int8"):
        d = tmp_path / prec
        d.mkdir()
        _convert(_Job(op.to_string(), op_input_shape(op), TINY, 0, False, prec), "onnx",
                 str(d / "model.onnx"))
        assert B.read_precision(d / "model.onnx") == prec
    # a model.json describing the very file wins over reading the graph
    sha = B.collect_artifacts([tmp_path / "fp32"])[0].sha256
    (tmp_path / "fp32" / "model.json").write_text(json.dumps(
        {"files": {"onnx": {"path": "model.onnx", "sha256": sha, "precision": "int8"}}}))
    arts = {a.root.name: a for a in B.collect_artifacts([tmp_path / "fp32", tmp_path / "int8"])}
    assert arts["fp32"].precision == "int8" and arts["int8"].precision == "int8"
    (tmp_path / "fp32" / "model.json").unlink()
    arts = {a.root.name: a for a in B.collect_artifacts([tmp_path / "fp32", tmp_path / "int8"])}
    a8 = arts["int8"]
    assert arts["fp32"].precision == "fp32" and a8.precision == "int8"
    res = B.BenchResult(a8, "ort:cpu", "ok", LatencyStats(1.0, 0.9, 1.1, 0.1, 5))
    rep = B.BenchReport([res], {"runs": 5})
    assert rep.to_dict()["results"][0]["precision"] == "int8"
    assert B.RESULT_HEADERS[1] == "precision" and B.result_rows(rep)[0][1] == "int8"
    assert "| precision |" in B.markdown_summary(rep)
    # a re-exported file matched by name alone must be of the same precision
    dev = DeviceSpec.parse("cpu")
    base = [{"artifact": a8.name, "sha256": "other", "device": str(dev), "median_ms": 2.0}]
    assert B.match_baseline([a8], [dev], base)[0] == {}
    base[0]["precision"] = "int8"
    assert list(B.match_baseline([a8], [dev], base)[0].values())[0][1] == "name"


def test_int8_onnx_op_cache_is_keyed_by_the_weight_range():
    from luts.convert import converter_tag

    # 7-bit (reduce_range) and full-range QDQ op models are different files: never shared
    assert "-rr-" in converter_tag("onnx", "int8")
    assert "-rr" not in converter_tag("tflite", "int8") and "-rr" not in converter_tag("onnx")
