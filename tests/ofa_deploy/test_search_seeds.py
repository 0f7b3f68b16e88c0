"""Seeded searches (``seed_archs``): seeds join the initial population, over-budget seeds are
skipped and reported, a seed at a resolution the search cannot score is refused."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from ofa_deploy.search import Constraints, EvolutionConfig, evolution_search, pareto_search
from ofa_deploy.search.evolution import SeedArchError
from supernet.arch import ArchConfig
from supernet.batch import ArchBatch
from supernet.cost import arch_cost
from supernet.space import get_space

W12 = "ofa-mbv3-w1.2"
SP = get_space(W12)
# a fixed arch that a random sample of a few dozen never holds
TARGET = ArchBatch.sample(SP, 1, np.random.default_rng(3), resolutions=SP.resolutions).to_archs()[0]


class Closeness:
    """Predicted accuracy = minus the number of genes differing from ``TARGET``: its unique
    optimum is ``TARGET`` (a tiny problem whose best arch is known)."""

    def __init__(self, target: ArchConfig = TARGET):
        self.t = ArchBatch.from_archs(SP, [target])

    def predict(self, b: ArchBatch) -> np.ndarray:
        t = self.t  # both canonical: skipped blocks hold the same smallest choice
        return -((b.ks != t.ks).sum(1) + (b.e != t.e).sum(1) + (b.d != t.d).sum(1)
                 + (b.r != t.r)).astype(float)


def _cfg(islands: int, **kw) -> EvolutionConfig:
    return EvolutionConfig(aging_islands=0, population=16, generations=0, islands=islands, local_search=False,
                           seed=kw.pop("seed", 0), **kw)


LOOSE = Constraints(max_macs=5e9)


@pytest.mark.parametrize("islands", [1, 3])
def test_seed_that_is_the_optimum_is_the_result(islands):
    unseeded = evolution_search(W12, Closeness(), LOOSE, _cfg(islands))
    assert unseeded.arch != TARGET and unseeded.predicted_accuracy < 0
    assert "seeds_used" not in unseeded.extra  # unseeded output unchanged
    seeds = [ArchConfig.min(SP), TARGET]
    a = evolution_search(W12, Closeness(), LOOSE, _cfg(islands), seed_archs=seeds)
    b = evolution_search(W12, Closeness(), LOOSE, _cfg(islands), seed_archs=seeds)
    assert a.arch == TARGET and a.predicted_accuracy == 0.0
    assert a.extra["seeds_used"] == 2 and a.extra["seeds_over_budget"] == []
    # deterministic: the same population, in the same order
    assert b.arch == a.arch and (b.population_scores == a.population_scores).all()
    assert b.population.to_archs() == a.population.to_archs()
    # the seeds are added, not substituted: the rest of the population is a random sample
    assert len(a.population) == 16 * islands
    # an empty seed list is no seeds: the same run as unseeded
    c = evolution_search(W12, Closeness(), LOOSE, _cfg(islands), seed_archs=[])
    assert c.population.to_archs() == unseeded.population.to_archs()


def test_seeded_evolution_keeps_the_seed_or_better():
    cfg = EvolutionConfig(aging_islands=0, population=16, generations=3, islands=2, local_search=False)
    res = evolution_search(W12, Closeness(), LOOSE, cfg, seed_archs=[TARGET])
    assert res.arch == TARGET  # an optimum in the pool never leaves the parents


def test_over_budget_seed_is_skipped_and_reported():
    big = ArchConfig.max(SP)
    budget = Constraints(max_macs=arch_cost(SP, big)["macs"] - 1)
    for islands in (1, 3):
        res = evolution_search(W12, Closeness(), budget, _cfg(islands),
                               seed_archs=[big, TARGET])
        assert res.extra["seeds_over_budget"] == [0] and res.extra["seeds_used"] == 1
        assert res.macs <= budget.max_macs
        assert big not in res.population.to_archs()


def test_seed_at_a_resolution_not_searched_is_refused():
    assert TARGET.r not in (160, 176)
    with pytest.raises(SeedArchError) as err:
        evolution_search(W12, Closeness(), LOOSE, _cfg(1), resolutions=[160, 176],
                         seed_archs=[dataclasses.replace(ArchConfig.min(SP), r=160), TARGET])
    assert err.value.index == 1
    msg = str(err.value)
    assert f"resolution {TARGET.r}" in msg and "[160, 176]" in msg
    # any resolution of the reference's (a net.config's 240) is refused the same way
    off_space = ArchConfig(ks=TARGET.ks, e=TARGET.e, d=TARGET.d, r=240)
    with pytest.raises(SeedArchError, match="resolution 240"):
        pareto_search(W12, Closeness(), [LOOSE], _cfg(1), seed_archs=[off_space])


def test_front_seeds_every_budget_it_fits():
    small, big = ArchConfig.min(SP), ArchConfig.max(SP)
    mid = (arch_cost(SP, small)["macs"] + arch_cost(SP, big)["macs"]) / 2
    budgets = [Constraints(max_macs=mid), Constraints(max_macs=5e9)]
    res = pareto_search(W12, Closeness(big), budgets, _cfg(2), seed_archs=[small, big])
    assert [r.extra["seeds_over_budget"] for r in res] == [[1], []]
    assert [r.extra["seeds_used"] for r in res] == [1, 2]
    assert res[1].arch == big


RESNET_CONFIGS = Path(__file__).resolve().parents[1] / "data" / "ofa-resnet50-netconfig"


def test_resnet_search_takes_init_archs(run_cli, tmp_path):
    base = ("search", "--space", "ofa-resnet50", "--mflops", "2000", "--islands", "1", "--json")
    out = tmp_path / "best.json"
    strong = run_cli(*base, "--population", "40", "--generations", "15", "--aging-islands", "0", "--out", out)
    assert strong.exit_code == 0, strong.output
    best = json.loads(strong.stdout)
    short = ("--population", "8", "--generations", "0", "--aging-islands", "0")
    cold = json.loads(run_cli(*base, *short).stdout)
    assert cold["predicted_accuracy"] < best["predicted_accuracy"]  # else this proves nothing
    big = RESNET_CONFIGS / "resnet50_max_r224"  # over 2000M MACs
    res = run_cli(*base, *short, "--init-arch", out, "--init-arch", big)
    assert res.exit_code == 0, res.output
    warm = json.loads(res.stdout)
    assert warm["predicted_accuracy"] >= best["predicted_accuracy"]
    assert (warm["seeds_used"], warm["seeds_over_budget"]) == (1, [1])
    assert res.stderr.strip().splitlines() == [
        f"warning: --init-arch {big} is over the budget (MACs <= 2000M); not seeded there"]
    off = RESNET_CONFIGS / "resnet50_mixed_r288"
    bad = run_cli(*base, *short, "--init-arch", off)
    assert bad.exit_code != 0 and len(bad.output.strip().splitlines()) == 1
    assert f"--init-arch {off} has resolution 288" in bad.output and "256]" in bad.output
