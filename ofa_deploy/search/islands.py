"""The island search of one budget: what :func:`evolution_search` and each budget of
:func:`pareto_search` run.

Truncation islands (with successive halving) and aging islands, then the merged island (bred
from the best archs of both), evolve as two independent runs, in two threads when
``config.threads`` > 1; their final pools are merged, then path relinking between the islands'
bests and the final local search (:mod:`.local`) pick the winner. A lone truncation island is
:func:`~.evolution._evolve`.
"""
from __future__ import annotations

import copy
import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import List, Tuple

import numpy as np

from .evolution import _evolve, _fill_slots, _seed_report, _take_seeds
from .local import polish, relink_islands
from .problem import _Problem, _unseen_rows
from .results import SearchResult, _island_report, _result
from .settings import EvolutionConfig


def _search_one(problem: _Problem, config: EvolutionConfig, rng: np.random.Generator,
                seed_pool: np.ndarray | None) -> SearchResult:
    """One budget's search (``problem``'s constraints): a lone truncation island in
    :func:`_evolve`, anything else through :func:`_evolve_islands`."""
    if config.islands == 1 and not config.aging_islands:
        return _evolve(problem, config, rng, seed_pool=seed_pool)
    return _evolve_islands(problem, config, rng, seed_pool)


def _evolve_islands(problem: _Problem, config: EvolutionConfig, rng: np.random.Generator,
                    seed_pool: np.ndarray | None = None) -> SearchResult:
    """:func:`_evolve` with several islands.

    ``config.islands`` truncation islands (``config.population`` archs each) start from their
    own random samples and never exchange archs, so each is an independent restart (seeds
    converge to different basins; the best of several restarts is far more reliable than one
    longer run); they evolve together, one predictor pass per generation for all of them, and
    successive halving (``prune_at``, ``keep_islands``) stops the worse ones. ``seed_pool``
    rows (genes) start the first island, as in :func:`_evolve`.

    ``config.aging_islands`` more islands (numbered after the truncation ones) run aging
    evolution: a pool of the newest ``aging_population`` archs, parents by tournament,
    ``offspring`` children for ``aging_generations`` generations; they are never pruned, and
    each one's best ever joins the final pool. With ``config.merge_generations``, the merged
    island follows them (:func:`_then_merged`). With both kinds, the truncation islands and
    the aging ones are two independent runs (:func:`_evolve_split`), merged before relinking.

    The result is the best over all islands after relinking and the final local search;
    ``extra["island_best"]`` lists each island's own best (before those) and
    ``extra["island_spread"]`` their range."""
    t0 = time.perf_counter()
    if config.islands and config.aging_islands:
        run = _evolve_split(problem, config, rng, seed_pool)
    else:
        run = _run_islands(problem, config, rng, seed_pool)
        if config.aging_islands and config.merge_generations:
            run = _then_merged(problem, config, rng.spawn(1)[0], run)
    return _finish(problem, config, run, t0)


class _Stopped(Exception):
    """A part of a split search ended early because the other one failed."""


def _results(futures: list) -> list:
    """Each future's result, in order; the first failure to happen (not a part that merely
    stopped because of it) is raised as soon as it does."""
    for f in as_completed(futures):
        if f.exception() is not None and not isinstance(f.exception(), _Stopped):
            raise f.exception()
    return [f.result() for f in futures]


@dataclasses.dataclass
class _Run:
    """What an evolution of islands leaves for the finish: the final pool (genes, island of
    each row, scores), each independent island's best score, the best score so far after
    each generation with the time (``perf_counter``) it was reached, the archs scored, the
    seed report, and the merged island's best (None without one; its rows are the last
    island's)."""
    pool: np.ndarray
    island: np.ndarray
    scores: np.ndarray
    best: np.ndarray
    history: List[float]
    times: List[float]
    evaluations: int
    seeded: dict
    merged_best: float | None = None


class _Snapshot:
    """The truncation islands' pool (genes, scores) at one generation, handed to the merged
    island, which may run in another thread."""

    def __init__(self, at: int):
        self.at, self.ready, self.rows = at, threading.Event(), None

    def put(self, pool: np.ndarray, scores: np.ndarray) -> None:
        if self.rows is None:
            self.rows = (pool.copy(), scores.copy())
            self.ready.set()

    def get(self, stop: threading.Event | None) -> Tuple[np.ndarray, np.ndarray]:
        while not self.ready.wait(0.02):
            if stop is not None and stop.is_set():
                raise _Stopped
        return self.rows


def _evolve_split(problem: _Problem, config: EvolutionConfig, rng: np.random.Generator,
                  seed_pool: np.ndarray | None) -> _Run:
    """The truncation islands (from ``rng``, so exactly the run they make without aging
    islands) and the aging islands then the merged island (from Generators spawned off
    ``rng``) as two independent runs, merged. With ``config.threads`` > 1 they run in two
    threads: numpy's BLAS, most of a search, runs without the GIL, so on two free cores the
    search takes about as long as its longer part. Each part has its own problem (shallow
    copy: its spare draws are its own) and its own Generator, and the merged island takes the
    truncation islands' pool at a fixed generation, so the result is the same for any
    ``threads``.

    The merged island starts where the aging islands end, so it takes the truncation
    islands' pool at the same fraction of their run (with the defaults, after 34 of 75
    generations); they go on meanwhile, so the second part ends last (about 0.1 s later on
    the benchmark's 2-core VM)."""
    aging_rng, merged_rng = rng.spawn(2)  # spawning draws nothing from rng
    other = copy.copy(problem)
    other._spare = None
    snap = None
    if config.merge_generations:
        # the aging islands' share of the second thread's work (all evolve in one pass)
        aging_work = config.aging_islands * config.aging_generations
        share = aging_work / (aging_work + config.merge_generations)
        snap = _Snapshot(int(round(config.generations * share)))

    def aging_part(stop: threading.Event | None = None) -> _Run:
        run = _run_islands(other, dataclasses.replace(config, islands=0), aging_rng, stop=stop)
        if snap is None:
            return run
        return _then_merged(other, config, merged_rng, run, snap.get(stop), stop)

    def trunc_part(stop: threading.Event | None = None) -> _Run:
        return _run_islands(problem, dataclasses.replace(config, aging_islands=0), rng,
                            seed_pool, stop, snapshot=snap)

    if config.threads > 1:
        # if either part fails, or Ctrl-C reaches this (main) thread, the other part stops
        # at its next generation instead of running on while the executor waits for it
        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=2) as ex:
            futures = [ex.submit(trunc_part, stop), ex.submit(aging_part, stop)]
            try:
                trunc, aging = _results(futures)
            except BaseException:
                stop.set()
                raise
    else:
        trunc = trunc_part()  # first: it leaves the snapshot the merged island needs
        aging = aging_part()
    n = max(len(trunc.history), len(aging.history))

    def pad(seq: list) -> list:  # the shorter run's last entry holds once it has stopped
        return list(seq) + [seq[-1]] * (n - len(seq))

    return _Run(pool=np.concatenate([trunc.pool, aging.pool]),
                island=np.concatenate([trunc.island, aging.island + len(trunc.best)]),
                scores=np.concatenate([trunc.scores, aging.scores]),
                best=np.concatenate([trunc.best, aging.best]),
                history=[max(a, b) for a, b in zip(pad(trunc.history), pad(aging.history))],
                times=[max(a, b) for a, b in zip(pad(trunc.times), pad(aging.times))],
                evaluations=trunc.evaluations + aging.evaluations, seeded=trunc.seeded,
                merged_best=aging.merged_best)


def _then_merged(problem: _Problem, config: EvolutionConfig, rng: np.random.Generator,
                 run: _Run, more: Tuple[np.ndarray, np.ndarray] | None = None,
                 stop: threading.Event | None = None) -> _Run:
    """``run`` followed by the merged island: one more aging island, for
    ``config.merge_generations`` generations, whose pool starts as the best
    ``config.aging_population`` distinct archs of ``run``'s final pool and of ``more``
    (``(genes, scores)``: the truncation islands' snapshot); its rows join ``run``'s as one
    more island.

    Each island ends in its own basin; bred together, their best archs recombine into
    subnets none of them reached (benchmarks/search_vs_reference, round 8: at 50 ms, seeds
    0-19, from -0.050 mean / -0.282 worst to -0.002 / -0.003 points below the best known)."""
    genes, scores = run.pool, run.scores
    if more is not None:
        genes, scores = np.concatenate([genes, more[0]]), np.concatenate([scores, more[1]])
    order = np.argsort(-scores, kind="stable")
    take = order[_unseen_rows(problem.cost.keys(genes[order]), set(), config.aging_population)]
    cfg = dataclasses.replace(config, islands=0, aging_islands=1,
                              aging_generations=config.merge_generations)
    merged = _run_islands(problem, cfg, rng, stop=stop, start=(genes[take], scores[take]))
    top = run.history[-1]
    return dataclasses.replace(
        run, pool=np.concatenate([run.pool, merged.pool]),
        island=np.concatenate([run.island, merged.island + len(run.best)]),
        scores=np.concatenate([run.scores, merged.scores]),
        history=run.history + [max(top, h) for h in merged.history[1:]],
        times=run.times + merged.times[1:], evaluations=run.evaluations + merged.evaluations,
        merged_best=float(merged.best[0]))


def _run_islands(problem: _Problem, config: EvolutionConfig, rng: np.random.Generator,
                 seed_pool: np.ndarray | None = None,
                 stop: threading.Event | None = None,
                 start: Tuple[np.ndarray, np.ndarray] | None = None,
                 snapshot: _Snapshot | None = None) -> _Run:
    """The evolution of :func:`_evolve_islands` for one kind of island: ``config.islands``
    truncation islands (drawing exactly what they drew before aging islands existed) or
    ``config.aging_islands`` aging ones, never both (:func:`_evolve_split` runs both kinds as
    two such runs). ``stop``, once set, ends it before its next generation with
    :class:`_Stopped` (the other thread of a split search failed or was interrupted).
    ``start``: ``(genes, scores)`` of distinct feasible archs already scored, the whole
    initial pool of a single island (instead of seeds and random draws; the merged island).
    ``snapshot`` gets the pool at its generation (or the last, if the run is shorter)."""
    cost = problem.cost
    K, P, N = config.islands, config.num_parents, config.population
    A, M, O = config.aging_islands, config.aging_population, config.offspring
    aging = A > 0  # else truncation islands (one kind per run: see the docstring)
    n_isl = A if aging else K
    size = M if aging else N  # initial sample per island

    # an arch is scored once per island (keyed with its island): islands stay independent
    seen: set = set()
    add = seen.add

    def new_rows(genes: np.ndarray, isl: np.ndarray) -> List[int]:
        return [i for i, k in enumerate(cost.keys(genes, isl)) if k not in seen and not add(k)]

    parts, seeded = [], {}
    for i in range(n_isl if start is None else 0):
        taken: set = set()
        seeds, over = _take_seeds(problem, seed_pool if i == 0 else None, P, taken)
        if i == 0:
            seeded = _seed_report(seed_pool, len(taken), over)
        if seeds is None:
            parts.append(problem.sample_feasible(size, rng))
        else:
            parts.append(np.concatenate([seeds, problem.sample_feasible(
                size - len(seeds), rng, exclude=taken)]) if size > len(seeds) else seeds)
    if start is None:
        isl = np.concatenate([np.full(len(x), i) for i, x in enumerate(parts)])
        pool = np.concatenate(parts)
        scores = problem.score(pool)
        evaluations = len(pool)
    else:
        pool, scores = start
        isl = np.zeros(len(pool), dtype=np.int64)
        evaluations = 0
    seen.update(cost.keys(pool, isl))
    best = np.full(n_isl, -np.inf)
    np.maximum.at(best, isl, scores)
    # aging islands lose their best to age: each island's best row so far is kept aside
    born = np.zeros(len(pool), dtype=np.int64)
    best_row = np.zeros((n_isl, cost.width), dtype=pool.dtype)
    for i in range(n_isl if aging else 0):
        rows = np.nonzero(isl == i)[0]
        best_row[i] = pool[rows[np.argmax(scores[rows])]]
    history = [float(best.max())]
    times = [time.perf_counter()]

    # child slots per island per generation, the first ``mutation_ratio`` of them mutants
    per, n_mut = ((O, int(round(config.mutation_ratio * O))) if aging
                  else (N, config.num_mutations))
    slot_isl = np.repeat(np.arange(n_isl), per)
    is_mut = np.tile(np.arange(per) < n_mut, n_isl)
    p = config.mutate_prob
    pr = p if config.resolution_mutate_prob is None else config.resolution_mutate_prob
    tried = passed = 1.0
    live = np.ones(n_isl, dtype=bool)
    # the aging islands are never pruned (they start slower, by design): n_live is 0 there
    n_live = 0 if aging else K
    for _gen in range(config.aging_generations if aging else config.generations):
        if stop is not None and stop.is_set():
            raise _Stopped
        if snapshot is not None and _gen == snapshot.at:
            snapshot.put(pool, scores)
        if (config.prune_at and _gen and _gen % config.prune_at == 0
                and n_live > config.keep_islands):
            # successive halving: only the better half of the live islands (by their best
            # arch so far) go on; stable ranking keeps ties deterministic
            n_live = max(config.keep_islands, (n_live + 1) // 2)
            rank = np.argsort(-np.where(live, best, -np.inf), kind="stable")
            live = np.zeros(n_isl, dtype=bool)
            live[rank[:n_live]] = True
            keep_rows = live[isl]
            pool, isl, scores, born = (pool[keep_rows], isl[keep_rows], scores[keep_rows],
                                       born[keep_rows])
            slot_isl = np.repeat(np.nonzero(live)[0], N)
            is_mut = np.tile(np.arange(N) < config.num_mutations, n_live)
        # rows sorted by island, then score: truncation islands keep their best P rows as
        # parents, aging islands every row (best first, for the tournament below)
        order = np.lexsort((-scores, isl))
        if aging:
            keep = order
        else:
            si = isl[order]
            keep = order[np.arange(len(order)) - np.searchsorted(si, np.arange(n_isl))[si] < P]
        parents, pi, ps, pb = pool[keep], isl[keep], scores[keep], born[keep]
        counts = np.bincount(pi, minlength=n_isl)
        offs = np.concatenate([[0], np.cumsum(counts)[:-1]])
        cnt, off = counts[slot_isl], offs[slot_isl]
        if not aging:
            a = parents[off + (rng.random(len(slot_isl)) * cnt).astype(np.int64)]
            b = parents[off + (rng.random(len(slot_isl)) * cnt).astype(np.int64)]
        else:
            # each parent wins a tournament of ``tournament`` random pool members: an island's
            # rows are sorted best first, so the winner is the smallest position drawn
            a, b = (parents[off + (rng.random((len(slot_isl), config.tournament))
                                   * cnt[:, None]).astype(np.int64).min(axis=1)]
                    for _ in range(2))

        kids, done, t, f = _fill_slots(problem, a, b, is_mut, rng, p, pr, passed / tried,
                                       config.retry_rounds, lambda g, _rows: problem.feasible(g))
        tried += t
        passed += f
        kids, ki = kids[done], slot_isl[done]
        fresh = new_rows(kids, ki)
        if fresh:
            kids, ki = kids[fresh], ki[fresh]
            kscores = problem.score(kids)
            evaluations += len(kids)
            pool = np.concatenate([parents, kids])
            isl = np.concatenate([pi, ki])
            scores = np.concatenate([ps, kscores])
            born = np.concatenate([pb, np.full(len(kids), _gen + 1)])
            if aging:
                gain = np.full(n_isl, -np.inf)
                np.maximum.at(gain, ki, kscores)
                for i in np.nonzero(gain > best)[0]:
                    rows = np.nonzero(ki == i)[0]
                    best_row[i] = kids[rows[np.argmax(kscores[rows])]]
                # the oldest die, so each island keeps its newest M rows
                by_age = np.lexsort((-born, isl))
                ia = isl[by_age]
                first = np.searchsorted(ia, np.arange(n_isl))
                dead = np.arange(len(ia)) - first[ia] >= M
                if dead.any():
                    alive = np.sort(by_age[~dead])
                    pool, isl, scores, born = pool[alive], isl[alive], scores[alive], born[alive]
            np.maximum.at(best, ki, kscores)
        else:
            pool, isl, scores, born = parents, pi, ps, pb
        history.append(float(best.max()))
        times.append(time.perf_counter())
    if snapshot is not None:
        snapshot.put(pool, scores)  # a run shorter than the snapshot's generation

    if aging:
        # each island's best so far joins its final pool (age may have removed it)
        held = set(cost.keys(pool, isl))
        ia = np.arange(n_isl)
        ia = np.array([i for i, k in zip(ia, cost.keys(best_row[ia], ia)) if k not in held],
                      dtype=np.int64)
        pool = np.concatenate([pool, best_row[ia]])
        isl = np.concatenate([isl, ia])
        scores = np.concatenate([scores, best[ia]])
    return _Run(pool=pool, island=isl, scores=scores, best=best, history=history,
                times=times, evaluations=evaluations, seeded=seeded)


def _finish(problem: _Problem, config: EvolutionConfig, run: _Run, t0: float) -> SearchResult:
    """Relinking between the islands' bests (the merged island's too), the final local
    search (the same as a lone island's, so every search gets its quality) and the result,
    with the islands' report (the independent islands only: the merged one starts from their
    best archs, so it would only narrow their spread)."""
    pool, scores = run.pool, run.scores
    n_relink = 0
    if config.relink and config.local_search:
        pool, scores, n_relink = relink_islands(problem, pool, scores, run.island)
    pool, scores, n, report = polish(problem, pool, scores, config.local_search)
    report["local_search_evaluations"] += n_relink
    report["relink_evaluations"] = n_relink
    res = _result(problem, pool, scores, list(run.history), t0, run.evaluations + n + n_relink,
                  "evolution", config)
    res.history[-1] = max(res.history[-1], res.predicted_accuracy)
    res.history_seconds = [t - t0 for t in run.times]
    res.extra.update(report)
    res.extra.update(_island_report(run.best.tolist()))
    if run.merged_best is not None:
        res.extra["merged_island_best"] = run.merged_best
    res.extra.update(run.seeded)
    res.wall_seconds = time.perf_counter() - t0
    return res
