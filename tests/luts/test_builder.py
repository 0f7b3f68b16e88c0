"""LUT builder: complete tables, resume after a kill, rounds, the op-model cache, `profile` CLI."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from luts.builder import OpModelCache, build_lut, converter_tag, raw_path
from luts.table import LatencyTable, LUTError
from profilers.base import DeviceSpec, LatencyStats, Profiler
from supernet import ArchConfig
from supernet.ops import arch_ops, enumerate_ops

TINY = "ofa-mbv3-tiny"
RES = [32]


class FakeProfiler(Profiler):
    """Times nothing: latency is a deterministic function of the artifact's size (ONNX file
    bytes, or torch parameter count), optionally scaled per call to imitate a noisy machine.
    Counts calls; can fail after N calls. The ONNX flavour uses the op models the real build
    converted (and cached), so it needs no conversion."""

    def __init__(self, *, fail_after: int | None = None, scale=None, fmt: str = "onnx"):
        super().__init__(DeviceSpec("ort", "cpu"), threads=1, runs=3, warmup=0)
        self.artifact_format = fmt
        self.calls = 0
        self.fail_after = fail_after
        self.scale = scale or (lambda call: 1.0)

    def measure(self, artifact, input_shape):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        if self.artifact_format == "torch":
            size = 1000 + sum(p.numel() for p in artifact.parameters())
        else:
            size = os.path.getsize(artifact)
        v = size * 1e-6 * self.scale(self.calls)
        return LatencyStats(v, 0.9 * v, 1.1 * v, 0.01 * v, self.runs)


@pytest.fixture(scope="module")
def op_cache(tmp_path_factory) -> Path:
    # One cache for the session: validation tests convert into the same place.
    return tmp_path_factory.getbasetemp() / "op-cache"


@pytest.fixture(scope="module")
def ort_table(tmp_path_factory, op_cache):
    out = tmp_path_factory.mktemp("lut") / "tiny.json"
    t = build_lut(TINY, "cpu", resolutions=RES, out=out, runs=3, warmup=1, rounds=1, threads=1,
                  cache_dir=op_cache, progress=False)
    return t, out


def test_builds_a_complete_table_with_every_op(ort_table, op_cache):
    t, out = ort_table
    ops = enumerate_ops(TINY, RES)
    assert t.missing_ops() == []
    assert set(t.entries) == set(ops)
    loaded = LatencyTable.load(out)
    assert loaded == t
    loaded.validate()
    m = loaded.meta
    assert m["complete"] is True and m["device"] == "ort:cpu" and m["threads"] == 1
    assert m["method"] == "context-difference" and m["artifact_format"] == "onnx"
    assert m["ops"] == len(ops) and m["op_timings_this_run"] == len(ops)
    assert m["profiler"]["runtime"] == "onnxruntime" and m["loadavg_start"] is not None
    assert m["build_seconds"] > 0 and m["drift"]["baseline_ms"] > 0
    assert 0 < t.overhead_ms == m["overhead_stats"]["median_ms"]
    # converted: every op model, one context model per input shape, the overhead model
    shapes = {(o.kind in ("feature_mix", "classifier"), o.cin, o.h) for o in ops}
    files = sorted((op_cache / "onnx" / converter_tag("onnx")).glob("*.onnx"))
    assert len(files) == len(ops) + len(shapes) + 1
    # another test module may have filled the shared cache first: every file is either
    # converted by this build or taken from the cache, never both
    assert m["models_converted"] + m["models_from_cache"] == len(files)
    raw = json.loads(raw_path(out).read_text())
    assert raw["rounds"][ops[0].to_string()] == 1


def test_prediction_is_sum_of_entries_plus_overhead(ort_table, rng):
    t, _ = ort_table
    for _ in range(5):
        a = ArchConfig.sample(TINY, rng, resolutions=RES)
        want = sum(t.entries[o].median_ms for o in arch_ops(TINY, a)) + t.overhead_ms
        assert t.predict_one(a) == pytest.approx(want, rel=1e-12)
    lo, hi = t.min_max()
    assert 0 < lo < hi


def test_second_build_reuses_the_op_model_cache(ort_table, op_cache, tmp_path):
    files = list((op_cache / "onnx" / converter_tag("onnx")).glob("*.onnx"))
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    t = build_lut(TINY, "cpu", resolutions=RES, out=tmp_path / "again.json", runs=2, warmup=0,
                  rounds=1, threads=1, cache_dir=op_cache, progress=False)
    assert t.meta["models_converted"] == 0 and t.meta["models_from_cache"] > len(t.entries)
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes
    # and the cache is per format and converter version, not per device
    assert OpModelCache(op_cache, "onnx").dir.name == converter_tag("onnx")


def test_rerunning_a_complete_build_times_nothing(ort_table, op_cache):
    t, out = ort_table
    before = out.read_text()
    again = build_lut(TINY, "cpu", resolutions=RES, out=out, runs=3, warmup=1, rounds=1,
                      threads=1, cache_dir=op_cache, progress=False)
    assert again.meta["op_timings_this_run"] == 0
    assert again.entries == LatencyTable.from_state(json.loads(before)).entries


@pytest.fixture
def fake_build(op_cache, ort_table):
    """build_lut with a FakeProfiler over the cached op models of the real build."""

    def run(out, prof=None, **kw):
        kw.setdefault("resolutions", RES)
        kw.setdefault("rounds", 1)
        return build_lut(TINY, "cpu", out=out, profiler=prof or FakeProfiler(), progress=False,
                         cache_dir=op_cache, **kw)

    return run


def test_kill_mid_build_then_resume_skips_done_ops(tmp_path, fake_build):
    out = tmp_path / "t.json"
    ops = enumerate_ops(TINY, RES)
    # calls: overhead, then context + op for the first op, then ops (+ a context per new shape)
    prof = FakeProfiler(fail_after=20)
    with pytest.raises(KeyboardInterrupt):
        fake_build(out, prof)
    partial = LatencyTable.load(out)
    done = set(partial.entries)
    assert 0 < len(done) < len(ops)
    assert partial.meta["complete"] is False
    assert partial.missing_ops() and set(partial.missing_ops()) == set(ops) - done

    seen = []
    prof2 = FakeProfiler()
    t = fake_build(out, prof2, on_op=lambda op, s: seen.append(op))
    assert set(seen) == set(ops) - done  # only the ops not done before
    assert t.missing_ops() == [] and t.meta["complete"] is True
    assert all(t.entries[o] == partial.entries[o] for o in done)
    # a fresh build from scratch gives the same table (the fake is deterministic)
    t2 = fake_build(tmp_path / "t2.json")
    assert t2.entries == t.entries


def test_exception_after_k_ops_loses_at_most_the_op_in_flight(tmp_path, fake_build):
    out = tmp_path / "t.json"

    class Boom(Exception):
        pass

    k = 7
    count = [0]

    def on_op(op, s):
        count[0] += 1
        if count[0] == k:
            raise Boom()

    with pytest.raises(Boom):
        fake_build(out, on_op=on_op)
    assert len(LatencyTable.load(out).entries) == k


def _slow_second_pass(fake_build, out, first_estimator, **second):
    """Build ``out`` in one round with ``first_estimator``, then extend it by a second round
    (``second``: its build_lut arguments) in which every call is twice as slow. Returns the
    profiler, its calls after the first round, and both tables."""
    n_first = [None]
    prof = FakeProfiler(scale=lambda call: 1.0 if n_first[0] is None or call <= n_first[0]
                        else 2.0)
    t1 = fake_build(out, prof, estimator=first_estimator)
    n_first[0] = prof.calls
    t2 = fake_build(out, prof, rounds=2, **second)
    return prof, n_first[0], t1, t2


def test_rounds_pool_every_run_and_more_rounds_refine(tmp_path, fake_build):
    out = tmp_path / "t.json"
    # every call in the second pass is twice as slow: the entry is the median of the pooled
    # runs (1x and 2x -> 1.5x), not the best round; a third pass at 0.5x brings it back to 1x
    # (the second pass is resumed without an estimator: it takes the table's)
    prof, n_first, t1, t2 = _slow_second_pass(fake_build, out, "median-pooled")
    assert prof.calls > n_first and t2.meta["rounds"] == 2
    assert t2.meta["protocol"]["rounds"] == 2 and t2.meta["protocol"]["estimator"] == \
        "median-pooled"
    raw = json.loads(raw_path(out).read_text())
    assert set(raw["rounds"].values()) == {2}
    op = enumerate_ops(TINY, RES)[0]
    assert len(raw["samples"][op.to_string()]) == 2
    assert t2.entries[op].median_ms == pytest.approx(1.5 * t1.entries[op].median_ms)
    assert t2.entries[op].runs == 2
    t3 = fake_build(out, FakeProfiler(scale=lambda c: 0.5), rounds=3)
    assert t3.entries[op].median_ms == pytest.approx(t1.entries[op].median_ms)
    # per-entry noise and the reference ops are recorded
    noise = t3.meta["noise"]
    assert set(noise["per_entry_cv"]) == {o.to_string() for o in t3.entries}
    assert noise["per_entry_cv"][op.to_string()] > 0  # 0.5x, 1x, 2x spread
    refs = t3.meta["reference_ops"]
    assert 1 <= len(refs) <= 3 and all(r["median_ms"] > 0 for r in refs)


def test_best_round_median_build_keeps_the_quiet_round_and_refuses_mixing(tmp_path,
                                                                           fake_build):
    out = tmp_path / "t.json"
    # the second pass is twice as slow: pooled, the entry would be 1.5x; best-round-median
    # keeps the quieter round (1x), and a third, faster pass (0.5x) becomes the entry
    _, _, t1, t2 = _slow_second_pass(fake_build, out, "best-round-median",
                                     estimator="best-round-median")
    assert t2.meta["protocol"]["estimator"] == t2.meta["estimator"] == "best-round-median"
    assert "lowest" in t2.meta["stats_note"]
    op = enumerate_ops(TINY, RES)[0]
    raw = json.loads(raw_path(out).read_text())
    assert raw["round_sizes"][op.to_string()] == [1, 1]  # one median per round (no samples)
    assert t2.entries[op].median_ms == pytest.approx(t1.entries[op].median_ms)
    assert t2.entries[op].runs == 2
    t3 = fake_build(out, FakeProfiler(scale=lambda c: 0.5), rounds=3,
                    estimator="best-round-median")
    assert t3.entries[op].median_ms == pytest.approx(0.5 * t1.entries[op].median_ms)
    # rounds timed for one estimator are not finished under another
    with pytest.raises(LUTError, match="estimator='best-round-median'.*"
                                       "estimator='median-pooled'.*--fresh"):
        fake_build(out, FakeProfiler(), rounds=4, estimator="median-pooled")
    assert LatencyTable.load(out).meta["protocol"]["rounds"] == 3  # left as it was
    # ... nor a progress file without its table
    out.unlink()
    with pytest.raises(LUTError, match="estimator='best-round-median'"):
        fake_build(out, FakeProfiler(), rounds=4, estimator="median-pooled")
    # a table written before the estimator was recorded is median-pooled and resumes as such
    old = tmp_path / "old.json"
    fake_build(old, estimator="median-pooled")
    t = LatencyTable.load(old)
    del t.meta["estimator"]
    t.save(old)
    assert fake_build(old, FakeProfiler(), rounds=2).meta["estimator"] == "median-pooled"


def test_isolated_method_subtracts_the_overhead(tmp_path, fake_build):
    # torch-format fake: isolated op models are not in the ONNX cache, and need no converting
    t = fake_build(tmp_path / "t.json", FakeProfiler(fmt="torch"), context=False)
    assert t.meta["method"] == "isolated-minus-overhead"
    raw = json.loads(raw_path(tmp_path / "t.json").read_text())["stats"]
    ctx = fake_build(tmp_path / "c.json", FakeProfiler(fmt="torch"))
    craw = json.loads(raw_path(tmp_path / "c.json").read_text())["stats"]
    from supernet.op_models import context_name, op_input_shape

    for op in list(t.entries)[::10]:
        alone = raw[op.to_string()]["median_ms"] - raw["overhead"]["median_ms"]
        behind = (craw[op.to_string()]["median_ms"]
                  - craw[context_name(op_input_shape(op))]["median_ms"])
        assert t.entries[op].median_ms == pytest.approx(max(0.0, alone), abs=1e-15)
        assert ctx.entries[op].median_ms == pytest.approx(max(0.0, behind), abs=1e-15)
    assert t.overhead_ms == raw["overhead"]["median_ms"] == ctx.overhead_ms


def test_resume_refuses_other_settings_and_fresh_overrides(tmp_path, fake_build):
    out = tmp_path / "t.json"
    fake_build(out)
    other = FakeProfiler()
    other.runs = 9
    with pytest.raises(LUTError, match="runs=3.*runs=9.*--fresh"):
        fake_build(out, other)
    t = fake_build(out, other, fresh=True)
    assert t.meta["runs"] == 9
    with pytest.raises(LUTError, match="space ofa-mbv3-tiny, not ofa-mbv3-w1.0"):
        build_lut("ofa-mbv3-w1.0", "cpu", resolutions=[128], out=out, profiler=other,
                  progress=False, rounds=1)
    with pytest.raises(LUTError, match=r"resolution\(s\) \[33\]"):
        fake_build(out, other, resolutions=[33])


def test_widening_resolutions_times_only_new_ops(tmp_path):
    # torch-format fake: no conversion needed for the new resolution's ops
    out = tmp_path / "t.json"
    build_lut(TINY, "cpu", resolutions=[32], out=out, profiler=FakeProfiler(fmt="torch"),
              progress=False, rounds=1)
    seen = []
    t = build_lut(TINY, "cpu", resolutions=[32, 40], out=out,
                  profiler=FakeProfiler(fmt="torch"), progress=False, rounds=1,
                  on_op=lambda op, s: seen.append(op))
    assert set(seen) == set(enumerate_ops(TINY, [32, 40])) - set(enumerate_ops(TINY, [32]))
    assert t.resolutions == (32, 40) and t.missing_ops() == []


# ----------------------------------------------------------------------------- CLI
def test_profile_cli(run_cli, tmp_path, op_cache, ort_table, monkeypatch):
    monkeypatch.setenv("OFA_DEPLOY_HOME", str(tmp_path / "home"))
    r = run_cli("profile", "--device", "cpu", "--space", TINY, "--resolutions", "32",
                "--runs", "2", "--warmup", "0", "--rounds", "1", "--threads", "1",
                "--cache-dir", op_cache, "--calibrate", "4", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    from luts.store import default_lut_path

    # calibrated on 4 whole subnets, the fit and its held-out error stored in the table
    c = d["calibration"]
    assert c["samples"] == 4 and c["model"] in c["candidates"]
    saved = LatencyTable.load(d["path"])
    assert saved.calibration["model"] == c["model"] and len(saved.calibration["archs"]) == 4
    assert d["protocol"] == saved.meta["protocol"] and d["protocol"]["threads"] == 1

    assert d["path"] == str(default_lut_path(DeviceSpec.parse("cpu"), TINY))
    assert d["ops"] == len(enumerate_ops(TINY, RES)) and d["models_converted"] == 0
    assert d["latency_range"][0]["resolution"] == 32 and d["threads"] == 1
    assert Path(d["path"]).is_file()
    # the human form prints a table
    r = run_cli("profile", "--device", "cpu", "--space", TINY, "--resolutions", "32",
                "--runs", "2", "--warmup", "0", "--rounds", "1", "--threads", "1",
                "--cache-dir", op_cache, "--calibrate", "0", "-q")
    assert r.exit_code == 0 and "overhead" in r.output
    # where an arch's time goes: the calibrated prediction and its costliest ops
    t = LatencyTable.load(d["path"])
    r = run_cli("lut", "predict", "--lut", d["path"], "--arch", "max", "--resolution", "32",
                "--top", "3", "--json")
    assert r.exit_code == 0, r.output
    p = json.loads(r.stdout)
    amax = ArchConfig.parse("max", TINY).with_resolution(32)
    assert p["predicted_ms"] == pytest.approx(t.predict_one(amax), rel=1e-12)
    ms = sorted((t.get(o, amax.r).median_ms for o in arch_ops(TINY, amax)), reverse=True)[:3]
    assert [x["measured_ms"] for x in p["top_ops"]] == pytest.approx(ms)
    assert p["op_sum_ms"] == pytest.approx(sum(t.get(o, amax.r).median_ms
                                               for o in arch_ops(TINY, amax)))
    r = run_cli("inspect", "--space", TINY, "--arch", "max", "--resolution", "32", "--target",
                d["path"])
    assert r.exit_code == 0, r.output
    assert "top ops" in r.output and f"{p['predicted_ms']:.3f} ms" in r.output
    r = run_cli("inspect", "--space", TINY, "--target", d["path"])
    assert r.exit_code != 0 and "--target needs --arch" in r.output


def test_profile_cli_records_the_estimator(run_cli, tmp_path, op_cache, ort_table, monkeypatch):
    import luts.builder as LB

    monkeypatch.setattr(LB, "get_profiler", lambda spec, **kw: FakeProfiler())
    out = tmp_path / "t.json"
    args = ["profile", "--device", "cpu", "--space", TINY, "--resolutions", "32", "--rounds",
            "2", "--cache-dir", op_cache, "--calibrate", "0", "--out", out]
    r = run_cli(*args, "--estimator", "best-round-median", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    meta = LatencyTable.load(out).meta
    assert d["estimator"] == meta["protocol"]["estimator"] == "best-round-median"
    # resuming without --estimator takes the table's; another estimator is refused
    r = run_cli(*args, "--estimator", "median-pooled", "--rounds", "3")
    assert r.exit_code != 0
    err = [ln for ln in r.output.splitlines() if ln.startswith("Error")]
    assert len(err) == 1 and "estimator='best-round-median'" in err[0], r.output
    r = run_cli(*args, "--estimator", "mean")
    assert r.exit_code != 0 and "'mean' is not one of" in r.output
    r = run_cli(*args, "--fresh", "--estimator", "median-pooled", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["estimator"] == "median-pooled"
    # a table built under the old default (median-pooled) is extended under it, not refused
    r = run_cli(*[a if a != "2" else "3" for a in args], "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["estimator"] == "median-pooled"
    assert LatencyTable.load(out).meta["rounds"] == 3
    r = run_cli(*args, "--fresh", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["estimator"] == "best-round-median"  # the default


@pytest.mark.parametrize("args,msg", [
    (["--device", "nope", "--space", TINY], "unknown backend"),
    (["--device", "cpu", "--space", "nope"], "unknown space"),
    (["--device", "cpu", "--space", TINY, "--resolutions", "33"], "not in space"),
    (["--device", "cpu", "--space", TINY, "--resolutions", "3x"], "not an integer"),
    (["--device", "cpu", "--space", TINY, "--runs", "0"], "--runs"),
    (["--device", "cpu", "--space", TINY, "--cpus", "10000"], "not available"),
])
def test_profile_cli_errors_are_one_line(run_cli, args, msg, tmp_path, monkeypatch):
    monkeypatch.setenv("OFA_DEPLOY_HOME", str(tmp_path / "home"))
    r = run_cli("profile", *args)
    assert r.exit_code != 0
    err = [ln for ln in r.output.splitlines() if ln.startswith("Error")]
    assert len(err) == 1 and msg in err[0], r.output
    assert "Traceback" not in r.output
