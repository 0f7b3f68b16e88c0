"""Search over ofa-resnet50: exact vectorized costs and features, feasibility of every
candidate, determinism per seed, better than random sampling, latency budgets from a table of
the space's ops, and the CLI (bundled predictor)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ofa_deploy.accuracy_resnet import load_resnet_predictor
from ofa_deploy.search import Constraints, EvolutionConfig, InfeasibleBudgetError, SearchError
from ofa_deploy.search.resnet import (ResNetCostModel, _ResNetProblem, resnet_evolution_search,
                                      resnet_random_search)
from supernet.resnet import ResNetArch, resnet_arch_cost

SPACE = "ofa-resnet50"
SMALL = EvolutionConfig(aging_islands=0, population=40, generations=15, islands=1, seed=0, local_search=False)


@pytest.fixture(scope="module")
def pred():
    return load_resnet_predictor()  # the copy bundled in ofa_deploy/assets


def _ref_costs(archs):
    return np.array([[resnet_arch_cost(SPACE, a)[k] for k in ("macs", "params")] for a in archs])


def test_vectorized_costs_and_features_are_exact(pred):
    prob = _ResNetProblem(SPACE, pred, Constraints(max_macs=2e9), None)
    g = prob.uniform(400, np.random.default_rng(3))
    g = np.concatenate([g, np.zeros((1, g.shape[1]), g.dtype), (prob.cost.ranges - 1)[None].astype(g.dtype)])
    archs = prob.cost.archs(g)
    assert archs[-2] == ResNetArch.min(SPACE).canonical(SPACE)
    assert archs[-1] == ResNetArch.max(SPACE)
    np.testing.assert_array_equal(prob.cost.costs(g), _ref_costs(archs))
    np.testing.assert_allclose(prob.score(g), pred.predict(archs), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(prob.cost.genes_of(archs), prob.cost.canonical(g))
    # equal networks (differing only in skipped blocks' expand) share a key, others do not
    keys = prob.cost.keys(g)
    assert keys == prob.cost.keys(prob.cost.canonical(g))
    assert len(set(keys)) == len({a.to_string(SPACE) for a in archs})


def test_every_scored_candidate_meets_the_budget(pred, monkeypatch):
    scored = []
    orig = _ResNetProblem.score

    def spy(self, genes):
        scored.append(genes.copy())
        return orig(self, genes)

    monkeypatch.setattr(_ResNetProblem, "score", spy)
    cfg = EvolutionConfig(aging_islands=0, population=30, generations=8, islands=2, seed=1)
    res = resnet_evolution_search(SPACE, pred, Constraints(max_macs=1.2e9, max_params=15e6), cfg)
    cost = ResNetCostModel(SPACE, res.resolutions)
    g = np.concatenate(scored)
    assert len(g) >= res.evaluations > cfg.population
    c = _ref_costs(cost.archs(g))
    assert (c[:, 0] <= 1.2e9).all() and (c[:, 1] <= 15e6).all()
    assert res.macs == resnet_arch_cost(SPACE, res.arch)["macs"] <= 1.2e9
    assert res.params == resnet_arch_cost(SPACE, res.arch)["params"] <= 15e6
    assert res.predicted_accuracy == pytest.approx(pred.predict_one(res.arch), abs=1e-12)
    assert res.extra["local_optimum"] is True


def test_deterministic_per_seed(pred):
    runs = [resnet_evolution_search(SPACE, pred, Constraints(max_macs=2e9),
                                    EvolutionConfig(aging_islands=0, population=30, generations=6, seed=s))
            for s in (5, 5, 6)]
    a, b, c = (r.to_dict(with_history=True) for r in runs)
    for d in (a, b, c):
        d.pop("search_seconds")
    assert a == b
    assert a["history"] != c["history"] or a["evaluations"] != c["evaluations"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_beats_random_sampling_of_equal_evaluations(pred, seed):
    cfg = EvolutionConfig(aging_islands=0, population=40, generations=15, islands=1, seed=seed, local_search=False)
    evo = resnet_evolution_search(SPACE, pred, Constraints(max_macs=2e9), cfg)
    rnd = resnet_random_search(SPACE, pred, Constraints(max_macs=2e9), evo.evaluations, seed=seed)
    assert rnd.evaluations == evo.evaluations
    assert evo.predicted_accuracy > rnd.predicted_accuracy


def test_refusals(pred):
    with pytest.raises(InfeasibleBudgetError, match=r"smallest subnet of ofa-resnet50 has 315\.08M MACs"):
        resnet_evolution_search(SPACE, pred, Constraints(max_macs=300e6), SMALL)
    with pytest.raises(InfeasibleBudgetError, match="params budget 1M is infeasible"):
        resnet_evolution_search(SPACE, pred, Constraints(max_params=1e6), SMALL)
    with pytest.raises(SearchError, match="latency budget for space ofa-resnet50 needs a latency table"):
        resnet_evolution_search(SPACE, pred, Constraints(max_latency_ms=20), SMALL)
    with pytest.raises(SearchError, match="aging islands .* not supported for ResNet"):
        resnet_evolution_search(SPACE, pred, Constraints(max_macs=2e9),
                                EvolutionConfig(**{**SMALL.get_state(), "aging_islands": 1}))
    with pytest.raises(SearchError, match="cannot be scored"):
        _ResNetProblem(SPACE, type("P", (), {"predict_features": pred.predict_features,
                                             "encoder": type(pred.encoder)(SPACE, (224,))})(),
                       Constraints(max_macs=2e9), [128])
    res = resnet_evolution_search(SPACE, pred, Constraints(max_macs=2e9), SMALL,
                                  resolutions=[160, 224])
    assert res.arch.r in (160, 224) and res.resolutions == (160, 224)


def test_cli_search_json(run_cli, tmp_path):
    out = tmp_path / "best.json"
    res = run_cli("search", "--space", SPACE, "--mflops", "2000", "--population", "30",
                  "--generations", "6", "--json", "--out", out)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    for key in ("arch", "arch_string", "predicted_accuracy", "predicted_latency_ms", "macs",
                "params", "search_seconds", "evaluations", "constraints", "islands"):
        assert key in data, key
    assert data["predicted_latency_ms"] is None
    assert data["predictor"]["format"] == "ofa-reference-resnet50"
    assert data["constraints"]["max_macs"] == 2e9
    a = ResNetArch.from_string(data["arch_string"], SPACE)
    assert a == ResNetArch.from_dict(data["arch"], SPACE)
    assert resnet_arch_cost(SPACE, a) == {"macs": data["macs"], "params": data["params"]}
    assert data["macs"] <= 2e9
    assert json.loads(out.read_text()) == data


@pytest.mark.parametrize("args, needle", [
    (("--mflops", "2000", "--ms", "20", "--target", "note10"),
     "is for space ofa-mbv3-w1.2, not ofa-resnet50"),
    (("--mflops", "100"), "smallest subnet of ofa-resnet50 has 315.08M MACs"),
    (("--mflops", "2000", "--predictor", "ofa_deploy/assets/ofa-mbv3-w1.2-imagenet-acc-predictor.pth"),
     "does not predict ofa-resnet50 subnets"),
])
def test_cli_refusals_are_one_line(run_cli, args, needle):
    res = run_cli("search", "--space", SPACE, *args)
    assert res.exit_code != 0
    text = res.output.strip()
    assert len(text.splitlines()) == 1 and "Traceback" not in text, text
    assert needle in text, text


def test_cli_without_budget_is_a_usage_error(run_cli):
    res = run_cli("search", "--space", SPACE)
    assert res.exit_code == 2 and "give a budget: --ms, --mflops and/or --params-m" in res.output


# -- latency budgets (a synthetic table of the space's ops at 128 px) ---------------------


@pytest.fixture(scope="module")
def lut128(tmp_path_factory):
    import zlib

    from luts.table import LatencyTable
    from profilers.base import LatencyStats
    from supernet.resnet_ops import resnet_enumerate_ops

    def stats(op):  # MACs-proportional with a deterministic per-op wobble
        v = op.macs * 1e-8 * (0.8 + zlib.crc32(op.to_string().encode()) % 400 / 1000) + 0.01
        return LatencyStats(v, 0.9 * v, 1.2 * v, 0.05 * v, 10)

    t = LatencyTable(SPACE, [128], meta={"device": "synthetic"}, overhead_ms=0.3,
                     entries={op: stats(op) for op in resnet_enumerate_ops(SPACE, [128])})
    path = tmp_path_factory.mktemp("lut") / "r50-128.json"
    t.save(path)
    return t, path


def test_latency_costs_equal_the_table(pred, lut128, rng):
    t, _ = lut128
    prob = _ResNetProblem(SPACE, pred, Constraints(max_latency_ms=50), None, t)
    assert prob.resolutions == (128,)  # the table's
    g = prob.uniform(400, rng)
    np.testing.assert_allclose(prob.cost.latency(g), t.predict(prob.cost.archs(g)), rtol=1e-12)
    fast, row = prob.cost.fastest()
    assert fast == pytest.approx(t.min_max()[0]) == pytest.approx(
        t.predict_one(prob.cost.archs(row)[0]))
    assert (prob.cost.latency(g) >= fast - 1e-9).all()
    with pytest.raises(SearchError, match=r"resolution\(s\) \[160\] are not in the latency table"):
        _ResNetProblem(SPACE, pred, Constraints(max_latency_ms=50), [160], t)


def test_search_under_a_latency_budget_is_feasible(pred, lut128, monkeypatch):
    t, _ = lut128
    lo, hi = t.min_max()
    ms = lo + 0.3 * (hi - lo)
    checked = []
    real = _ResNetProblem.score

    def spy(self, genes):  # every scored candidate meets the budget
        lat = self.cost.latency(genes)
        checked.append(len(genes))
        assert (lat <= ms).all() and np.isfinite(lat).all()
        return real(self, genes)

    monkeypatch.setattr(_ResNetProblem, "score", spy)
    res = resnet_evolution_search(SPACE, pred, Constraints(max_latency_ms=ms), SMALL,
                                  latency_table=t)
    assert sum(checked) == res.evaluations
    assert res.latency_ms == pytest.approx(t.predict_one(res.arch)) and res.latency_ms <= ms
    assert res.latency_ms > 0.7 * ms  # the budget is used, not left idle
    both = resnet_evolution_search(SPACE, pred, Constraints(max_latency_ms=ms, max_macs=600e6),
                                   SMALL, latency_table=t)
    assert both.latency_ms <= ms and both.macs <= 600e6
    tight = resnet_evolution_search(SPACE, pred, Constraints(max_latency_ms=lo * 1.02), SMALL,
                                    latency_table=t)
    assert tight.latency_ms <= lo * 1.02
    with pytest.raises(InfeasibleBudgetError, match="fastest subnet of ofa-resnet50 is predicted"):
        resnet_evolution_search(SPACE, pred, Constraints(max_latency_ms=0.9 * lo), SMALL,
                                latency_table=t)


def test_cli_search_with_a_latency_table(run_cli, lut128):
    t, path = lut128
    lo, hi = t.min_max()
    ms = [round(lo + f * (hi - lo), 2) for f in (0.2, 0.5)]
    res = run_cli("search", "--space", SPACE, "--lut", path, "--ms", ms[0], "--ms", ms[1],
                  "--mflops", "3000", "--population", "30", "--generations", "5", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["target"] == "synthetic" and data["resolutions"] == [128]
    assert [e["constraints"]["max_latency_ms"] for e in data["pareto"]] == ms
    for e, budget in zip(data["pareto"], ms):
        a = ResNetArch.from_string(e["arch_string"], SPACE)
        assert e["predicted_latency_ms"] == pytest.approx(t.predict_one(a), rel=1e-6)
        assert e["predicted_latency_ms"] <= budget and e["macs"] <= 3e9


def test_cli_inspect_and_lut_predict_with_a_resnet_table(run_cli, lut128):
    t, path = lut128
    want = t.predict_one(ResNetArch.max(SPACE, 128))
    res = run_cli("inspect", "--space", SPACE, "--arch", "max", "--resolution", "128",
                  "--target", path, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["latency"]["predicted_ms"] == pytest.approx(want)
    res = run_cli("lut", "predict", "--lut", path, "--arch", "max", "--resolution", "128",
                  "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["predicted_ms"] == pytest.approx(want) and data["ops"] == 21
    res = run_cli("inspect", "--space", SPACE, "--arch", "max", "--target", path)
    assert res.exit_code == 1 and "resolution 256 not in the latency table" in res.output
