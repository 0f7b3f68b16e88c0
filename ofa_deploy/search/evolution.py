"""Regularised evolution for one budget, and the random-search baseline."""
from __future__ import annotations

import math
import time
from typing import Callable, List, Sequence, Tuple

import numpy as np

from supernet.arch import ArchConfig, ArchError
from supernet.batch import ArchBatch
from supernet.space import Space

from .local import polish
from .problem import _Problem, _single_thread_torch
from .results import SearchResult, _genes_of, _island_report, _result
from .settings import Constraints, EvolutionConfig, SearchError, _check_int


class SeedArchError(SearchError):
    """A seed arch the search cannot start from: ``index`` is its position among the seeds,
    ``reason`` the message without the seed's name (a caller may name it its own way)."""

    def __init__(self, index: int, reason: str):
        super().__init__(f"seed arch {index + 1} {reason}")
        self.index, self.reason = index, reason


class _Children:
    """Makes one generation's children, each meeting the budget.

    The reference regenerates an over-budget child from the same parent(s) until it fits
    (``while True``). Here every open slot gets ``k`` candidates per round, all priced in one
    pass, and takes its first feasible one, which is the same distribution; ``k`` follows the
    feasibility rate seen so far so that most slots fill in one round, and doubles for the
    slots still open in later rounds. After ``retry_rounds`` rounds a slot stays empty (the
    reference's fallback would be a copy of a parent, a duplicate that is dropped anyway)."""

    def __init__(self, problem: _Problem, config: EvolutionConfig):
        self.problem, self.config = problem, config
        self.p = config.mutate_prob
        self.pr = self.p if config.resolution_mutate_prob is None \
            else config.resolution_mutate_prob
        self.tried = self.passed = 1.0  # running feasibility rate (optimistic start)
        self.is_mut = np.arange(config.population) < config.num_mutations

    def __call__(self, parents: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cfg, prob = self.config, self.problem
        n = cfg.population
        a = parents[rng.integers(len(parents), size=n)]  # mutant's parent / first parent
        b = parents[rng.integers(len(parents), size=n)]  # second crossover parent
        kids, done, tried, passed = _fill_slots(
            prob, a, b, self.is_mut, rng, self.p, self.pr, self.passed / self.tried,
            cfg.retry_rounds, lambda g, _rows: prob.feasible(g))
        self.tried += tried
        self.passed += passed
        return kids[done]


def _fill_slots(prob: _Problem, a: np.ndarray, b: np.ndarray, is_mut: np.ndarray,
                rng: np.random.Generator, p: float, pr: float, rate: float, rounds: int,
                feasible: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    """One child per slot (row of ``a``/``b``): up to ``rounds`` rounds of ``k`` candidates per
    open slot, all priced in one pass; a slot takes its first feasible candidate. ``k`` starts
    where a feasibility ``rate`` fills ~99% of slots in one round and doubles after. Returns
    ``(kids, filled mask, candidates tried, candidates feasible)``; ``feasible(genes, slots)``
    gets the slot index of every candidate row."""
    n = len(a)
    k = 1 if rate >= 0.99 else int(min(16, math.ceil(math.log(0.01) / math.log1p(-rate))))
    kids = np.empty_like(a)
    done = np.zeros(n, dtype=bool)
    todo = np.arange(n)
    tried = passed = 0.0
    for _ in range(rounds):
        rows = np.concatenate([todo] * k)  # k candidates per open slot, slot-major blocks
        cand = prob.vary(a[rows], b[rows], is_mut[rows], rng, p, pr)
        ok = feasible(cand, rows)
        tried += len(ok)
        passed += float(np.count_nonzero(ok))
        ok = ok.reshape(k, len(todo))
        first = ok.argmax(axis=0)  # 0 where none is feasible: checked next
        hit = ok[first, np.arange(len(todo))]
        won = todo[hit]
        kids[won] = cand[first[hit] * len(todo) + np.nonzero(hit)[0]]
        done[won] = True
        todo = todo[~hit]
        if not len(todo):
            break
        k = min(2 * k, 32)  # the slots left are the hard ones (parents at the budget edge)
    return kids, done, tried, passed


def _seed_genes(problem: _Problem, seed_archs) -> np.ndarray | None:
    """Gene rows of ``seed_archs`` (:class:`~supernet.arch.ArchConfig` s of the problem's space,
    or an :class:`ArchBatch`), in order; None for no seeds. A seed at a resolution this search
    does not score (not in the table, the predictor or ``resolutions``) is refused with
    :class:`SeedArchError`, naming both: it could never be priced or scored."""
    if seed_archs is None:
        return None
    if isinstance(seed_archs, ArchBatch):
        batch = seed_archs
    else:
        archs = list(seed_archs)
        if not archs:
            return None
        for i, a in enumerate(archs):
            if not isinstance(a, ArchConfig):
                raise SeedArchError(i, f"is not an ArchConfig: {a!r}")
            try:
                # any resolution here: the one this search scores is checked below, by name
                a.validate(problem.space, any_resolution=True)
            except ArchError as exc:
                raise SeedArchError(i, f"does not fit the space: {exc}") from None
        batch = ArchBatch.from_archs(problem.space, archs)
    if batch.space.name != problem.space.name:
        raise SearchError(f"the seed archs are of space {batch.space.name}, not "
                          f"{problem.space.name}")
    res = list(problem.resolutions)
    for i, r in enumerate(np.asarray(batch.r).tolist()):
        if r not in res:
            raise SeedArchError(i, f"has resolution {r}, which this search cannot score: "
                                   f"its resolutions (latency table, predictor, --resolution) "
                                   f"are {res}")
    return _genes_of(problem.cost, batch)


def _take_seeds(problem: _Problem, seed_pool: np.ndarray | None, limit: int,
                seen: set) -> Tuple[np.ndarray | None, List[int]]:
    """The first ``limit`` distinct seed rows that meet the current budget (their keys added
    to ``seen``), and the indices of the seeds over it (empty if no seeds)."""
    if seed_pool is None or not len(seed_pool):
        return None, []
    ok = problem.feasible(seed_pool)
    take = []
    for i, k in zip(np.nonzero(ok)[0].tolist(), problem.cost.keys(seed_pool[ok])):
        if len(take) >= limit:
            break
        if k not in seen:
            seen.add(k)
            take.append(i)
    return (seed_pool[take] if take else None), np.nonzero(~ok)[0].tolist()


def _seed_report(seed_pool: np.ndarray | None, used: int, over: List[int]) -> dict:
    """Result keys of a seeded search (none for an unseeded one, so its output is unchanged)."""
    if seed_pool is None or not len(seed_pool):
        return {}
    return {"seeds_used": used, "seeds_over_budget": over}


def _evolve(problem: _Problem, config: EvolutionConfig, rng: np.random.Generator,
            seed_pool: np.ndarray | None = None) -> SearchResult:
    t0 = time.perf_counter()
    cost = problem.cost
    P, N = config.num_parents, config.population
    seen: set = set()

    # initial population: the best distinct feasible seeds (if any), topped up by sampling
    parts = []
    seeds, over = _take_seeds(problem, seed_pool, P, seen)
    if seeds is not None:
        parts.append(seeds)
    have = sum(len(x) for x in parts)
    if have < N:
        g = problem.sample_feasible(N - have, rng, exclude=seen)
        seen.update(cost.keys(g))
        parts.append(g)
    pool = np.concatenate(parts)
    scores = problem.score(pool)
    evaluations = len(pool)
    history = [float(scores.max())]
    clock = time.perf_counter
    elapsed = [clock() - t0]
    children = _Children(problem, config)

    for _gen in range(config.generations):
        top = np.argsort(-scores, kind="stable")[:P]
        parents, pscores = pool[top], scores[top]
        kids = children(parents, rng)
        # a child equal to an arch already scored is dropped: if it is a parent it is in the
        # pool already; otherwise it lost its place earlier and the bar has only risen since
        add = seen.add
        fresh = [i for i, k in enumerate(cost.keys(kids)) if k not in seen and not add(k)]
        if fresh:
            kids = kids[fresh]
            kscores = problem.score(kids)
            evaluations += len(kids)
            pool = np.concatenate([parents, kids])
            scores = np.concatenate([pscores, kscores])
        else:
            pool, scores = parents, pscores
        history.append(max(history[-1], float(scores.max())))
        elapsed.append(clock() - t0)
    island = history[-1]
    pool, scores, n, report = polish(problem, pool, scores, config.local_search)
    evaluations += n
    history[-1] = max(history[-1], float(scores.max()))
    elapsed[-1] = clock() - t0
    res = _result(problem, pool, scores, history, t0, evaluations, "evolution", config)
    res.history_seconds = elapsed
    res.extra.update(report)
    res.extra["relink_evaluations"] = 0  # one island: nothing to relink
    res.extra.update(_island_report([island]))
    res.extra.update(_seed_report(seed_pool, have, over))
    return res


def evolution_search(space: "Space | str", predictor, constraints: Constraints,
                     config: EvolutionConfig | None = None, *, latency_table=None,
                     resolutions: Sequence[int] | None = None,
                     seed_archs: "Sequence[ArchConfig] | ArchBatch | None" = None
                     ) -> SearchResult:
    """Best predicted-accuracy arch meeting ``constraints`` (regularised evolution).

    ``predictor`` is anything with ``predict(ArchBatch) -> array`` (e.g.
    :class:`~ofa_deploy.accuracy.AccuracyPredictor`); ``latency_table`` a
    :class:`luts.table.LatencyTable` (needed for a latency budget). ``resolutions`` default to
    the table's (else the space's) that the predictor can score. With ``config.islands`` > 1
    (the default) that many independent populations evolve in lock-step and the best over
    them wins (``extra["island_best"]``, ``extra["island_spread"]`` report each). Raises
    :class:`InfeasibleBudgetError` before searching if a budget is below its exact minimum.

    ``seed_archs`` (e.g. known good subnets) start the first island's population, up to
    ``config.num_parents`` distinct ones that meet the budget (those over it are skipped and
    listed by index in ``extra["seeds_over_budget"]``; ``extra["seeds_used"]`` counts the
    others); the other islands stay independent random restarts. A seed at a resolution the
    search cannot score raises :class:`SearchError`.
    """
    config = EvolutionConfig() if config is None else config
    if not isinstance(config, EvolutionConfig):
        raise SearchError("config must be an EvolutionConfig")
    problem = _Problem(space, predictor, constraints, latency_table, resolutions)
    problem.check_feasible()
    seeds = _seed_genes(problem, seed_archs)
    rng = np.random.default_rng(config.seed)
    from .islands import _search_one  # islands builds on this module

    with _single_thread_torch():
        return _search_one(problem, config, rng, seeds)


def random_search(space: "Space | str", predictor, constraints: Constraints,
                  evaluations: int, *, seed: int = 0, latency_table=None,
                  resolutions: Sequence[int] | None = None, chunk: int = 100) -> SearchResult:
    """Baseline: score ``evaluations`` distinct random feasible archs (rejection sampling,
    completed by repair at tight budgets) and keep the best. ``history`` holds the best after
    each ``chunk`` evaluations."""
    _check_int("evaluations", evaluations, 1)
    _check_int("chunk", chunk, 1)
    problem = _Problem(space, predictor, constraints, latency_table, resolutions)
    problem.check_feasible()
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    with _single_thread_torch():
        g = problem.sample_feasible(evaluations, rng)
        scores = np.concatenate([problem.score(g[s:s + chunk]) for s in range(0, len(g), chunk)])
    ends = np.minimum(np.arange(chunk, len(g) + chunk, chunk), len(g)) - 1
    history = np.maximum.accumulate(scores)[ends].tolist()
    return _result(problem, g, scores, history, t0, len(g), "random")
