"""Suspect table entries (luts.outliers) and the builder's recheck of them."""
from __future__ import annotations

import dataclasses
import json

import pytest

from luts.builder import build_lut, raw_path
from luts.outliers import MIN_SIZES, suspect_entries
from luts.table import LatencyTable
from profilers.base import LatencyStats
from supernet.ops import OpKey, enumerate_ops
from tests.luts.test_builder import FakeProfiler

TINY = "ofa-mbv3-tiny"


def _curve(shape: OpKey, sizes, a=0.01, b=2e-4):
    return {dataclasses.replace(shape, h=h): a + b * h * h for h in sizes}


SHAPE = OpKey("block", 0, 16, 16, mid=64, kernel=5, stride=1, act="relu", skip=True)
OTHER = OpKey("block", 0, 24, 32, mid=96, kernel=3, stride=2, act="h_swish")


def test_an_entry_above_its_curve_is_flagged_and_nothing_else():
    e = {**_curve(SHAPE, [16, 20, 24, 28, 32]), **_curve(OTHER, [8, 10, 12, 14], b=1e-3)}
    slow = dataclasses.replace(SHAPE, h=24)
    fast = dataclasses.replace(OTHER, h=10)
    assert suspect_entries(e) == {}  # exactly on their curves
    e[slow] *= 1.3
    got = suspect_entries(e)
    assert list(got) == [slow]
    assert got[slow] == pytest.approx(0.3, rel=0.25)  # the curve fitted without it
    e[fast] *= 0.6  # below its curve: more rounds of the op cannot raise it, so not flagged
    assert fast not in suspect_entries(e) and slow in suspect_entries(e)


def test_small_excess_and_too_few_sizes_are_not_flagged():
    e = _curve(SHAPE, [16, 20, 24, 28], a=1e-4, b=1e-7)  # a few microseconds in all
    e[dataclasses.replace(SHAPE, h=20)] *= 1.5
    assert suspect_entries(e) == {}  # 50% up, but under MIN_EXCESS_MS
    few = _curve(OTHER, [8, 10, 12][:MIN_SIZES - 1])
    few[dataclasses.replace(OTHER, h=10)] *= 2
    assert suspect_entries(few) == {}  # no spare point to tell an outlier from the curve


def test_build_rechecks_entries_a_slow_spell_covered_and_recovers_them(tmp_path):
    res = [32, 40, 48, 56]
    rounds = 2
    out = tmp_path / "t.json"
    clean = build_lut(TINY, "cpu", resolutions=res, out=tmp_path / "clean.json",
                      profiler=FakeProfiler(fmt="torch"), progress=False, rounds=rounds,
                      estimator="best-round-median")
    assert clean.meta["recheck"]["suspects"] == 0
    # every model at input size 20 (r=40's first stages) is 1.6x slower in every main round
    # (a slow spell that covers the build), normal afterwards
    prof = FakeProfiler(fmt="torch")
    prof.factor = 1.6

    calls = {"n": 0}
    main_calls = [None]

    def measure(artifact, input_shape, _orig=FakeProfiler.measure):
        s = _orig(prof, artifact, input_shape)
        calls["n"] += 1
        slow = main_calls[0] is None and len(input_shape) == 4 and input_shape[2] == 20
        f = prof.factor if slow else 1.0
        return LatencyStats(s.median_ms * f, s.p10_ms * f, s.p90_ms * f, s.std_ms, s.runs)

    prof.measure = measure
    ops = enumerate_ops(TINY, res)
    at20 = {op for op in ops if op.h == 20}
    assert len(at20) >= 10

    def on_op(op, st):
        # the main rounds end when the last op of the last round is saved; after that the
        # spell is over (what the recheck's rounds see)
        done = json.loads(raw_path(out).read_text())["rounds"]
        if all(done.get(o.to_string(), 0) >= rounds for o in ops):
            main_calls[0] = calls["n"]

    t = build_lut(TINY, "cpu", resolutions=res, out=out, profiler=prof, progress=False,
                  rounds=rounds, estimator="best-round-median", on_op=on_op)
    rc = t.meta["recheck"]
    flagged = {OpKey.from_string(k) for k in rc["entries"]}
    caught = flagged & at20
    # most of the slowed entries are flagged (the ones whose shape exists at >= 4 sizes)
    testable = {op for op in at20
                if sum(dataclasses.replace(o, h=0) == dataclasses.replace(op, h=0)
                       for o in ops) >= MIN_SIZES}
    assert len(caught) >= 0.8 * len(testable) > 0
    assert rc["suspects"] == len(flagged) and rc["rounds"] == rounds
    # the recheck timed only the suspects, `rounds` more times each
    assert t.meta["op_timings_this_run"] == len(ops) * rounds + len(flagged) * rounds
    raw = json.loads(raw_path(out).read_text())
    for op in flagged:
        assert raw["rounds"][op.to_string()] == 2 * rounds
    # ... and brought them back to what a quiet machine measures
    for op in caught:
        assert rc["entries"][op.to_string()]["before_ms"] > 1.3 * clean.entries[op].median_ms
        assert t.entries[op].median_ms == pytest.approx(clean.entries[op].median_ms, rel=1e-9)
    # once per build: running the complete build again times nothing
    again = build_lut(TINY, "cpu", resolutions=res, out=out, profiler=FakeProfiler(fmt="torch"),
                      progress=False, rounds=rounds, estimator="best-round-median")
    assert again.meta["op_timings_this_run"] == 0


def test_recheck_can_be_turned_off(tmp_path):
    prof = FakeProfiler(fmt="torch")
    t = build_lut(TINY, "cpu", resolutions=[32, 40, 48, 56], out=tmp_path / "t.json",
                  profiler=prof, progress=False, rounds=1, recheck=False)
    assert "recheck" not in t.meta


def test_profile_cli_wires_the_recheck_and_the_remeasure(run_cli, tmp_path, monkeypatch):
    """`profile` rechecks by default and hands calibrate_or_remeasure a rebuild that extends
    the same file (never --fresh again); --no-recheck turns both off."""
    import luts.builder as LB
    import luts.calibrate as LC

    monkeypatch.setattr(LB, "get_profiler", lambda spec, **kw: FakeProfiler(fmt="torch"))
    seen = {}

    def fake(table, device, rebuild, **kw):
        seen["max"] = kw["max_heldout_mape"]
        seen["table"] = rebuild(3)  # what a disagreeing calibration asks for
        return seen["table"]

    monkeypatch.setattr(LC, "calibrate_or_remeasure", fake)
    out = tmp_path / "t.json"
    args = ["profile", "--device", "cpu", "--space", TINY, "--resolutions", "32,40,48,56",
            "--rounds", "1", "--out", out, "--fresh", "--json"]
    r = run_cli(*args)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert seen["max"] == LC.REMEASURE_HELDOUT_MAPE
    assert d["rounds"] == 3 and d["rechecked_entries"] == 0  # the fake's curve is flat
    raw = json.loads(raw_path(out).read_text())
    assert set(raw["rounds"].values()) == {3}  # extended in place, the first round kept
    r = run_cli(*args, "--no-recheck")
    assert r.exit_code == 0, r.output
    assert seen["max"] is None and "recheck" not in LatencyTable.load(out).meta
