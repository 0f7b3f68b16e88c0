"""Pareto fronts: one island search per budget (:mod:`.islands`), tightest first, a looser
budget taking over the tighter one's winner where that is better."""
from __future__ import annotations

import dataclasses
import time
from typing import List, Sequence

import numpy as np

from supernet.arch import ArchConfig
from supernet.batch import ArchBatch
from supernet.space import Space

from .evolution import _seed_genes
from .islands import _search_one
from .local import polish
from .problem import _Problem, _single_thread_torch
from .results import SearchResult, _genes_of, _result
from .settings import Constraints, EvolutionConfig, SearchError


def _as_constraints(b, base: Constraints | None) -> Constraints:
    if isinstance(b, Constraints):
        return b
    if isinstance(b, bool) or not isinstance(b, (int, float, np.integer, np.floating)):
        raise SearchError(f"a budget must be a number of ms or a Constraints, got {b!r}")
    return dataclasses.replace(base or Constraints(), max_latency_ms=float(b))


def pareto_search(space: "Space | str", predictor, budgets: Sequence["Constraints | float"],
                  config: EvolutionConfig | None = None, *, latency_table=None,
                  constraints: Constraints | None = None,
                  resolutions: Sequence[int] | None = None,
                  seed_archs: "Sequence[ArchConfig] | ArchBatch | None" = None
                  ) -> List[SearchResult]:
    """The best arch for each budget (a Pareto front), tightest first; a number is a latency
    budget (ms) combined with ``constraints``. Every budget is checked before any search runs.

    Each budget gets exactly :func:`evolution_search`'s run (same ``config``, same seed), so
    a front has the quality of its single-budget searches by construction; then, tightest
    first, a budget whose winner is worse than the tighter budget's takes that winner (when it
    fits, which it does for latency-only fronts) and climbs on from it within its own budget
    (``extra["from_tighter_budget"]``), so a looser budget never ends worse. A front costs
    the sum of its searches (the budgets once evolved in lock-step, with migration, at about
    the same cost and measurably lower quality per budget: benchmarks/search_vs_reference).
    ``wall_seconds`` of each result is its own search's; ``extra["front_seconds"]`` holds the
    whole front's."""
    config = EvolutionConfig() if config is None else config
    if not isinstance(config, EvolutionConfig):
        raise SearchError("config must be an EvolutionConfig")
    cons = [_as_constraints(b, constraints) for b in budgets]
    if not cons:
        raise SearchError("no budgets given")
    cons.sort(key=lambda c: tuple(c.limits()))
    problem = _Problem(space, predictor, cons[0], latency_table, resolutions)
    # seed_archs start every budget they fit, as evolution_search's do (each budget lists
    # the seeds over it); checked before any search, so a bad seed is refused at once
    seeds = _seed_genes(problem, seed_archs)
    for c in cons:
        problem.set_constraints(c)
        problem.check_feasible()
    t0 = time.perf_counter()
    results: List[SearchResult] = []
    with _single_thread_torch():
        for c in cons:
            problem.set_constraints(c)
            rng = np.random.default_rng(config.seed)  # as evolution_search seeds it
            res = _search_one(problem, config, rng, seeds)
            if results and results[-1].predicted_accuracy > res.predicted_accuracy:
                res = _adopt_tighter(problem, results[-1], res, config)
            results.append(res)
    if len(results) > 1:
        total = time.perf_counter() - t0
        for res in results:
            res.extra["front_seconds"] = total
    return results


def _adopt_tighter(problem: _Problem, tighter: SearchResult, res: SearchResult,
                   config: EvolutionConfig) -> SearchResult:
    """``res`` (the search of the current budget) with the tighter budget's better winner
    added to its population and the final local search rerun from it; ``res`` unchanged if
    that winner does not fit here."""
    cost = problem.cost
    row = _genes_of(cost, tighter.population[:1])
    if not problem.feasible(row)[0]:
        return res
    pool = np.concatenate([_genes_of(cost, res.population), row])
    scores = np.append(res.population_scores, tighter.predicted_accuracy)
    pool, scores, n, report = polish(problem, pool, scores, config.local_search)
    out = _result(problem, pool, scores, list(res.history),
                  time.perf_counter() - res.wall_seconds, res.evaluations + n, res.method,
                  config)
    out.history[-1] = max(out.history[-1], out.predicted_accuracy)
    out.history_seconds = list(res.history_seconds)
    out.extra = {**res.extra, **report, "from_tighter_budget": True}
    return out
