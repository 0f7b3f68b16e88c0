"""Evolutionary search: budgets respected, infeasible budgets refused early, determinism, Pareto."""
from __future__ import annotations

import time

import numpy as np
import pytest

from luts.store import load_table
from ofa_deploy.accuracy import AccuracyPredictor, ArchEncoder
from ofa_deploy.search import (Constraints, EvolutionConfig, InfeasibleBudgetError,
                               SearchError, evolution_search, pareto_search, random_search)
from supernet.arch import ArchConfig
from supernet.batch import ArchBatch
from supernet.cost import arch_cost
from supernet.ops import OpGrid

W12 = "ofa-mbv3-w1.2"
SMALL = EvolutionConfig(aging_islands=0, population=24, generations=15, seed=0)


@pytest.fixture(scope="module")
def note10():
    return load_table("note10", space=W12)


class CapacityScore:
    """A duck-typed predictor that prefers bigger networks, so every budget binds."""

    def __init__(self, space):
        self.macs = OpGrid(space, lambda op: op.macs)
        self.calls = 0

    def predict(self, batch: ArchBatch) -> np.ndarray:
        self.calls += 1
        return np.log(self.macs.evaluate(batch)) + 0.01 * batch.ks.mean(axis=1)


@pytest.fixture(scope="module")
def mlp_predictor():
    """An AccuracyPredictor in the reference layout with fixed random weights."""
    return AccuracyPredictor(ArchEncoder.reference(), hidden=(32, 32), space=W12, seed=5)


def test_latency_budget_is_respected(note10):
    score = CapacityScore(W12)
    res = evolution_search(W12, score, Constraints(max_latency_ms=25.0), SMALL,
                           latency_table=note10)
    assert res.latency_ms <= 25.0
    assert res.latency_ms == pytest.approx(note10.predict_one(res.arch))
    assert res.arch.r in note10.resolutions
    # every member of the final population is within budget too
    assert (note10.predict(res.population) <= 25.0).all()
    cost = arch_cost(W12, res.arch)
    assert (res.macs, res.params) == (cost["macs"], cost["params"])
    assert res.predicted_accuracy == pytest.approx(float(score.predict(res.population[:1])[0]))
    assert len(res.history) == SMALL.generations + 1
    assert all(b >= a for a, b in zip(res.history, res.history[1:]))
    # when each best was reached: one time per history entry, in order, within the run
    assert len(res.history_seconds) == len(res.history)
    assert all(b >= a >= 0 for a, b in zip(res.history_seconds, res.history_seconds[1:]))
    assert res.history_seconds[-1] <= res.wall_seconds
    assert res.to_dict(with_history=True)["history_seconds"] == res.history_seconds
    # the budget binds: a capacity-loving search ends close to it
    assert res.latency_ms > 20.0


def test_macs_and_params_budgets_are_respected():
    cons = Constraints(max_macs=250e6, max_params=6e6)
    res = evolution_search(W12, CapacityScore(W12), cons, SMALL)
    assert res.latency_ms is None
    cost = arch_cost(W12, res.arch)
    assert cost["macs"] <= 250e6 and cost["params"] <= 6e6
    for a in res.population.to_archs():
        c = arch_cost(W12, a)
        assert c["macs"] <= 250e6 and c["params"] <= 6e6
    # without a table every space resolution is searched
    assert res.resolutions == tuple(range(160, 225, 4))


def test_mixed_budget_with_explicit_resolutions(note10, mlp_predictor):
    cons = Constraints(max_latency_ms=40.0, max_macs=300e6)
    res = evolution_search(W12, mlp_predictor, cons, SMALL, latency_table=note10,
                           resolutions=[176, 208])
    assert res.arch.r in (176, 208)
    assert res.latency_ms <= 40.0 and res.macs <= 300e6
    with pytest.raises(SearchError, match=r"\[164\] are not in the latency table"):
        evolution_search(W12, mlp_predictor, cons, SMALL, latency_table=note10,
                         resolutions=[164])
    with pytest.raises(SearchError, match="needs a latency table"):
        evolution_search(W12, mlp_predictor, Constraints(max_latency_ms=30), SMALL)


def test_infeasible_latency_fails_fast_naming_the_minimum(note10):
    score = CapacityScore(W12)
    lo = note10.min_max()[0]
    t0 = time.perf_counter()
    with pytest.raises(InfeasibleBudgetError) as exc:
        evolution_search(W12, score, Constraints(max_latency_ms=lo - 0.01),
                         EvolutionConfig(aging_islands=0, generations=100000), latency_table=note10)
    assert time.perf_counter() - t0 < 5
    assert score.calls == 0  # refused before any scoring
    msg = str(exc.value)
    assert f"{np.ceil(lo * 1000) / 1000:.3f} ms" in msg and "note10" in msg
    # the printed (rounded-up) minimum itself is accepted, and the search ends
    ok = float(msg.split("takes ")[1].split(" ms")[0])
    res = evolution_search(W12, score, Constraints(max_latency_ms=ok), SMALL,
                           latency_table=note10)
    assert lo <= res.latency_ms <= ok


def test_infeasible_macs_and_params_name_the_exact_minimum():
    smallest = arch_cost(W12, ArchConfig.min(W12))
    with pytest.raises(InfeasibleBudgetError, match=f"{smallest['macs']:,}"):
        evolution_search(W12, CapacityScore(W12), Constraints(max_macs=smallest["macs"] - 1),
                         SMALL)
    with pytest.raises(InfeasibleBudgetError, match=f"{smallest['params']:,}"):
        evolution_search(W12, CapacityScore(W12),
                         Constraints(max_params=smallest["params"] - 1), SMALL)
    # exactly the minimum is feasible: the only arch is the smallest one
    res = evolution_search(W12, CapacityScore(W12), Constraints(max_macs=smallest["macs"]),
                           SMALL, resolutions=[160])
    assert res.macs == smallest["macs"]


class InvertedTable:
    """A latency table where big kernels are *fast*: cheap-in-MACs and cheap-in-latency archs
    differ, so tight budgets on both cannot be met together."""

    def __init__(self, space):
        self.space = space
        self.resolutions = (160, 192)
        self._grid = OpGrid(space, lambda op: (10 - op.kernel) if op.kind == "block" else 1.0,
                            self.resolutions)

    def grid(self):
        return self._grid

    def predict(self, batch):
        return self._grid.evaluate(batch)


def test_conflicting_budgets_end_with_a_clear_error():
    from supernet.space import get_space

    table = InvertedTable(get_space(W12))
    lat_lo = table.grid().min_max()[0]
    macs_lo = arch_cost(W12, ArchConfig.min(W12))["macs"]
    cons = Constraints(max_latency_ms=lat_lo + 0.5, max_macs=macs_lo * 1.01)
    t0 = time.perf_counter()
    with pytest.raises(InfeasibleBudgetError, match="meets all constraints together"):
        evolution_search(W12, CapacityScore(W12), cons, SMALL, latency_table=table)
    assert time.perf_counter() - t0 < 30


def test_fixed_seed_gives_the_same_winner(note10, mlp_predictor):
    cons = Constraints(max_latency_ms=30.0)
    a = evolution_search(W12, mlp_predictor, cons, SMALL, latency_table=note10)
    b = evolution_search(W12, mlp_predictor, cons, SMALL, latency_table=note10)
    assert a.arch == b.arch and a.history == b.history
    np.testing.assert_array_equal(a.population.keys(), b.population.keys())
    c = evolution_search(W12, mlp_predictor, cons,
                         EvolutionConfig(aging_islands=0, population=24, generations=15, seed=1),
                         latency_table=note10)
    assert c.history != a.history


def test_generic_predictor_path_equals_fast_path(note10, mlp_predictor):
    """A predictor seen only through predict(ArchBatch) must give the same search."""

    class Plain:
        def predict(self, batch):
            return mlp_predictor.predict(batch)

    cons = Constraints(max_latency_ms=20.0)
    fast = evolution_search(W12, mlp_predictor, cons, SMALL, latency_table=note10)
    slow = evolution_search(W12, Plain(), cons, SMALL, latency_table=note10)
    assert fast.arch == slow.arch
    np.testing.assert_allclose(fast.history, slow.history, rtol=0, atol=1e-6)


def test_evolution_beats_random_search_with_the_same_evaluations(note10):
    cons = Constraints(max_latency_ms=30.0)
    cfg = EvolutionConfig(aging_islands=0, population=30, generations=30, seed=0)
    evo = evolution_search(W12, CapacityScore(W12), cons, cfg, latency_table=note10)
    rnd = random_search(W12, CapacityScore(W12), cons, cfg.evaluations_budget, seed=0,
                        latency_table=note10)
    assert rnd.evaluations == cfg.evaluations_budget
    assert rnd.latency_ms <= 30.0
    assert len(rnd.history) == int(np.ceil(cfg.evaluations_budget / 100))
    # the evolution keeps to the reference's budget; the final local search comes on top
    assert evo.evaluations - evo.extra["local_search_evaluations"] <= cfg.evaluations_budget
    assert evo.predicted_accuracy >= rnd.predicted_accuracy


def test_pareto_front_is_monotonic_and_sorted(note10, mlp_predictor):
    budgets = [40.0, 15.0, 25.0, 20.0]
    res = pareto_search(W12, mlp_predictor, budgets, SMALL, latency_table=note10)
    assert [r.constraints.max_latency_ms for r in res] == sorted(budgets)
    for r in res:
        assert r.latency_ms <= r.constraints.max_latency_ms
    accs = [r.predicted_accuracy for r in res]
    assert all(b >= a for a, b in zip(accs, accs[1:])), accs
    for r in res:  # every budget evolved its own population for the full run
        assert len(r.history) == SMALL.generations + 1 and r.evaluations >= SMALL.population
        assert r.extra["front_seconds"] >= r.wall_seconds
    again = pareto_search(W12, mlp_predictor, budgets, SMALL, latency_table=note10)
    assert [r.arch for r in again] == [r.arch for r in res]
    # one budget is exactly evolution_search with the same seed
    one = pareto_search(W12, mlp_predictor, [25.0], SMALL, latency_table=note10)[0]
    direct = evolution_search(W12, mlp_predictor, Constraints(max_latency_ms=25.0), SMALL,
                              latency_table=note10)
    assert one.arch == direct.arch
    # an infeasible budget anywhere in the list is refused before any search
    score = CapacityScore(W12)
    with pytest.raises(InfeasibleBudgetError):
        pareto_search(W12, score, [30.0, 5.0], SMALL, latency_table=note10)
    assert score.calls == 0


def test_config_and_constraints_validation():
    with pytest.raises(SearchError, match="population must be >= 2"):
        EvolutionConfig(aging_islands=0, population=1)
    with pytest.raises(SearchError, match=r"parent_ratio must be in \(0, 1\]"):
        EvolutionConfig(aging_islands=0, parent_ratio=0)
    with pytest.raises(SearchError, match="leaves no parents"):
        EvolutionConfig(aging_islands=0, population=3, parent_ratio=0.1)
    with pytest.raises(SearchError, match="mutate_prob"):
        EvolutionConfig(aging_islands=0, mutate_prob=1.5)
    with pytest.raises(SearchError, match="generations must be an integer"):
        EvolutionConfig(aging_islands=0, generations=2.5)
    with pytest.raises(SearchError, match="unknown evolution setting"):
        EvolutionConfig.from_state({"populaton": 3})
    assert EvolutionConfig.from_state(SMALL.get_state()) == SMALL
    with pytest.raises(SearchError, match="max_latency_ms must be a positive"):
        Constraints(max_latency_ms=-1)
    with pytest.raises(SearchError, match="max_macs must be a number"):
        Constraints(max_macs="many")
    assert Constraints(max_latency_ms=30, max_macs=3e8).describe() == \
        "latency <= 30 ms, MACs <= 300M"


def test_predictor_resolution_support_is_checked(note10):
    """A predictor that can score only some resolutions limits the default search, and an
    explicit request for others is refused."""
    enc = ArchEncoder.for_space(W12, resolutions=[160, 176])
    pred = AccuracyPredictor(enc, hidden=(8,), space=W12)
    res = evolution_search(W12, pred, Constraints(max_latency_ms=30), SMALL,
                           latency_table=note10)
    assert res.resolutions == (160, 176)
    with pytest.raises(SearchError, match="cannot be scored"):
        evolution_search(W12, pred, Constraints(max_latency_ms=30), SMALL,
                         latency_table=note10, resolutions=[160, 224])


def test_duck_typed_table_without_grid(note10):
    """Any object with predict(ArchBatch) (and min_max for the early check) is a latency table."""

    class PlainTable:
        space = note10.space
        resolutions = note10.resolutions
        calls = 0

        def predict(self, batch):
            PlainTable.calls += 1
            return note10.predict(batch)

        def min_max(self, resolutions=None):
            return note10.min_max(resolutions)

    tab = PlainTable()
    res = evolution_search(W12, CapacityScore(W12), Constraints(max_latency_ms=22.0), SMALL,
                           latency_table=tab)
    assert tab.calls > 0 and res.latency_ms <= 22.0
    assert res.latency_ms == pytest.approx(note10.predict_one(res.arch))
    with pytest.raises(InfeasibleBudgetError, match="9.891 ms"):
        evolution_search(W12, CapacityScore(W12), Constraints(max_latency_ms=9.0), SMALL,
                         latency_table=tab)


def test_variation_follows_the_reference_rules(note10):
    """Mutants resample a block's kernel and expand on one shared draw; crossovers take each
    gene from either parent independently with probability 1/2."""
    from ofa_deploy.search import _Problem

    prob = _Problem(W12, CapacityScore(W12), Constraints(), None, [160, 176, 192, 208, 224])
    c = prob.cost
    rng = np.random.default_rng(0)
    n = 20000
    zero = np.zeros((n, c.width), dtype=np.int64)
    mut = prob.mutate(zero, rng, 0.5, 0.25)
    k_changed, e_changed = mut[:, c.kernel_genes] != 0, mut[:, c.expand_genes] != 0
    # a block is resampled with p=0.5 and a fresh choice differs with 2/3: 1/3 each, and both
    # change together with 0.5 * (2/3)^2 = 2/9 (independent draws would give 1/9)
    assert k_changed.mean() == pytest.approx(1 / 3, abs=0.01)
    assert e_changed.mean() == pytest.approx(1 / 3, abs=0.01)
    assert (k_changed & e_changed).mean() == pytest.approx(2 / 9, abs=0.01)
    assert (mut[:, c.depth_genes] != 0).mean() == pytest.approx(0.5 * 2 / 3, abs=0.01)
    assert (mut[:, c.res_gene] != 0).mean() == pytest.approx(0.25 * 4 / 5, abs=0.01)
    ones = np.ones_like(zero)
    cross = prob.crossover(zero, ones, rng)
    assert cross.mean() == pytest.approx(0.5, abs=0.01)
    kk, ee = cross[:, c.kernel_genes].astype(float), cross[:, c.expand_genes].astype(float)
    assert abs(np.corrcoef(kk.ravel(), ee.ravel())[0, 1]) < 0.02
    # a mixed batch keeps each row's kind
    mixed = prob.vary(zero, ones, np.arange(n) < n // 2, rng, 0.0, 0.0)
    assert (mixed[: n // 2] == 0).all() and 0.45 < mixed[n // 2:].mean() < 0.55


class _RecordingPredictor:
    """Wraps a predictor and keeps every batch it was asked to score."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def predict(self, batch: ArchBatch) -> np.ndarray:
        self.batches.append(batch)
        return self.inner.predict(batch)


def test_every_scored_candidate_meets_the_budget(note10, mlp_predictor):
    rec = _RecordingPredictor(mlp_predictor)
    res = evolution_search(W12, rec, Constraints(max_latency_ms=20.0), SMALL,
                           latency_table=note10)
    assert rec.batches and res.latency_ms <= 20.0
    # the evolution's children and the local search's neighbours alike
    lat = np.concatenate([note10.predict(b) for b in rec.batches])
    assert len(lat) >= res.evaluations
    assert (lat <= 20.0 + 1e-9).all()


def test_winner_is_a_local_optimum_and_reports_it(note10, mlp_predictor):
    from ofa_deploy.search import _genes_of, _Problem
    from ofa_deploy.search.local import single_moves

    cons = Constraints(max_latency_ms=25.0)
    cfg = EvolutionConfig(aging_islands=0, population=16, generations=3, seed=1)
    res = evolution_search(W12, mlp_predictor, cons, cfg, latency_table=note10)
    assert res.extra["local_optimum"] is True
    assert res.to_dict()["best_single_move_gain"] <= 0
    # check independently: no feasible single-gene change of the winner scores higher
    prob = _Problem(W12, mlp_predictor, cons, note10, None)
    row = _genes_of(prob.cost, res.population[:1])[0]
    moves = single_moves(prob, row)[0]
    moves = moves[prob.feasible(moves)]
    assert len(moves) > 10
    assert prob.score(moves).max() <= res.predicted_accuracy + 1e-12
    gain = prob.score(moves).max() - res.predicted_accuracy
    assert res.extra["best_single_move_gain"] == pytest.approx(gain, abs=1e-9)
    # without the final local search the report still tells the truth about the winner
    raw = evolution_search(W12, mlp_predictor, cons,
                           EvolutionConfig(aging_islands=0, population=16, generations=3, seed=1,
                                           local_search=False), latency_table=note10)
    assert raw.predicted_accuracy <= res.predicted_accuracy
    assert raw.extra["local_optimum"] == (raw.extra["best_single_move_gain"] <= 0)


def test_local_search_is_deterministic_per_seed_and_front_gets_it(note10, mlp_predictor):
    cfg = EvolutionConfig(aging_islands=0, population=16, generations=3, seed=4)
    runs = [pareto_search(W12, mlp_predictor, [18.0, 30.0], cfg, latency_table=note10)
            for _ in range(2)]
    for a, b in zip(*runs):
        assert a.arch == b.arch and a.predicted_accuracy == b.predicted_accuracy
        assert a.extra["local_optimum"] is True


def test_search_restores_torch_threads(note10, mlp_predictor):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    evolution_search(W12, mlp_predictor, Constraints(max_latency_ms=25.0),
                     EvolutionConfig(aging_islands=0, population=8, generations=1), latency_table=note10)
    assert torch.get_num_threads() == before


# -- islands (independent restarts in lock-step) -------------------------------------------
ISLANDS = EvolutionConfig(aging_islands=0, population=16, generations=6, islands=3, seed=2)


def test_islands_are_feasible_deterministic_and_report_their_spread(note10, mlp_predictor):
    rec = _RecordingPredictor(mlp_predictor)
    cons = Constraints(max_latency_ms=20.0)
    res = evolution_search(W12, rec, cons, ISLANDS, latency_table=note10)
    # every candidate any island scored, and the local search's neighbours, meet the budget
    lat = np.concatenate([note10.predict(b) for b in rec.batches])
    assert len(lat) >= res.evaluations and (lat <= 20.0 + 1e-9).all()
    d = res.to_dict()
    assert d["islands"] == 3 and len(d["island_best"]) == 3
    assert d["island_spread"] == pytest.approx(max(d["island_best"]) - min(d["island_best"]))
    # the winner is at least every island's best (the local search can only add to it)
    assert res.predicted_accuracy >= max(d["island_best"]) - 1e-12
    assert res.extra["local_optimum"] is True
    assert len(res.history) == ISLANDS.generations + 1
    again = evolution_search(W12, mlp_predictor, cons, ISLANDS, latency_table=note10)
    assert again.arch == res.arch and again.extra["island_best"] == d["island_best"]
    other = evolution_search(W12, mlp_predictor, cons,
                             EvolutionConfig(**{**ISLANDS.get_state(), "seed": 3}),
                             latency_table=note10)
    assert other.extra["island_best"] != d["island_best"]
    one = evolution_search(W12, mlp_predictor, cons,
                           EvolutionConfig(aging_islands=0, population=24, generations=15, islands=1),
                           latency_table=note10).to_dict()
    assert one["islands"] == 1 and one["island_spread"] == 0.0
    with pytest.raises(SearchError, match="islands must be >= 1"):
        EvolutionConfig(aging_islands=0, islands=0)


def test_islands_are_independent_restarts(note10, mlp_predictor):
    """Island i of a lock-step run starts from its own sample: two islands never share
    their initial population, so their bests differ as independent seeds do."""
    cons = Constraints(max_latency_ms=25.0)
    cfg = EvolutionConfig(aging_islands=0, population=12, generations=0, islands=2, seed=0, local_search=False)
    rec = _RecordingPredictor(mlp_predictor)
    evolution_search(W12, rec, cons, cfg, latency_table=note10)
    first = rec.batches[0]  # the initial populations of both islands, scored in one pass
    assert len(first) == 24
    a = {tuple(x.to_string(W12) for x in first[:12].to_archs())}
    b = {tuple(x.to_string(W12) for x in first[12:].to_archs())}
    assert a.isdisjoint(b)


def test_front_with_islands_gives_every_budget_the_same_search(note10, mlp_predictor):
    budgets = [18.0, 25.0, 35.0]
    cfg = EvolutionConfig(aging_islands=0, population=16, generations=6, islands=3, seed=2)
    res = pareto_search(W12, mlp_predictor, budgets, cfg, latency_table=note10)
    accs = [r.predicted_accuracy for r in res]
    assert all(b >= a for a, b in zip(accs, accs[1:]))
    for r, b in zip(res, budgets):
        assert r.latency_ms <= b and r.extra["islands"] == 3
        assert len(r.extra["island_best"]) == 3 and r.extra["local_optimum"] is True
        # each budget's islands evolved a full population for every generation
        assert r.evaluations >= cfg.islands * cfg.population
        # a front's budget is the single-budget search of that budget, or better where it
        # took the tighter budget's winner
        alone = evolution_search(W12, mlp_predictor, Constraints(max_latency_ms=b), cfg,
                                 latency_table=note10)
        if r.extra.get("from_tighter_budget"):
            assert r.predicted_accuracy > alone.predicted_accuracy
        else:
            assert r.arch == alone.arch and r.evaluations == alone.evaluations
            assert r.extra["island_best"] == alone.extra["island_best"]
        rnd = random_search(W12, mlp_predictor, Constraints(max_latency_ms=b), 1000,
                            latency_table=note10)
        assert r.predicted_accuracy > rnd.predicted_accuracy


# -- successive halving of the islands -----------------------------------------------------
HALVING = EvolutionConfig(aging_islands=0, population=16, generations=8, islands=4, seed=2, prune_at=3,
                          keep_islands=1)


def test_halving_prunes_islands_feasibly_and_deterministically(note10, mlp_predictor):
    cons = Constraints(max_latency_ms=20.0)
    rec = _RecordingPredictor(mlp_predictor)
    res = evolution_search(W12, rec, cons, HALVING, latency_table=note10)
    # every candidate scored (before and after pruning, and the local search's) fits
    lat = np.concatenate([note10.predict(b) for b in rec.batches])
    assert len(lat) >= res.evaluations and (lat <= 20.0 + 1e-9).all()
    # the generations' batches shrink: 4 islands, then 2 (at generation 3), then 1 (at 6)
    gen_rows = [len(b) for b in rec.batches[1:1 + HALVING.generations]]
    assert max(gen_rows[:3]) <= 4 * 16 and max(gen_rows[3:6]) <= 2 * 16
    assert max(gen_rows[6:]) <= 16 and min(gen_rows[:3]) > 2 * 16
    full = evolution_search(W12, mlp_predictor, cons,
                            EvolutionConfig(**{**HALVING.get_state(), "prune_at": 0}),
                            latency_table=note10)
    assert res.evaluations < full.evaluations
    # every island is still reported; the winner is at least each one's best
    assert len(res.extra["island_best"]) == 4
    assert res.predicted_accuracy >= max(res.extra["island_best"]) - 1e-12
    assert res.extra["local_optimum"] is True
    again = evolution_search(W12, mlp_predictor, cons, HALVING, latency_table=note10)
    assert again.arch == res.arch and again.extra["island_best"] == res.extra["island_best"]
    with pytest.raises(SearchError, match="prune_at must be >= 0"):
        EvolutionConfig(aging_islands=0, prune_at=-1)
    with pytest.raises(SearchError, match="keep_islands must be >= 1"):
        EvolutionConfig(aging_islands=0, keep_islands=0)


def test_halving_front_keeps_every_budget_feasible_and_monotone(note10, mlp_predictor):
    budgets = [18.0, 25.0, 35.0]
    rec = _RecordingPredictor(mlp_predictor)
    res = pareto_search(W12, rec, budgets, HALVING, latency_table=note10)
    accs = [r.predicted_accuracy for r in res]
    assert all(b >= a for a, b in zip(accs, accs[1:]))
    for r, b in zip(res, budgets):
        assert r.latency_ms <= b and len(r.extra["island_best"]) == 4
    lat = np.concatenate([note10.predict(b) for b in rec.batches])
    assert (lat <= max(budgets) + 1e-9).all()


# -- sampling: structures that cannot fit are skipped before their blocks are drawn -------
def test_structure_floor_is_exact_and_initial_samples_stay_feasible(note10):
    from ofa_deploy.search.problem import _Problem

    prob = _Problem(W12, CapacityScore(W12), Constraints(max_latency_ms=15.0), note10, None)
    c = prob.cost
    lo = 2 * c.nb  # depth and resolution genes: the structure
    g = prob.uniform(4000, np.random.default_rng(0))
    floor = prob._structure_floor()[prob._structure_index(g[:, lo:])]
    assert (floor <= c.costs(g) + 1e-9).all()
    # the floor is attained: every active block on its cheapest op
    cheap = c.blocks[..., 0].argmin(axis=2)[g[:, c.res_gene].astype(int)]
    h = g.copy()
    h[:, c.kernel_genes], h[:, c.expand_genes] = cheap // c.n_expands, cheap % c.n_expands
    assert np.allclose(c.costs(h)[:, 0], floor[:, 0])
    # only draws whose structure cannot fit are skipped, and most are at 15 ms
    kept = prob._uniform_may_fit(4000, np.random.default_rng(1))
    assert 0 < len(kept) < 4000
    kept_floor = prob._structure_floor()[prob._structure_index(kept[:, lo:])]
    assert (kept_floor[:, 0] <= 15.0).all()
    assert ((kept >= 0) & (kept < c.ranges)).all()
    s = prob.sample_feasible(300, np.random.default_rng(2))
    assert len(s) == 300 and prob.feasible(s).all() and len(set(c.keys(s))) == 300
    fresh = _Problem(W12, CapacityScore(W12), Constraints(max_latency_ms=15.0), note10, None)
    again = fresh.sample_feasible(300, np.random.default_rng(2))
    assert (again == s).all()  # deterministic per seed


def test_islands_share_one_batch_of_feasible_draws(note10):
    """A second sample under the same budget starts from the first one's unused feasible
    draws (never handed out, so still independent uniform draws), drawing nothing new if
    they suffice; another budget drops them."""
    from ofa_deploy.search.problem import _Problem

    prob = _Problem(W12, CapacityScore(W12), Constraints(max_latency_ms=40.0), note10, None)
    rng = np.random.default_rng(0)
    first = prob.sample_feasible(200, rng)
    spare = prob._spare.copy()
    assert len(spare) > 400 and prob.feasible(spare).all()
    state = rng.bit_generator.state
    second = prob.sample_feasible(200, rng)
    assert rng.bit_generator.state == state  # no new draws
    assert (second == spare[:200]).all() and len(prob._spare) == len(spare) - 200
    assert len(set(prob.cost.keys(second))) == 200
    prob.set_constraints(Constraints(max_latency_ms=40.0))  # the same budget: kept
    assert len(prob._spare) == len(spare) - 200
    prob.set_constraints(Constraints(max_latency_ms=30.0))
    assert prob._spare is None
    third = prob.sample_feasible(200, rng)
    assert prob.feasible(third).all() and rng.bit_generator.state != state
    assert len(first) == 200


def test_default_config_halves_eight_islands_and_resnet_keeps_its_own():
    cfg = EvolutionConfig()
    assert (cfg.islands, cfg.population, cfg.generations) == (8, 200, 75)
    assert (cfg.prune_at, cfg.keep_islands, cfg.relink) == (20, 3, True)
    # and one aging island (round 7), then the merged island (round 8), in a second thread
    assert (cfg.aging_islands, cfg.aging_population, cfg.offspring) == (1, 500, 100)
    assert (cfg.aging_generations, cfg.tournament, cfg.threads) == (250, 10, 2)
    assert cfg.merge_generations == 300
    from ofa_deploy.cli.search import RESNET_DEFAULT

    assert RESNET_DEFAULT["prune_at"] == 0
    EvolutionConfig(**RESNET_DEFAULT)  # a valid config


def test_front_takes_a_tighter_budgets_better_winner_and_climbs_on(note10, mlp_predictor):
    # with no generations the budgets' winners are their random samples' bests, so the
    # monotone pass is needed somewhere in a long enough front
    cfg = EvolutionConfig(aging_islands=0, population=8, generations=0, islands=2, seed=0)
    budgets = [float(b) for b in range(16, 40, 2)]
    res = pareto_search(W12, mlp_predictor, budgets, cfg, latency_table=note10)
    accs = [r.predicted_accuracy for r in res]
    assert all(b >= a for a, b in zip(accs, accs[1:]))
    took = [i for i, r in enumerate(res) if r.extra.get("from_tighter_budget")]
    assert took
    for i in took:
        r, alone = res[i], evolution_search(W12, mlp_predictor,
                                            Constraints(max_latency_ms=budgets[i]), cfg,
                                            latency_table=note10)
        assert r.predicted_accuracy >= res[i - 1].predicted_accuracy > alone.predicted_accuracy
        assert r.latency_ms <= budgets[i] and r.extra["local_optimum"] is True
        assert r.evaluations > alone.evaluations


# -- path relinking between the islands' bests ---------------------------------------------
def test_relink_path_lies_strictly_between_its_ends_and_fits(note10, mlp_predictor):
    from ofa_deploy.search.local import relink
    from ofa_deploy.search.problem import _Problem

    rec = _RecordingPredictor(mlp_predictor)
    prob = _Problem(W12, rec, Constraints(max_latency_ms=25.0), note10, None)
    c = prob.cost
    g = c.canonical(prob.sample_feasible(6, np.random.default_rng(3)))
    for a, b in ((0, 1), (2, 3), (4, 5), (1, 0)):
        rec.batches.clear()
        row, s, n = relink(prob, g[a], g[b])
        assert row is not None and n > 0
        assert prob.feasible(row[None])[0]
        assert s == pytest.approx(prob.score(row[None])[0], abs=1e-6)  # float32, any batch
        # on the path: every gene is the start's or the guide's, and it is neither end
        assert ((row == g[a]) | (row == g[b])).all()
        assert (row != g[a]).any() and (row != g[b]).any()
        # every arch the path scored meets the budget
        lat = np.concatenate([note10.predict(x) for x in rec.batches[:-1]])
        assert len(lat) == n and (lat <= 25.0 + 1e-9).all()
    # two ends one gene apart have no intermediate
    h = g[0].copy()
    h[c.res_gene] = (h[c.res_gene] + 1) % c.n_res
    assert relink(prob, g[0], h)[0] is None


def test_relink_adds_to_the_islands_search_feasibly_and_deterministically(note10,
                                                                          mlp_predictor):
    cfg = EvolutionConfig(aging_islands=0, population=16, generations=6, islands=3, seed=1)
    cons = Constraints(max_latency_ms=22.0)
    rec = _RecordingPredictor(mlp_predictor)
    res = evolution_search(W12, rec, cons, cfg, latency_table=note10)
    lat = np.concatenate([note10.predict(b) for b in rec.batches])
    assert len(lat) >= res.evaluations and (lat <= 22.0 + 1e-9).all()
    off = evolution_search(W12, mlp_predictor, cons,
                           EvolutionConfig(**{**cfg.get_state(), "relink": False}),
                           latency_table=note10)
    # the evolution is the same; relinking only adds its own (counted) evaluations
    assert res.extra["island_best"] == off.extra["island_best"]
    assert res.extra["relink_evaluations"] > 0 and off.extra["relink_evaluations"] == 0
    assert res.extra["local_search_evaluations"] >= res.extra["relink_evaluations"]
    assert res.predicted_accuracy >= max(res.extra["island_best"]) - 1e-12
    assert res.latency_ms <= 22.0
    again = evolution_search(W12, mlp_predictor, cons, cfg, latency_table=note10)
    assert again.arch == res.arch and again.evaluations == res.evaluations
    front = pareto_search(W12, mlp_predictor, [22.0], cfg, latency_table=note10)
    assert front[0].arch == res.arch
    with pytest.raises(SearchError, match="relink must be true or false"):
        EvolutionConfig(aging_islands=0, relink=1)


AGING = EvolutionConfig(population=16, generations=4, islands=1, seed=2, aging_islands=1,
                        aging_population=20, offspring=8, tournament=3, aging_generations=12,
                        merge_generations=5)


def test_aging_island_runs_beside_truncation_feasibly_and_deterministically(note10,
                                                                           mlp_predictor):
    cons = Constraints(max_latency_ms=22.0)
    rec = _RecordingPredictor(mlp_predictor)
    one_thread = EvolutionConfig(**{**AGING.get_state(), "threads": 1})
    res = evolution_search(W12, rec, cons, one_thread, latency_table=note10)
    # every candidate scored (both kinds of island, relinking, local search) fits the budget
    lat = np.concatenate([note10.predict(b) for b in rec.batches])
    assert len(lat) >= res.evaluations and (lat <= 22.0 + 1e-9).all()
    # two independent runs, one after the other in one thread: the truncation island's 16
    # samples and 4 generations (up to 16 children), then the aging island's 20 samples and
    # 12 generations (up to 8 children each)
    sizes = [len(b) for b in rec.batches]
    assert sizes[0] == 16 and 8 < max(sizes[1:5]) <= 16
    assert sizes[5] == 20 and max(sizes[6:18]) <= 8
    assert len(res.extra["island_best"]) == 2
    assert res.predicted_accuracy >= max(res.extra["island_best"]) - 1e-12
    assert res.extra["local_optimum"] is True
    assert res.evaluations - res.extra["local_search_evaluations"] <= AGING.evaluations_budget
    # in two threads (the default): the same search, to the last score and count
    again = evolution_search(W12, mlp_predictor, cons, AGING, latency_table=note10)
    assert again.arch == res.arch and again.evaluations == res.evaluations
    assert again.extra["island_best"] == res.extra["island_best"]
    assert np.array_equal(again.population_scores, res.population_scores)
    # the same search in a front of one budget gives the same winner
    assert pareto_search(W12, mlp_predictor, [22.0], AGING, latency_table=note10)[0].arch \
        == res.arch
    # the truncation islands' run is the one they make without the aging island (their
    # stream too: the aging island draws from a Generator spawned off the search's)
    two = EvolutionConfig(**{**AGING.get_state(), "islands": 2})
    plain = EvolutionConfig(**{**two.get_state(), "aging_islands": 0})
    both = evolution_search(W12, mlp_predictor, cons, two, latency_table=note10)
    alone = evolution_search(W12, mlp_predictor, cons, plain, latency_table=note10)
    assert both.extra["island_best"][:2] == alone.extra["island_best"]
    assert len(both.extra["island_best"]) == 3


def test_a_failing_part_of_a_split_search_stops_the_other(note10, mlp_predictor):
    """The truncation islands' predictor fails on their first generation (batches of 9-16
    rows: the aging island's are 20, then at most 8); the aging island, set to run for a
    million generations, must stop at once and the failure reach the caller."""

    class FailsOnTruncationChildren:
        def __init__(self, inner):
            self.inner, self.encoder = inner, inner.encoder

        def predict_features(self, x):
            if 8 < len(x) <= 16:
                raise RuntimeError("predictor broke")
            return self.inner.predict_features(x)

        def predict(self, batch):
            return self.inner.predict(batch)

    cfg = EvolutionConfig(**{**AGING.get_state(), "aging_generations": 10**6, "threads": 2})
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="predictor broke"):
        evolution_search(W12, FailsOnTruncationChildren(mlp_predictor),
                         Constraints(max_latency_ms=22.0), cfg, latency_table=note10)
    assert time.perf_counter() - t0 < 30  # a million generations would take hours

    class SlowThenFails(FailsOnTruncationChildren):
        """The truncation islands' children take 0.2 s per generation and fail in the
        third: by then the short aging island has long been waiting for their pool."""
        calls = 0

        def predict_features(self, x):
            if 8 < len(x) <= 16:
                self.calls += 1
                time.sleep(0.2)
                if self.calls == 3:
                    raise RuntimeError("predictor broke")
            return self.inner.predict_features(x)

    # the merged island waits for the truncation islands' pool at generation 7 of 40; a
    # failure before that pool exists must end the wait, not hang it
    cfg = EvolutionConfig(**{**AGING.get_state(), "generations": 40, "aging_generations": 1,
                             "threads": 2})
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="predictor broke"):
        evolution_search(W12, SlowThenFails(mlp_predictor), Constraints(max_latency_ms=22.0),
                         cfg, latency_table=note10)
    assert time.perf_counter() - t0 < 30


def test_aging_keeps_the_newest_archs_and_its_best_ever(note10, mlp_predictor):
    # one aging island, no final local search: the result's population is the island's last
    # pool (its newest 6 archs) plus its best ever, which age has long removed from the pool
    cfg = EvolutionConfig(islands=0, aging_islands=1, aging_population=6, offspring=3,
                          tournament=2, aging_generations=40, local_search=False, seed=4,
                          merge_generations=0)
    res = evolution_search(W12, mlp_predictor, Constraints(max_latency_ms=24.0), cfg,
                           latency_table=note10)
    assert len(res.population) <= 7
    assert res.predicted_accuracy == pytest.approx(res.extra["island_best"][0])
    assert (note10.predict(res.population) <= 24.0 + 1e-9).all()
    # the best ever beats what the last pool holds (else this test would not test keeping it)
    assert res.population_scores[0] > res.population_scores[1:].max()


def test_merged_island_breeds_the_islands_best_archs_after_them(note10, mlp_predictor):
    cons = Constraints(max_latency_ms=22.0)
    rec = _RecordingPredictor(mlp_predictor)
    cfg = EvolutionConfig(**{**AGING.get_state(), "threads": 1})
    res = evolution_search(W12, rec, cons, cfg, latency_table=note10)
    sizes = [len(b) for b in rec.batches]
    # after the two runs (16 + 4 batches, 20 + 12 batches) the merged island scores only
    # children (its pool starts from archs already scored), up to 8 per generation
    assert 0 < max(sizes[18:18 + cfg.merge_generations]) <= cfg.offspring
    lat = np.concatenate([note10.predict(b) for b in rec.batches])
    assert (lat <= 22.0 + 1e-9).all()
    # its pool starts with every island's best, so its best is at least theirs
    assert res.extra["merged_island_best"] >= max(res.extra["island_best"])
    assert len(res.extra["island_best"]) == 2  # the report covers the independent islands
    assert len(res.history) == 1 + cfg.aging_generations + cfg.merge_generations
    assert res.evaluations - res.extra["local_search_evaluations"] <= cfg.evaluations_budget
    # without it: no merged island, and the islands' own runs are unchanged by it
    off = evolution_search(W12, mlp_predictor, cons,
                           EvolutionConfig(**{**cfg.get_state(), "merge_generations": 0}),
                           latency_table=note10)
    assert "merged_island_best" not in off.extra
    assert off.extra["island_best"] == res.extra["island_best"]
    assert len(off.history) == 1 + cfg.aging_generations
    # truncation islands alone have none (aging_islands=0 keeps its earlier meaning)
    plain = evolution_search(W12, mlp_predictor, cons,
                             EvolutionConfig(**{**cfg.get_state(), "aging_islands": 0}),
                             latency_table=note10)
    assert "merged_island_best" not in plain.extra


def test_aging_front_is_feasible_and_monotone(note10, mlp_predictor):
    front = pareto_search(W12, mlp_predictor, [18.0, 24.0], AGING, latency_table=note10)
    assert [r.latency_ms <= b for r, b in zip(front, (18.0, 24.0))] == [True, True]
    assert front[0].predicted_accuracy <= front[1].predicted_accuracy


def test_aging_settings_are_validated():
    for bad in ({"aging_islands": -1}, {"tournament": 0}, {"offspring": 0},
                {"aging_population": 1}, {"aging_generations": -1},
                {"merge_generations": -1}):
        with pytest.raises(SearchError, match=f"{next(iter(bad))} must be >= "):
            EvolutionConfig(**bad)
    with pytest.raises(SearchError, match="threads must be >= 1"):
        EvolutionConfig(threads=0)
    with pytest.raises(SearchError, match="islands must be >= 1"):
        EvolutionConfig(aging_islands=0, islands=0)
    assert EvolutionConfig(islands=0, aging_islands=1).islands == 0
    assert EvolutionConfig().aging_islands == 1  # part of the default search (round 7)
