"""fp16 latency tables: fp16-weight TFLite op models cached apart, the table's precision and
file name, CUDA's .half() tables, and the refusals (ONNX/onnxruntime, a torch profiler that
times fp32, a table of another precision)."""
from __future__ import annotations

import json
import os
import shutil
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


def tflite_dtypes(path) -> dict:
    from supernet.export_tflite import tflite_dtype_counts

    return tflite_dtype_counts(path)


class FakeProfiler(Profiler):
    """Times nothing (latency from the file size, or a constant for torch modules); records
    what it was given. ``half`` as the CUDA profiler has it."""

    def __init__(self, fmt: str = "tflite", spec: str = "tflite:cpu", half: bool = False):
        super().__init__(DeviceSpec.parse(spec), threads=1, runs=2, warmup=0)
        self.artifact_format = fmt
        self.half = half
        self.seen = []

    def measure(self, artifact, input_shape):
        self.seen.append(artifact)
        v = 1e-3 if self.artifact_format == "torch" else 1e-7 * os.path.getsize(artifact)
        return LatencyStats(v, 0.9 * v, 1.1 * v, 0.01 * v, self.runs)


@pytest.fixture(scope="module")
def fp16_op_model(tmp_path_factory):
    """One real fp16 TFLite op model (the stem), converted through the op-model cache."""
    pytest.importorskip("litert_torch")
    op = [o for o in enumerate_ops(TINY, RES) if o.kind == "stem"][0]
    job = _Job(op.to_string(), op_input_shape(op), TINY, 0, False, "fp16")
    root = tmp_path_factory.mktemp("ops")
    path = OpModelCache(root, "tflite", "fp16").path(job)
    _convert(job, "tflite", str(path))
    return job, path


def test_fp16_tflite_op_model_has_fp16_weights_and_its_own_cache(fp16_op_model, tmp_path):
    from profilers.litert import LiteRTProfiler

    job, path = fp16_op_model
    tags = {converter_tag("tflite", p) for p in ("fp32", "int8", "fp16")}
    assert len(tags) == 3 and path.parent.name == converter_tag("tflite", "fp16")
    dtypes = tflite_dtypes(path)
    assert dtypes.get("float16", 0) >= 1  # the conv weight, stored as fp16
    assert "int8" not in dtypes and "uint8" not in dtypes
    prof = LiteRTProfiler(DeviceSpec.parse("tflite:cpu"), threads=1, runs=2, warmup=1,
                          flush_bytes=0)
    inp = prof.interpreter(str(path)).get_input_details()[0]
    assert inp["dtype"].__name__ == "float32"  # fp16 weights, float32 in and out
    assert prof.measure(str(path), job.shape).median_ms > 0
    # an fp32 cache never hands out an fp16 op model
    with pytest.raises(LUTError, match="is fp16; this cache holds fp32"):
        OpModelCache(tmp_path, "tflite").path(job)


def test_no_fp16_onnx_op_models():
    with pytest.raises(LUTError, match="no fp16 op models for artifact format 'onnx'.*"
                                       "TFLite and CUDA only"):
        converter_tag("onnx", "fp16")
    assert converter_tag("torch", "fp16") != converter_tag("torch")


def test_build_fp16_tflite_table_times_fp16_op_models(fp16_op_model, tmp_path, monkeypatch):
    """The whole build path at fp16 (jobs, cache directory, meta, file name), with every op
    model a copy of one real fp16 conversion so that the test stays fast."""
    import supernet.quantize as Q
    from luts.builder import build_lut

    _, real = fp16_op_model
    made = []

    def fake_export_fp16(model, input_shape, path, fmt):
        Q.check_fp16_format(fmt)
        made.append(Path(path))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real, path)
        return {"quantization": Q.fp16_settings()}

    monkeypatch.setattr(Q, "export_fp16", fake_export_fp16)
    monkeypatch.setenv("OFA_DEPLOY_HOME", str(tmp_path / "home"))
    prof = FakeProfiler()
    t = build_lut(TINY, "tflite:cpu", resolutions=RES, profiler=prof, progress=False,
                  convert_workers=0, precision="fp16", cache_dir=tmp_path / "ops")
    path = default_lut_path("tflite:cpu", TINY, "fp16")
    assert t.path == path and path.name == f"{TINY}-fp16.json" and path.is_file()
    back = LatencyTable.load(path)
    assert back.precision == "fp16" and back.meta["converter"] == converter_tag("tflite", "fp16")
    assert back.meta["quantization"]["weights"] == "float16" and back.missing_ops() == []
    cache_dir = tmp_path / "ops" / "tflite" / converter_tag("tflite", "fp16")
    assert made and all(p.parent == cache_dir for p in made)
    assert all(Path(a).parent == cache_dir for a in prof.seen)
    assert not default_lut_path("tflite:cpu", TINY).exists()  # fp32 file untouched
    assert load_table("tflite:cpu", space=TINY, precision="fp16").precision == "fp16"
    with pytest.raises(LUTError, match="is fp16, --precision int8 wants int8"):
        load_table(str(path), precision="int8", what="--precision int8")


def test_cuda_fp16_table_needs_a_half_profiler(tmp_path):
    from luts.builder import build_lut

    t = build_lut(TINY, "cuda:0", resolutions=RES, out=tmp_path / "c.json",
                  profiler=FakeProfiler("torch", "cuda:0", half=True), progress=False,
                  precision="fp16")
    assert t.precision == "fp16" and t.meta["quantization"]["format"] == "torch-half"
    assert t.meta["converter"] == converter_tag("torch", "fp16")
    with pytest.raises(LUTError, match="times torch models in fp32"):
        build_lut(TINY, "cuda:0", resolutions=RES, out=tmp_path / "d.json",
                  profiler=FakeProfiler("torch", "cuda:0"), progress=False, precision="fp16")


def test_fp16_refused_on_onnxruntime_targets(tmp_path, run_cli):
    from luts.builder import build_lut

    with pytest.raises(LUTError, match="TFLite and CUDA only"):
        build_lut(TINY, "cpu", resolutions=RES, out=tmp_path / "t.json",
                  profiler=FakeProfiler("onnx", "cpu"), progress=False, precision="fp16")
    r = run_cli("profile", "--device", "cpu", "--space", TINY, "--resolutions", "32",
                "--precision", "fp16", "--out", tmp_path / "p.json")
    assert r.exit_code != 0 and isinstance(r.exception, SystemExit)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "fp16 is offered for TFLite and CUDA only" in lines[0]
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("have,want", [("fp16", "fp32"), ("fp32", "fp16"), ("int8", "fp16")])
def test_fp16_precision_mismatch_is_refused(run_cli, tmp_path, have, want):
    meta = {"device": "tflite:cpu"} if have == "fp32" else {"device": "tflite:cpu",
                                                            "precision": have}
    t = LatencyTable(TINY, RES, meta=meta)
    t.save(tmp_path / "t.json")
    assert check_precision(LatencyTable.load(tmp_path / "t.json"), have).precision == have
    r = run_cli("lut", "validate", "--lut", tmp_path / "t.json", "--precision", want,
                "--samples", "2")
    assert r.exit_code != 0 and "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"is {have}, --precision {want} wants {want}" in lines[0]
    r = run_cli("lut", "show", tmp_path / "t.json", "--precision", want)
    assert r.exit_code != 0 and f"is {have}" in r.output


def test_fp16_meta_round_trip(tmp_path):
    t = LatencyTable(TINY, RES, meta={"device": "tflite:cpu", "precision": "fp16"})
    t.save(tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text())["meta"]["precision"] == "fp16"
    assert LatencyTable.load(tmp_path / "t.json") == t


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA device")
def test_cuda_fp16_table_on_the_gpu(tmp_path):
    from luts.builder import build_lut

    t = build_lut(TINY, "cuda:0", resolutions=RES, out=tmp_path / "g.json", runs=3,
                  warmup=1, rounds=1, progress=False, precision="fp16")
    assert t.precision == "fp16" and t.meta["profiler"]["dtype"] == "float16"
    assert t.missing_ops() == []
