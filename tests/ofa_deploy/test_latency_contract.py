"""The latency contract end to end, on a fake machine with injected bias and noise:
calibration recovers the bias, validation sees it, specialize's closed loop meets the budget
when measured, and every stage (table, validate, specialize, bench) measures with identical
settings."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from luts.calibrate import calibrate_lut, fit_calibration
from luts.table import LatencyTable
from luts.validate import validate_lut
from ofa_deploy.search import EvolutionConfig
from ofa_deploy.specialize import DataContext, Scenario, specialize
from profilers.base import DeviceSpec, LatencyStats, Profiler
from profilers.protocol import MeasurementProtocol
from supernet import Supernet, enumerate_ops, get_space

TINY = "ofa-mbv3-tiny"
RES = (32, 40)


def synthetic_table(seed: int = 0) -> LatencyTable:
    """Op latencies roughly proportional to MACs plus a random per-op part."""
    rng = np.random.default_rng(seed)
    t = LatencyTable(TINY, RES, meta={"device": "ort:cpu", "threads": 1})
    for op in enumerate_ops(TINY, RES):
        v = op.macs * 1e-6 + 0.01 + float(rng.random()) * 0.03
        t.add(op, LatencyStats(v, 0.9 * v, 1.1 * v, 0.01 * v, 10))
    return t


class BiasedMachine(Profiler):
    """A fake device whose whole networks take ``scale`` x their op sum (by ``truth``) plus
    ``offset`` ms, every run multiplied by log-normal noise of spread ``sigma``. Takes torch
    subnets (it reads their arch), so no export is needed; records its constructor kwargs."""

    artifact_format = "torch"
    made: list = []

    def __init__(self, spec=None, *, truth, scale=1.0, offset=0.0, sigma=0.02, seed=0,
                 runs=10, warmup=0, threads=1, **kw):
        super().__init__(spec or DeviceSpec("ort", "cpu"), threads=threads, runs=runs,
                         warmup=warmup)
        self.truth, self.scale, self.offset, self.sigma = truth, scale, offset, sigma
        self.rng = np.random.default_rng(seed)
        BiasedMachine.made.append({"runs": runs, "warmup": warmup, "threads": threads, **kw})

    def true_ms(self, arch) -> float:
        return self.scale * self.truth.predict_one(arch) + self.offset

    def measure_samples(self, artifact, input_shape):
        v = self.true_ms(artifact.arch)
        return list(v * self.rng.lognormal(0.0, self.sigma, self.runs))

    def measure(self, artifact, input_shape):
        return LatencyStats.from_samples(self.measure_samples(artifact, input_shape))


PROTO = MeasurementProtocol(runs=8, warmup=0, rounds=2)


def test_fit_prefers_the_model_that_generalises():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 3.0, 24)
    r = np.where(np.arange(24) % 2 == 0, 32, 40)
    m = 1.25 * x + 0.3  # a per-network overhead plus a scale: exactly overhead+scale
    cal = fit_calibration(x, m, r, RES)
    assert cal["model"] == "overhead+scale"
    assert cal["scale"]["32"] == pytest.approx(1.25) and cal["overhead_ms"] == pytest.approx(0.3)
    assert cal["candidates"]["scale"]["heldout_mape"] > 10 * cal["heldout_mape"]
    # a different scale per resolution and no overhead: the per-resolution model wins
    m2 = np.where(r == 32, 1.1, 1.5) * x
    cal2 = fit_calibration(x, m2, r, RES)
    assert cal2["model"] == "per-resolution-scale"
    assert cal2["scale"] == {"32": pytest.approx(1.1), "40": pytest.approx(1.5)}


def test_noisy_per_resolution_scales_are_shrunk_not_overfitted():
    """Few subnets per resolution and a per-subnet error of a few percent (an op table's
    noise): the shrunk model is kept, and it predicts unseen subnets better than the plain
    per-resolution fit of the same data."""
    rng = np.random.default_rng(3)
    res = (32, 40, 48, 56, 64)

    def draw(n):
        r = rng.choice(res, n)
        x = rng.uniform(0.3, 2.0, n)
        return x, r, 1.2 * x * rng.lognormal(0.0, 0.04, n)  # one true scale, noisy subnets

    wins = 0
    for _ in range(20):
        x, r, m = draw(20)
        cal = fit_calibration(x, m, r, res)
        assert cal["model"] == "shrunk-per-resolution-scale"
        assert set(cal["candidates"]) >= {"per-resolution-scale", "shrunk-per-resolution-scale"}
        vx, vr, vm = draw(200)
        shrunk = np.array([cal["scale"][str(k)] for k in vr]) * vx
        per_res = {int(k): float(np.sum(x[r == k] / m[r == k]) /
                                 np.sum((x[r == k] / m[r == k]) ** 2)) for k in set(r)}
        plain = np.array([per_res.get(int(k), 1.2) for k in vr]) * vx
        wins += np.mean(np.abs(shrunk / vm - 1)) < np.mean(np.abs(plain / vm - 1))
    assert wins >= 15


def test_calibration_recovers_injected_bias_and_validate_sees_it():
    t = synthetic_table()
    # the op sums of these subnets span 6..41 ms: a 3 ms per-network overhead matters
    machine = BiasedMachine(truth=synthetic_table(), scale=1.3, offset=3.0, sigma=0.03)
    calibrate_lut(t, samples=20, profiler=machine, protocol=PROTO, save=False)
    cal = t.calibration
    assert cal["model"].startswith("overhead+")
    assert cal["candidates"]["scale"]["heldout_mape"] > 1.5 * cal["heldout_mape"]
    assert cal["default_scale"] == pytest.approx(1.3, rel=0.05)
    assert cal["overhead_ms"] == pytest.approx(3.0, abs=0.6)
    assert cal["uncalibrated_mape"] > 0.2 and cal["heldout_mape"] < 0.03
    assert cal["p90_factor"] > 1.0 and len(cal["archs"]) == 20
    # the table survives a save/load with its calibration, and predicts calibrated
    back = LatencyTable.from_state(t.get_state())
    assert back.calibration == cal
    # held-out subnets (never the calibration's): the calibrated prediction is within 10%
    r = validate_lut(t, "cpu", samples=15, seed=3, profiler=machine, drift=False,
                     progress=False)
    assert not set(row["arch_string"] for row in r["rows"]) & set(cal["archs"])
    assert r["within_10pct"] == 1.0 and r["kendall_tau"] > 0.9
    assert r["uncalibrated"]["within_10pct"] == 0.0  # every op sum is >20% low
    assert r["warnings"] == []
    # the upper quantile covers most measured p90s
    p90 = validate_lut(t, "cpu", samples=15, seed=3, profiler=machine, drift=False,
                       progress=False, quantile=90)
    covered = np.mean([row["predicted_ms"] >= row["measured_p90_ms"] for row in p90["rows"]])
    assert covered >= 0.8


def test_noise_is_reported_not_hidden():
    t = synthetic_table()
    loud = BiasedMachine(truth=synthetic_table(), scale=1.0, sigma=0.3)
    r = validate_lut(t, "cpu", samples=6, profiler=loud, drift=False, progress=False)
    assert r["median_cv"] > 0.2
    assert any("noisy machine" in w and "run to run" in w for w in r["warnings"])


class SizePredictor:
    """Accuracy that grows with the op sum, so the search spends the budget it is given."""

    def __init__(self, truth):
        self.truth = truth

    def predict(self, batch):
        return self.truth.predict(batch) / 100.0


@pytest.fixture(scope="module")
def net():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Supernet(get_space(TINY)).eval()


def _specialize_on_fake_machine(net, tmp_path, monkeypatch, predictor, budget, bias):
    """specialize's report for one budget, the table being synthetic_table() and the machine
    running every network ``bias`` x its op sum (1% noise)."""
    import ofa_deploy.specialize as S

    truth = synthetic_table()
    table = synthetic_table()
    table.meta["protocol"] = PROTO.get_state()
    table.save(tmp_path / "lut.json")
    monkeypatch.setattr(S, "get_profiler", lambda spec, **kw: BiasedMachine(
        truth=truth, scale=bias, sigma=0.01, **kw))
    return specialize(net, predictor, [Scenario("cpu", budget)], out_dir=tmp_path / "out",
                      search_config=EvolutionConfig(aging_islands=0, population=48, generations=40, seed=0),
                      data=DataContext(None), formats=["onnx"],
                      lut_path=str(tmp_path / "lut.json"), echo=lambda s: None,
                      progress=False)[0]


@pytest.mark.parametrize("bias", [1.3, 0.75])
def test_closed_loop_meets_the_budget_when_measured(net, tmp_path, monkeypatch, bias):
    truth = synthetic_table()
    lo, hi = truth.min_max()
    # a budget the biased machine can meet, with faster and slower subnets around it
    budget = lo * bias + 0.5 * (hi - lo) * min(bias, 1.0)
    rep = _specialize_on_fake_machine(net, tmp_path, monkeypatch, SizePredictor(truth), budget,
                                      bias)
    rounds = rep["rounds"]
    first = rounds[0]["measured_ms"]
    if bias > 1:
        assert first > budget and rounds[0]["within_budget"] is False  # the table lies
    else:
        assert first < 0.9 * budget  # the table is pessimistic: speed left on the table
    assert 2 <= len(rounds) <= 3
    assert rounds[1]["effective_budget_ms"] == pytest.approx(
        rounds[0]["effective_budget_ms"] * 0.98 * budget / first)
    med = rep["measured_latency_ms"]["median"]
    assert rep["within_budget"] is True and med <= budget
    assert med >= 0.9 * budget
    assert sum(h["chosen"] for h in rounds) == 1
    assert rep["protocol"] == PROTO.get_state()


class PeakPredictor(SizePredictor):
    """Accuracy that peaks at op sum ``peak`` ms: no slower subnet is more accurate."""

    def __init__(self, truth, peak):
        super().__init__(truth)
        self.peak = peak

    def predict(self, batch):
        return 1.0 - np.abs(self.truth.predict(batch) - self.peak) / 100.0


def test_closed_loop_stops_when_a_looser_budget_picks_the_same_subnet(net, tmp_path,
                                                                       monkeypatch):
    """Far under budget only because the most accurate subnet is fast: one loosened search
    finds the same subnet, the loop stops and says why (no speed is left on the table)."""
    truth = synthetic_table()
    lo, hi = truth.min_max()
    rep = _specialize_on_fake_machine(net, tmp_path, monkeypatch,
                                      PeakPredictor(truth, lo + 0.3 * (hi - lo)),
                                      lo + 0.7 * (hi - lo), 1.0)
    rounds = rep["rounds"]
    assert len(rounds) == 1 and rounds[0]["chosen"]
    assert rep["within_budget"] is True
    assert rounds[0]["measured_ms"] < 0.9 * rep["budget_ms"]
    assert "same subnet" in rounds[0]["note"]
    assert "same subnet" in (tmp_path / "out" / "report.md").read_text()


class Recorder(Profiler):
    """Records how every profiler is made; latency from the model's size (torch modules or
    files), so any artifact can be 'timed'."""

    artifact_format = "torch"
    made: list = []

    def __init__(self, spec, *, runs=10, warmup=0, threads=None, **kw):
        super().__init__(DeviceSpec.parse(spec), threads=threads, runs=runs, warmup=warmup)
        Recorder.made.append({"runs": runs, "warmup": warmup, "threads": threads, **kw})

    def measure_samples(self, artifact, input_shape):
        import os

        size = (os.path.getsize(artifact) if isinstance(artifact, (str, os.PathLike))
                else sum(p.numel() for p in artifact.parameters()))
        return [1e-6 * size + 0.01] * self.runs

    def measure(self, artifact, input_shape):
        return LatencyStats.from_samples(self.measure_samples(artifact, input_shape))


def test_table_validate_specialize_and_bench_measure_with_identical_settings(
        net, tmp_path, monkeypatch):
    import luts.builder as LB
    import luts.validate as LV
    import ofa_deploy.specialize as S
    from luts.builder import build_lut
    from ofa_deploy import bench as B
    from supernet.export import export_onnx

    Recorder.made = []
    spy = (lambda spec, **kw: Recorder(spec, **kw))
    for mod in (LB, LV, S):
        monkeypatch.setattr(mod, "get_profiler", spy)
    # a non-default estimator, so that "identical" covers it: validate and specialize take
    # the table's without being told, bench is given the same protocol
    proto = MeasurementProtocol(runs=4, warmup=1, rounds=2, threads=1,
                                estimator="best-round-median")
    t = build_lut(TINY, "cpu", resolutions=[32], out=tmp_path / "t.json", runs=4, warmup=1,
                  rounds=2, threads=1, estimator="best-round-median", progress=False,
                  cache_dir=tmp_path / "ops")
    v = validate_lut(t, "cpu", samples=3, progress=False)
    lo, hi = t.min_max()
    rep = specialize(net, SizePredictor(t), [Scenario("cpu", (lo + hi) / 2)],
                     out_dir=tmp_path / "spec", search_config=EvolutionConfig(aging_islands=0, 
                         population=16, generations=3, seed=0),
                     data=DataContext(None), formats=["onnx"],
                     lut_path=str(tmp_path / "t.json"), echo=lambda s: None,
                     progress=False, max_rounds=1)[0]
    export_onnx(torch.nn.Conv2d(3, 4, 3).eval(), (1, 3, 16, 16), tmp_path / "b" / "m.onnx")
    b = B.run_bench(B.collect_artifacts([tmp_path / "b"]), [DeviceSpec.parse("cpu")],
                    profiler_factory=spy, protocol=proto)
    assert b.counts["ok"] == 1
    # the same recorded protocol everywhere ...
    state = proto.get_state()
    assert t.meta["protocol"] == v["meta"]["protocol"] == rep["protocol"] == \
        b.meta["protocol"] == state
    assert state["estimator"] == "best-round-median"
    # ... and every profiler made with exactly the same settings
    want = proto.profiler_kwargs("ort")
    assert len(Recorder.made) >= 4
    assert all(k == want for k in Recorder.made), Recorder.made
    assert want == {"runs": 4, "warmup": 1, "threads": 1, "flush_bytes": 0}
    # asking for another estimator than the table's is refused before anything is measured
    from profilers.protocol import ProtocolMismatch

    n = len(Recorder.made)
    with pytest.raises(ProtocolMismatch, match="estimator 'best-round-median' vs "
                                               "'median-pooled'"):
        specialize(net, SizePredictor(t), [Scenario("cpu", (lo + hi) / 2)],
                   out_dir=tmp_path / "spec2", search_config=EvolutionConfig(aging_islands=0, 
                       population=16, generations=3, seed=0),
                   data=DataContext(None), formats=["onnx"], lut_path=str(tmp_path / "t.json"),
                   estimator="median-pooled", echo=lambda s: None, progress=False)
    with pytest.raises(ProtocolMismatch, match="estimator"):
        validate_lut(t, "cpu", samples=3, estimator="median-pooled", progress=False)
    assert len(Recorder.made) == n


def test_drift_check_rescales_to_todays_speed_with_reference_networks():
    t = synthetic_table()
    machine = BiasedMachine(truth=synthetic_table(), scale=1.3, offset=0.25, sigma=0.02)
    calibrate_lut(t, samples=20, profiler=machine, protocol=PROTO, save=False)
    nets = t.calibration["reference_networks"]
    assert len(nets) == 5 and all(n["arch"] in t.calibration["archs"] for n in nets)
    # an hour later the machine is 25% slower (load, thermal state): the references see it
    machine.scale, machine.offset = 1.3 * 1.25, 0.25 * 1.25
    r = validate_lut(t, "cpu", samples=12, seed=5, profiler=machine, progress=False)
    d = r["meta"]["drift"]
    assert d["kind"] == "reference networks" and d["scale"] == pytest.approx(1.25, rel=0.03)
    assert d["interleaved"] is True and d["spread"] < 0.15
    assert r["meta"]["speed_scale"] == d["scale"]
    assert any("25% slower" in w or "24% slower" in w or "26% slower" in w
               for w in r["warnings"])
    assert r["within_10pct"] == 1.0  # rescaled: still within the bar
    # without the drift check the same table misses by the slowdown
    t.speed_scale = 1.0
    r0 = validate_lut(t, "cpu", samples=12, seed=5, profiler=machine, drift=False,
                      progress=False)
    assert r0["mean_rel_err"] < -0.15


class SpellMachine(BiasedMachine):
    """A BiasedMachine that runs ``slow`` x slower for its first ``spell`` measurements (a
    neighbour's burst on a shared VM), then at its normal speed."""

    def __init__(self, *a, spell: int, slow: float, **kw):
        super().__init__(*a, **kw)
        self.spell, self.slow, self.calls = spell, slow, 0

    def measure_samples(self, artifact, input_shape):
        self.calls += 1
        v = super().measure_samples(artifact, input_shape)
        return [x * self.slow for x in v] if self.calls <= self.spell else v


def test_validation_times_the_reference_networks_with_its_subnets_not_before_them():
    """A slow spell at the start of a validation must not rescale the table: the references
    are measured in the same round-robin as the subnets (a check run beforehand would sit
    entirely inside the spell, scale every prediction by 1.5 and miss every subnet)."""
    t = synthetic_table()
    truth = synthetic_table()
    calibrate_lut(t, samples=20, profiler=BiasedMachine(truth=truth, scale=1.3, sigma=0.02),
                  protocol=PROTO.with_(network_rounds=5), save=False)
    n_refs = len(t.calibration["reference_networks"])
    # the spell covers what a drift check beforehand would measure (refs x 5 rounds), and
    # in the interleaved order only the first round of the first subnets
    machine = SpellMachine(truth=truth, scale=1.3, sigma=0.02, spell=n_refs * 5, slow=1.5)
    r = validate_lut(t, "cpu", samples=12, seed=5, profiler=machine, rounds=5, progress=False)
    d = r["meta"]["drift"]
    assert d["interleaved"] and d["scale"] == pytest.approx(1.0, abs=0.03)
    assert r["within_10pct"] == 1.0 and not any("slower" in w for w in r["warnings"])
    # the same spell under a separate check beforehand misfires (what interleaving avoids)
    from luts.drift import check_drift
    from luts.calibrate import table_protocol

    machine = SpellMachine(truth=truth, scale=1.3, sigma=0.02, spell=n_refs * 5, slow=1.5)
    before = check_drift(t, machine, table_protocol(t).with_(network_rounds=5),
                         apply=False)
    assert before["scale"] == pytest.approx(1.5, rel=0.03) and not before["interleaved"]


def test_references_that_disagree_are_reported():
    """One reference in a slow spell, the others not: the rescale is flagged as uncertain."""
    from luts.drift import drift_from_networks

    t = synthetic_table()
    calibrate_lut(t, samples=20, profiler=BiasedMachine(truth=synthetic_table(), scale=1.3),
                  protocol=PROTO, save=False)
    nets = t.calibration["reference_networks"]
    now = [LatencyStats.from_samples([n["median_ms"] * f] * 5)
           for n, f in zip(nets, [1.0, 1.02, 1.4, 0.99, 1.01])]
    d = drift_from_networks(t, nets, now, apply=False)
    assert d["scale"] == pytest.approx(1.01) and d["spread"] > 0.3
    assert "disagree" in d["warning"] and t.speed_scale == 1.0
    calm = [LatencyStats.from_samples([n["median_ms"] * 1.01] * 5) for n in nets]
    assert drift_from_networks(t, nets, calm)["warning"] is None and t.speed_scale == 1.01


def test_a_shipped_file_is_timed_among_the_reference_networks_round_by_round():
    """measure_subnets(lead=...): the lead item (specialize's exported winner) comes first in
    every round, followed by the subnets, so its rounds are spread over the whole
    measurement instead of being timed back to back (where one slow spell covers them)."""
    from luts.calibrate import measure_subnets
    from luts.drift import reference_networks

    t = synthetic_table()
    calibrate_lut(t, samples=20, profiler=BiasedMachine(truth=synthetic_table()),
                  protocol=PROTO, save=False)
    nets = reference_networks(t)
    archs = [t.family.parse_arch(n["arch"], t.space) for n in nets]
    order = []

    class Order(BiasedMachine):
        def measure_samples(self, artifact, input_shape):
            order.append("lead" if isinstance(artifact, str) else artifact.arch.to_string(t.space))
            return [2.0] * self.runs if isinstance(artifact, str) else \
                super().measure_samples(artifact, input_shape)

    got = measure_subnets(t, archs, Order(truth=synthetic_table()), PROTO.with_(network_rounds=3),
                          lead=[("winner.onnx", (1, 3, 32, 32))])
    assert len(got) == 1 + len(nets) and got[0].median_ms == 2.0
    per_round = [n["arch"] for n in nets]
    assert order == (["lead"] + per_round) * 3


def test_a_table_that_disagrees_with_whole_networks_is_timed_again_once():
    """Ops timed in a slow spell that hit some of them (not all alike): no calibration model
    fits, so every op is timed again (here: the rebuild returns the quiet machine's entries)
    and the calibration is refitted on the same network timings."""
    from luts.calibrate import REMEASURE_HELDOUT_MAPE, calibrate_or_remeasure

    truth = synthetic_table()
    spelled = synthetic_table()
    for op in list(spelled.entries)[::3]:  # a third of the ops 2.5x slow
        e = spelled.entries[op]
        spelled.entries[op] = LatencyStats(2.5 * e.median_ms, e.p10_ms, e.p90_ms, e.std_ms,
                                           e.runs)
    machine = BiasedMachine(truth=truth, scale=1.2, sigma=0.01)
    rebuilt = []

    def rebuild(rounds):
        rebuilt.append(rounds)
        quiet = synthetic_table()
        quiet.meta.update(spelled.meta)
        return quiet

    msgs = []
    t = calibrate_or_remeasure(spelled, "cpu", rebuild, samples=20, profiler=machine,
                               protocol=PROTO, save=False, echo=msgs.append)
    assert rebuilt == [2 * PROTO.rounds]
    cal = t.calibration
    rm = cal["remeasured"]
    assert rm["heldout_mape_before"] > REMEASURE_HELDOUT_MAPE > rm["heldout_mape_after"]
    assert cal["heldout_mape"] == rm["heldout_mape_after"] < 0.02
    assert cal["default_scale"] == pytest.approx(1.2, rel=0.03)
    # refitted on the networks measured once: the same archs and measurements, new op sums
    first = spelled.calibration  # calibrate_lut set it on the table it was given
    assert first["heldout_mape"] == rm["heldout_mape_before"]
    assert [r["measured_ms"] for r in cal["rows"]] == [r["measured_ms"] for r in first["rows"]]
    assert cal["rows"][0]["op_sum_ms"] == pytest.approx(
        t.predict([t.family.parse_arch(cal["rows"][0]["arch"], t.space)], calibrated=False)[0])
    assert any("timing every op" in m for m in msgs)
    # a table that agrees with the networks is left alone
    again = []
    t2 = calibrate_or_remeasure(synthetic_table(), "cpu", lambda r: again.append(r), samples=20,
                                profiler=machine, protocol=PROTO, save=False)
    assert again == [] and "remeasured" not in t2.calibration
