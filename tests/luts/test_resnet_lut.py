"""Latency tables for the ResNet family: a real (onnxruntime) build of a tiny ResNet space holds
exactly its ops, predictions are the sum of the entries, the table round-trips, calibration
and `lut validate` time whole subnets of the family's extraction, and tables of another family
are refused in one line."""
from __future__ import annotations

import numpy as np
import pytest

from luts.builder import build_lut
from luts.calibrate import calibrate_lut
from luts.store import load_table
from luts.table import LatencyTable, LUTError
from luts.validate import sample_archs, validate_lut
from profilers.base import LatencyStats
from supernet.arch import ArchConfig
from supernet.resnet_ops import resnet_arch_ops, resnet_enumerate_ops
from supernet.resnet_space import RESNET_SPACES, ResNetArch, ResNetSpace

TINY = ResNetSpace(name="resnet-tiny-lut-test", description="tiny ResNet for LUT tests",
                   resolutions=(32, 40), width_mult_choices=(0.5, 1.0),
                   expand_choices=(0.25, 0.5), depth_choices=(0, 1), base_depths=(1, 1),
                   base_stage_widths=(32, 64), stage_strides=(1, 2), stem_base_width=16,
                   num_classes=10)
RES = [32]


@pytest.fixture(scope="module")
def registered():
    # tables name their space; the tiny one is registered for this module only
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(RESNET_SPACES, TINY.name, TINY)
        yield TINY


@pytest.fixture(scope="module")
def table_path(registered, tmp_path_factory):
    out = tmp_path_factory.mktemp("lut") / "resnet-tiny.json"
    # convert_workers=0: op models convert in this process, which knows the tiny space
    build_lut(TINY, "cpu", resolutions=RES, out=out, runs=3, warmup=1, rounds=1, threads=1,
              convert_workers=0, cache_dir=tmp_path_factory.getbasetemp() / "op-cache",
              progress=False)
    return out


def test_build_holds_exactly_the_ops_and_predicts_their_sum(table_path):
    t = LatencyTable.load(table_path)
    assert t.space is TINY and t.family.name == "resnet"
    assert set(t.entries) == set(resnet_enumerate_ops(TINY, RES)) and t.missing_ops() == []
    assert t.meta["complete"] and t.meta["ops"] == len(t.entries)
    assert all(s.median_ms >= 0 for s in t.entries.values()) and t.overhead_ms > 0
    archs = sample_archs(t, 12, seed=0)
    assert len(set(archs)) == 12 and all(isinstance(a, ResNetArch) and a.r == 32 for a in archs)
    want = [sum(t.entries[op].median_ms for op in resnet_arch_ops(TINY, a)) + t.overhead_ms
            for a in archs]
    np.testing.assert_allclose(t.predict(archs), want, rtol=1e-12)
    assert t.predict_one(archs[0]) == pytest.approx(want[0], rel=1e-12)
    assert [op for op, _ in t.breakdown(archs[0])] == resnet_arch_ops(TINY, archs[0])
    lo, hi = t.min_max()
    assert lo <= min(want) and hi >= max(want)
    ex = t.explain(archs[0], top=3)
    assert ex["ops"] == len(resnet_arch_ops(TINY, archs[0])) and len(ex["top_ops"]) == 3
    assert LatencyTable.from_state(t.get_state()) == t


def test_calibration_and_validation_time_whole_subnets(table_path, tmp_path):
    t = LatencyTable.load(table_path)
    calibrate_lut(t, "cpu", samples=4, seed=0, save=False)
    cal = t.calibration
    assert len(cal["rows"]) == 4 and all(r["measured_ms"] > 0 for r in cal["rows"])
    assert all(ResNetArch.from_string(a, TINY) for a in cal["archs"])
    r = validate_lut(t, "cpu", samples=3, seed=1, runs=3, warmup=1, rounds=1, progress=False,
                     drift=False)
    assert r["samples"] == 3 and r["meta"]["space"] == TINY.name
    for row in r["rows"]:
        a = ResNetArch.from_string(row["arch_string"], TINY)
        assert a.to_string(TINY) not in cal["archs"]
        assert row["predicted_ms"] == pytest.approx(t.predict_one(a), rel=1e-9)
        assert row["measured_ms"] > 0


def test_other_family_tables_and_archs_are_refused_in_one_line(table_path):
    t = LatencyTable.load(table_path)
    with pytest.raises(LUTError, match="takes ResNet archs") as e:
        t.predict([ArchConfig.max("ofa-mbv3-tiny")])
    assert "\n" not in str(e.value)
    with pytest.raises(LUTError, match="is for space ofa-mbv3-w1.2, not ofa-resnet50"):
        load_table("note10", space="ofa-resnet50")
    with pytest.raises(LUTError, match=f"is for space {TINY.name}, not ofa-mbv3-tiny"):
        load_table(table_path, space="ofa-mbv3-tiny")
    bad = t.get_state()
    bad["entries"]["block-h32-i16-o16-m48-k3-s1-se0-relu-skip1"] = \
        LatencyStats(1.0, 1.0, 1.0, 0.0, 1).to_dict()
    with pytest.raises(LUTError, match="is not an op of space resnet-tiny-lut-test"):
        LatencyTable.from_state(bad)


def test_profile_cli_builds_a_resnet_table(table_path, run_cli, tmp_path, tmp_path_factory):
    out = tmp_path / "t.json"
    # the op models the fixture converted are reused from its cache
    res = run_cli("profile", "--device", "cpu", "--space", TINY.name, "--resolutions", "32",
                  "--runs", "2", "--warmup", "0", "--rounds", "1", "--threads", "1",
                  "--calibrate", "0", "--convert-workers", "0", "--cache-dir",
                  tmp_path_factory.getbasetemp() / "op-cache", "--out", out, "--json")
    assert res.exit_code == 0, res.output
    t = LatencyTable.load(out)
    assert set(t.entries) == set(resnet_enumerate_ops(TINY, RES))
    assert t.meta["models_from_cache"] > 0
    res = run_cli("profile", "--device", "cpu", "--space", TINY.name, "--resolutions",
                  "48", "--out", tmp_path / "u.json")
    assert res.exit_code == 2 and "not in space resnet-tiny-lut-test" in res.output


def test_committed_ofa_resnet50_table_is_complete():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks/resnet_lut/cpu-ofa-resnet50-128.json"
    t = LatencyTable.load(path)
    assert t.space.name == "ofa-resnet50" and t.resolutions == (128,)
    assert t.missing_ops() == [] and len(t.entries) == 162 and t.calibration is not None
    lo, hi = t.min_max()
    assert 0 < lo < t.predict_one(ResNetArch.max("ofa-resnet50", 128)) == pytest.approx(hi)
