"""LatencyTable: prediction, exact range, missing ops, interpolation, file format, lookup."""
import dataclasses
import itertools
import json
import time

import numpy as np
import pytest

from luts import (BUILTIN_TABLES, SCHEMA, SCHEMA_VERSION, LatencyTable, LUTError,
                  builtin_table_path, cache_dir, default_lut_path, load_table)
from profilers.base import DeviceSpec, LatencyStats
from supernet import ArchConfig, get_space
from supernet.batch import ArchBatch
from supernet.ops import arch_ops, enumerate_ops

TINY = "ofa-mbv3-tiny"
RES = (32, 48)


def _stats(v: float, runs: int = 20) -> LatencyStats:
    return LatencyStats(v, 0.9 * v, 1.1 * v, 0.05 * v, runs)


def make_table(space=TINY, resolutions=RES, seed=0, overhead=0.0) -> LatencyTable:
    """A synthetic table: latency roughly proportional to MACs plus a random per-op part."""
    rng = np.random.default_rng(seed)
    ops = enumerate_ops(space, resolutions)
    entries = {op: _stats(op.macs * 1e-6 + 0.01 + float(rng.random()) * 0.05) for op in ops}
    return LatencyTable(space, resolutions, meta={"device": "synthetic"}, entries=entries,
                        overhead_ms=overhead)


def brute_latency(t: LatencyTable, arch: ArchConfig) -> float:
    return sum(t.get(op, arch.r).median_ms for op in arch_ops(t.space, arch)) + t.overhead_ms


def test_predict_equals_sum_of_ops_per_arch():
    t = make_table(overhead=0.7)
    rng = np.random.default_rng(1)
    archs = [ArchConfig.sample(TINY, rng, resolutions=RES) for _ in range(200)]
    got = t.predict(archs)
    want = np.array([brute_latency(t, a) for a in archs])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert t.predict_one(archs[3]) == pytest.approx(want[3], rel=1e-12)
    # the batch path gives the same numbers as the list path
    np.testing.assert_allclose(t.predict(ArchBatch.from_archs(TINY, archs)), got, rtol=0)
    # overhead counts exactly once per network
    t0 = make_table(overhead=0.0)
    np.testing.assert_allclose(got - t0.predict(archs), 0.7, rtol=1e-9)


def test_predict_tolerates_junk_in_skipped_blocks_and_rejects_bad_choices():
    t = make_table()
    sp = get_space(TINY)
    a = ArchConfig.min(sp, r=32)
    ks = list(a.ks)
    ks[sp.max_depth - 1] = 9  # stage 0 runs 2 blocks, so block 3 is skipped
    junk = ArchBatch(sp, np.array([ks]), np.array([a.e]), np.array([a.d]), np.array([32]))
    assert t.predict(junk)[0] == pytest.approx(t.predict_one(a))
    ks[0] = 9
    bad = ArchBatch(sp, np.array([ks]), np.array([a.e]), np.array([a.d]), np.array([32]))
    with pytest.raises(LUTError, match="outside space"):
        t.predict(bad)
    with pytest.raises(LUTError, match="resolution"):
        t.predict([a.with_resolution(40)])  # in the space, not in the table
    with pytest.raises(LUTError, match="space"):
        t.predict(ArchBatch.sample("ofa-mbv3-w1.2", 2, np.random.default_rng(0)))


def _small_space():
    # Two stages and two choices per dimension: every subnet can be enumerated (400 per res).
    return dataclasses.replace(
        get_space(TINY), name="lut-test-small", stage_widths=(16, 24), stage_strides=(2, 2),
        stage_acts=("relu", "h_swish"), stage_se=(False, True), kernel_choices=(3, 5),
        expand_choices=(3, 4), depth_choices=(1, 2), resolutions=(32, 40))


def test_min_max_is_exact_against_brute_force():
    sp = _small_space()
    t = make_table(sp, sp.resolutions, seed=3, overhead=0.25)
    nb, ns = sp.num_blocks, sp.num_stages
    ks, es, ds, rs = [], [], [], []
    for r in sp.resolutions:
        for d in itertools.product(sp.depth_choices, repeat=ns):
            for k in itertools.product(sp.kernel_choices, repeat=nb):
                for e in itertools.product(sp.expand_choices, repeat=nb):
                    ks.append(k), es.append(e), ds.append(d), rs.append(r)
    batch = ArchBatch(sp, np.array(ks), np.array(es), np.array(ds), np.array(rs))
    lat = t.predict(batch)
    lo, hi = t.min_max()
    assert lo == pytest.approx(lat.min(), rel=1e-12) and hi == pytest.approx(lat.max(), rel=1e-12)
    for r in sp.resolutions:
        lo_r, hi_r = t.min_max([r])
        sel = batch.r == r
        assert lo_r == pytest.approx(lat[sel].min(), rel=1e-12)
        assert hi_r == pytest.approx(lat[sel].max(), rel=1e-12)
    with pytest.raises(LUTError, match="not in the latency table"):
        t.min_max([48])


def test_missing_entry_names_the_op_and_missing_ops_lists_it():
    t = make_table()
    victim = next(op for op in t.entries if op.kind == "block" and op.kernel == 7)
    del t.entries[victim]
    assert t.missing_ops() == [victim]
    with pytest.raises(LUTError) as ei:
        t.get(victim)
    assert victim.to_string() in str(ei.value)
    with pytest.raises(LUTError) as ei:
        t.predict(ArchBatch.sample(TINY, 10, np.random.default_rng(0), resolutions=RES))
    assert victim.to_string() in str(ei.value)
    with pytest.raises(LUTError, match=victim.to_string()):
        t.min_max()


def test_interpolation_is_explicit_and_reported(tmp_path):
    t = make_table()
    full = make_table()
    victim = next(op for op in t.entries if op.kind == "block" and op.kernel == 7 and op.h == 16)
    del t.entries[victim]
    g = t.grid(interpolate=True)
    assert set(t.interpolated) == {victim}
    rec = t.interpolated[victim]
    src = type(victim).from_string(rec["from"])
    assert src.kind == victim.kind and src != victim
    assert rec["median_ms"] == pytest.approx(
        t.get(src).median_ms * victim.macs / src.macs, rel=1e-12)
    assert rec["resolutions"] and set(rec["resolutions"]) <= set(RES)
    # the estimate enters the prediction only where the victim op runs
    batch = ArchBatch.sample(TINY, 300, np.random.default_rng(2), resolutions=RES)
    uses = np.array([victim in arch_ops(TINY, a) for a in batch.to_archs()])
    assert uses.any() and not uses.all()
    diff = t.predict(batch, interpolate=True) - full.predict(batch)
    np.testing.assert_allclose(diff[~uses], 0.0, atol=1e-12)
    assert np.all(diff[uses] != 0)
    assert np.all(np.isfinite(g.blocks))
    # the default stays strict, and the report survives a save/load
    with pytest.raises(LUTError, match=victim.to_string()):
        t.predict(batch)
    p = t.save(tmp_path / "t.json")
    state = json.loads(p.read_text())
    assert victim.to_string() in state["interpolated"]
    assert victim.to_string() not in state["entries"]
    t2 = LatencyTable.load(p)
    assert victim in t2.interpolated and t2.missing_ops() == [victim]


def test_interpolation_needs_an_op_of_the_same_kind():
    t = make_table()
    for op in [o for o in t.entries if o.kind == "classifier"]:
        del t.entries[op]
    with pytest.raises(LUTError, match="no measured classifier op"):
        t.grid(interpolate=True)


def test_resolution_entries_override_only_their_resolution():
    t = make_table()
    shared = next(op for op in t.entries if op.kind == "classifier")
    base = ArchBatch.sample(TINY, 50, np.random.default_rng(4), resolutions=RES)
    before = t.predict(base)
    t.add(shared, _stats(t.get(shared).median_ms + 2.0), resolution=48)
    after = t.predict(base)
    np.testing.assert_allclose(after - before, np.where(base.r == 48, 2.0, 0.0), atol=1e-12)
    assert t.get(shared, 48).median_ms == pytest.approx(t.get(shared).median_ms + 2.0)


def test_save_load_round_trip_is_exact_and_stable(tmp_path):
    t = make_table(overhead=0.125)
    t.add(next(iter(t.entries)), _stats(1.5), resolution=32)
    p = t.save(tmp_path / "sub" / "t.json")
    first = p.read_bytes()
    t2 = LatencyTable.load(p)
    assert t2 == t and t2.path == p
    t2.save(p)
    assert p.read_bytes() == first  # byte-stable: sorted keys, exact floats
    assert [f.name for f in p.parent.iterdir()] == ["t.json"]  # no temp file left behind
    state = json.loads(first)
    assert state["schema"] == SCHEMA and state["schema_version"] == SCHEMA_VERSION
    assert state["meta"]["space"] == TINY and state["meta"]["resolutions"] == list(RES)
    op_s, rec = next(iter(state["entries"].items()))
    assert set(rec) == {"median_ms", "p10_ms", "p90_ms", "std_ms", "runs"}
    arch = ArchConfig.sample(TINY, np.random.default_rng(0), resolutions=RES)
    assert t2.predict_one(arch) == t.predict_one(arch)


@pytest.mark.parametrize("mutate,match", [
    (lambda s: "{not json", "corrupt"),
    (lambda s: json.dumps({**s, "schema": "something-else"}), "not an ofa-deploy latency table"),
    (lambda s: json.dumps({**s, "schema_version": SCHEMA_VERSION + 1}), "newer ofa-deploy"),
    (lambda s: json.dumps([1, 2]), "expected a JSON object"),
    (lambda s: json.dumps({**s, "meta": {**s["meta"], "space": "nope"}}), "unknown space"),
    (lambda s: json.dumps({**s, "entries": {"garbage": {}}}), "not an op key"),
    (lambda s: json.dumps({**s, "entries": {k: {"median_ms": 1.0} for k in s["entries"]}}),
     "bad latency stats"),
    (lambda s: json.dumps({**s, "entries": {
        "block-h999-i16-o16-m48-k3-s1-se0-relu-skip1": next(iter(s["entries"].values()))}}),
     "not an op of space"),
    (lambda s: json.dumps({**s, "entries": {k: {**v, "p10_ms": v["median_ms"] * 2}
                                            for k, v in s["entries"].items()}}),
     "p10 <= median <= p90"),
    (lambda s: json.dumps({**s, "meta": {**s["meta"], "resolutions": [33]}}),
     "not resolutions of space"),
])
def test_bad_files_give_lut_error(tmp_path, mutate, match):
    state = make_table().get_state()
    p = tmp_path / "bad.json"
    p.write_text(mutate(state))
    with pytest.raises(LUTError, match=match):
        LatencyTable.load(p)


def test_missing_file_gives_lut_error(tmp_path):
    with pytest.raises(LUTError, match="not found"):
        LatencyTable.load(tmp_path / "none.json")
    with pytest.raises(LUTError, match="not found"):
        load_table(str(tmp_path / "none.json"))


def test_cache_paths(monkeypatch, tmp_path):
    monkeypatch.setenv("OFA_DEPLOY_HOME", str(tmp_path))
    assert cache_dir() == tmp_path
    assert default_lut_path("cpu", TINY) == tmp_path / "luts" / "ort-cpu" / f"{TINY}.json"
    assert default_lut_path(DeviceSpec.parse("adb:pixel"), get_space(TINY)) == \
        tmp_path / "luts" / "adb-pixel" / f"{TINY}.json"
    assert default_lut_path("my phone", TINY).parent.name == "my-phone"
    monkeypatch.delenv("OFA_DEPLOY_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    import sys
    if sys.platform.startswith("linux"):
        assert cache_dir() == tmp_path / "xdg" / "ofa-deploy"


def test_load_table_by_builtin_path_and_device(monkeypatch, tmp_path):
    monkeypatch.setenv("OFA_DEPLOY_HOME", str(tmp_path))
    assert set(BUILTIN_TABLES) >= {"note10"}
    assert builtin_table_path("note10").is_file()
    n10 = load_table("note10")
    assert n10.space.name == "ofa-mbv3-w1.2" and n10.meta["device"] == "note10"
    with pytest.raises(LUTError, match="is for space ofa-mbv3-w1.2, not ofa-mbv3-tiny"):
        load_table("note10", space=TINY)
    # a device spec without a profiled table says how to build one
    with pytest.raises(LUTError, match=r"ofa-deploy profile --device ort:cpu --space ofa-mbv3-tiny"):
        load_table("cpu", space=TINY)
    with pytest.raises(LUTError, match=r"ofa-deploy profile --device ort:cpu"):
        load_table("cpu")
    t = make_table()
    t.save(default_lut_path("cpu", TINY))
    assert load_table("cpu") == t
    assert load_table("ort:cpu", space=TINY) == t
    t.save(tmp_path / "x.json")
    assert load_table(str(tmp_path / "x.json")) == t
    with pytest.raises(LUTError, match="not a latency table file"):
        load_table("definitely not a thing")


def test_predict_is_vectorised_exact_and_fast():
    t = load_table("note10")
    batch = ArchBatch.sample(t.space, 100_000, np.random.default_rng(0), resolutions=t.resolutions)
    t.predict(batch[:10])  # build the grid outside the timing
    t0 = time.perf_counter()
    y = t.predict(batch)
    rate = len(batch) / (time.perf_counter() - t0)
    assert y.shape == (100_000,)
    # the vectorised numbers are the per-op sums (spot-checked on 50 archs)
    idx = np.random.default_rng(1).choice(len(batch), 50, replace=False)
    archs = batch[idx].to_archs()
    want = [brute_latency(t, a) for a in archs]
    np.testing.assert_allclose(y[idx], want, rtol=1e-9)
    # a search prices tens of thousands of archs per generation: a floor far below what a
    # vectorised grid does (millions per second), far above a per-arch Python loop
    assert rate > 100_000, f"note10 predict: {rate:,.0f} archs/s"


def test_calibration_and_speed_scale_are_applied_exactly():
    t = make_table(resolutions=[32, 40], overhead=0.1)
    rng = np.random.default_rng(2)
    archs = [ArchConfig.sample(TINY, rng, resolutions=[32, 40]) for _ in range(40)]
    raw = np.array([brute_latency(t, a) for a in archs])
    np.testing.assert_allclose(t.predict(archs), raw, rtol=1e-12)
    t.calibration = {"model": "overhead+per-resolution-scale", "scale": {"32": 1.2, "40": 1.5},
                     "overhead_ms": 0.3, "p90_factor": 1.1}
    s = np.array([1.2 if a.r == 32 else 1.5 for a in archs])
    np.testing.assert_allclose(t.predict(archs), s * raw + 0.3, rtol=1e-12)
    np.testing.assert_allclose(t.predict(archs, quantile=90), 1.1 * (s * raw + 0.3), rtol=1e-12)
    np.testing.assert_allclose(t.predict(archs, calibrated=False), raw, rtol=1e-12)
    t.speed_scale = 0.8
    np.testing.assert_allclose(t.predict(archs), 0.8 * (s * raw + 0.3), rtol=1e-12)
    assert t.quantile_factor(90) == 1.1 and t.quantile_factor(50) == 1.0
    # the exact range follows the calibrated grid
    lo, hi = t.min_max([40])
    assert lo <= min(p for p, a in zip(t.predict(archs), archs) if a.r == 40)
    with pytest.raises(LUTError, match="quantile must be 50 or 90"):
        t.predict(archs, quantile=75)
    back = LatencyTable.from_state(t.get_state())
    assert back.calibration == t.calibration and back.speed_scale == 1.0  # scale not saved
    bad = t.get_state()
    bad["calibration"]["scale"]["32"] = "fast"
    with pytest.raises(LUTError, match="calibration values must be numbers"):
        LatencyTable.from_state(bad)
