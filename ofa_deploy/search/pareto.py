"""Pareto fronts: several budgets evolved in lock-step."""
from __future__ import annotations

import copy
import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import List, Sequence

import numpy as np

from supernet.arch import ArchConfig
from supernet.batch import ArchBatch
from supernet.space import Space

from .evolution import _evolve, _fill_slots, _seed_genes, _seed_report, _take_seeds
from .local import polish, relink_islands
from .problem import _Problem, _single_thread_torch
from .results import SearchResult, _genes_of, _island_report, _result
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


def _search_one(problem: _Problem, config: EvolutionConfig, rng: np.random.Generator,
                seed_pool: np.ndarray | None) -> SearchResult:
    """One budget's search (``problem``'s constraints), as :func:`evolution_search` and each
    budget of :func:`pareto_search` run it: a lone truncation island in :func:`_evolve`,
    anything else through :func:`_evolve_lockstep`."""
    if config.islands == 1 and not config.aging_islands:
        return _evolve(problem, config, rng, seed_pool=seed_pool)
    return _evolve_lockstep(problem, [problem.constraints], config, rng, seed_pool=seed_pool)[0]


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


def _evolve_lockstep(problem: _Problem, cons: List[Constraints], config: EvolutionConfig,
                     rng: np.random.Generator, seed_pool: np.ndarray | None = None
                     ) -> List[SearchResult]:
    """:func:`_evolve` for several budgets and/or islands at once.

    Rows carry a *group* index ``gid = island * B + budget``: every group is one population
    (``config.population`` archs) of one budget, and ``config.islands`` groups per budget start
    from their own random samples and never exchange archs, so each is an independent restart
    (seeds converge to different basins; the best of several restarts is far more reliable than
    one longer run). Migration runs only along the budgets of the first island. Per budget the result
    is the best over its islands; ``extra["island_best"]`` lists each island's own best (before
    the final local search) and ``extra["island_spread"]`` their range. ``seed_pool`` rows
    (genes) start the first island of every budget they fit, as in :func:`_evolve`.

    ``config.aging_islands`` more islands per budget (numbered ``islands`` and up) run aging
    evolution: a pool of the newest ``aging_population`` archs, parents by tournament,
    ``offspring`` children for ``aging_generations`` generations; they are never pruned, and
    each one's best ever joins the final pool (relinking, local search). With both kinds, the
    truncation islands and the aging ones are two independent runs (:func:`_evolve_split`),
    in two threads when ``config.threads`` > 1, merged before relinking."""
    t0 = time.perf_counter()
    if config.islands and config.aging_islands:
        run = _evolve_split(problem, cons, config, rng, seed_pool)
    else:
        run = _evolve_groups(problem, cons, config, rng, seed_pool)
    return _finish(problem, cons, config, run, t0)


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
    """What an evolution of groups leaves for the finish: the final pool (genes, group of
    each row, scores), each group's best score, its per-generation history (one ``(G,)`` array
    per generation) with the seconds elapsed at each, the archs scored per group, the seed
    report per budget, and how many islands per budget (``G = islands * budgets``)."""
    pool: np.ndarray
    gid: np.ndarray
    scores: np.ndarray
    best: np.ndarray
    history: List[np.ndarray]
    elapsed: List[float]
    evaluations: np.ndarray
    seeded: List[dict]
    islands: int


def _evolve_split(problem: _Problem, cons: List[Constraints], config: EvolutionConfig,
                  rng: np.random.Generator, seed_pool: np.ndarray | None) -> _Run:
    """The truncation islands (from ``rng``, so exactly the run they make without aging
    islands) and the aging islands (from a Generator spawned off ``rng``) as two independent
    runs, merged: the aging islands follow the truncation ones. With ``config.threads`` > 1
    they run in two threads: numpy's BLAS, most of a search, runs without the GIL, so on two
    free cores the search takes about as long as its longer part. Each part has its own
    problem (shallow copy: its budget and its spare draws are its own) and its own
    Generator, so the result is the same for any ``threads``."""
    aging_rng = rng.spawn(1)[0]  # spawning draws nothing from rng
    other = copy.copy(problem)
    other._spare = None
    jobs = [(problem, dataclasses.replace(config, aging_islands=0), rng, seed_pool),
            (other, dataclasses.replace(config, islands=0), aging_rng, None)]
    if config.threads > 1:
        # if either part fails, or Ctrl-C reaches this (main) thread, the other part stops
        # at its next generation instead of running on while the executor waits for it
        stop = threading.Event()
        with ThreadPoolExecutor(max_workers=2) as ex:
            futures = [ex.submit(_evolve_groups, p, cons, c, r, s, stop) for p, c, r, s in jobs]
            try:
                trunc, aging = _results(futures)
            except BaseException:
                stop.set()
                raise
    else:
        trunc, aging = [_evolve_groups(p, cons, c, r, s) for p, c, r, s in jobs]
    n = max(len(trunc.history), len(aging.history))

    def pad(seq: list) -> list:  # the shorter run's last entry holds once it has stopped
        return list(seq) + [seq[-1]] * (n - len(seq))

    return _Run(pool=np.concatenate([trunc.pool, aging.pool]),
                gid=np.concatenate([trunc.gid, aging.gid + trunc.islands * len(cons)]),
                scores=np.concatenate([trunc.scores, aging.scores]),
                best=np.concatenate([trunc.best, aging.best]),
                history=[np.concatenate([a, b]) for a, b in zip(pad(trunc.history),
                                                                pad(aging.history))],
                elapsed=[max(a, b) for a, b in zip(pad(trunc.elapsed), pad(aging.elapsed))],
                evaluations=np.concatenate([trunc.evaluations, aging.evaluations]),
                seeded=trunc.seeded, islands=trunc.islands + aging.islands)


def _evolve_groups(problem: _Problem, cons: List[Constraints], config: EvolutionConfig,
                   rng: np.random.Generator, seed_pool: np.ndarray | None = None,
                   stop: threading.Event | None = None) -> _Run:
    """The evolution of :func:`_evolve_lockstep` for one kind of island: ``config.islands``
    truncation islands (drawing exactly what they drew before aging islands existed) or
    ``config.aging_islands`` aging ones, never both (:func:`_evolve_split` runs both kinds as
    two such runs). ``stop``, once set, ends it before its next generation with
    :class:`_Stopped` (the other thread of a split search failed or was interrupted)."""
    t0 = time.perf_counter()
    cost = problem.cost
    B, K, P, N = len(cons), config.islands, config.num_parents, config.population
    A, M, O = config.aging_islands, config.aging_population, config.offspring
    aging = A > 0  # else truncation islands (one kind per run: see the docstring)
    KA = A if aging else K  # islands per budget
    G = B * KA
    size = M if aging else N  # initial sample per group
    q_all = sorted({q for c in cons for q in np.nonzero(np.isfinite(c.limits()))[0].tolist()})
    budget_of = np.tile(np.arange(B), KA)  # group -> budget index
    lims = np.stack([c.limits()[q_all] for c in cons])[budget_of]  # (G, Q)

    def feasible(genes: np.ndarray, gid: np.ndarray) -> np.ndarray:
        return (cost.costs(genes, q_all) <= lims[gid]).all(axis=1)

    seen: set = set()  # keys of (arch, group) pairs already scored
    add = seen.add

    def new_rows(genes: np.ndarray, gid: np.ndarray) -> List[int]:
        return [i for i, k in enumerate(cost.keys(genes, gid)) if k not in seen and not add(k)]

    parts, seeded = [], []
    for g in range(G):
        problem.set_constraints(cons[budget_of[g]])
        taken: set = set()
        seeds, over = _take_seeds(problem, seed_pool if g < B else None, P, taken)
        if g < B:
            seeded.append(_seed_report(seed_pool, len(taken), over))
        if seeds is None:
            parts.append(problem.sample_feasible(size, rng))
        else:
            parts.append(np.concatenate([seeds, problem.sample_feasible(
                size - len(seeds), rng, exclude=taken)]) if size > len(seeds) else seeds)
    gid = np.concatenate([np.full(len(x), g) for g, x in enumerate(parts)])
    pool = np.concatenate(parts)
    seen.update(cost.keys(pool, gid))
    scores = problem.score(pool)
    evaluations = np.bincount(gid, minlength=G)
    best = np.full(G, -np.inf)
    np.maximum.at(best, gid, scores)
    # aging groups lose their best to age: each group's best row so far is kept aside
    born = np.zeros(len(pool), dtype=np.int64)
    best_row = np.zeros((G, cost.width), dtype=pool.dtype)
    for g in range(G if aging else 0):
        rows = np.nonzero(gid == g)[0]
        best_row[g] = pool[rows[np.argmax(scores[rows])]]
    history = [best.copy()]
    elapsed = [time.perf_counter() - t0]
    # migration goes from a budget to the next looser one, in the first island only: the
    # other islands stay independent restarts (a migrant that takes over a looser budget's
    # population would pull every island into one basin)
    migrates = np.arange(G - 1) < B - 1

    # child slots per group per generation, the first ``mutation_ratio`` of them mutants
    per, n_mut = ((O, int(round(config.mutation_ratio * O))) if aging
                  else (N, config.num_mutations))
    slot_gid = np.repeat(np.arange(G), per)
    is_mut = np.tile(np.arange(per) < n_mut, G)
    p = config.mutate_prob
    pr = p if config.resolution_mutate_prob is None else config.resolution_mutate_prob
    tried = passed = 1.0
    live = np.ones(G, dtype=bool)
    # the aging islands are never pruned (they start slower, by design): n_live is 0 there
    n_live = 0 if aging else K
    for _gen in range(config.aging_generations if aging else config.generations):
        if stop is not None and stop.is_set():
            raise _Stopped
        if config.prune_at and _gen and _gen % config.prune_at == 0 and n_live > config.keep_islands:
            # successive halving: per budget only the better half of the live islands (by
            # their best arch so far) go on; stable ranking keeps ties deterministic
            n_live = max(config.keep_islands, (n_live + 1) // 2)
            rank = np.argsort(-np.where(live.reshape(K, B), best.reshape(K, B), -np.inf),
                              axis=0, kind="stable")
            live = np.zeros((K, B), dtype=bool)
            np.put_along_axis(live, rank[:n_live], True, axis=0)
            live = live.reshape(G)
            keep_rows = live[gid]
            pool, gid, scores, born = (pool[keep_rows], gid[keep_rows], scores[keep_rows],
                                       born[keep_rows])
            groups = np.nonzero(live)[0]
            slot_gid = np.repeat(groups, N)
            is_mut = np.tile(np.arange(N) < config.num_mutations, len(groups))
            migrates = migrates & live[:-1] & live[1:]
        # parents: the best P of each group (rows sorted by group, then score)
        order = np.lexsort((-scores, gid))
        sg = gid[order]
        starts = np.searchsorted(sg, np.arange(G))
        # migration: a budget's best joins the next looser budget's pool if better there
        tops = order[np.minimum(starts, len(order) - 1)]  # (a pruned group has no rows)
        up = np.nonzero(migrates & (scores[tops[:-1]] > scores[tops[1:]]))[0]
        if len(up):
            cand, cg = pool[tops[up]], up + 1
            ok = np.nonzero(feasible(cand, cg))[0]
            fresh = [ok[i] for i in new_rows(cand[ok], cg[ok])] if len(ok) else []
            if fresh:
                pool = np.concatenate([pool, cand[fresh]])
                gid = np.concatenate([gid, cg[fresh]])
                scores = np.concatenate([scores, scores[tops[up]][fresh]])
                born = np.concatenate([born, np.full(len(fresh), _gen)])
                order = np.lexsort((-scores, gid))
                sg = gid[order]
                starts = np.searchsorted(sg, np.arange(G))
        # truncation groups keep their best P rows as parents; aging groups every row
        keep = order if aging else order[np.arange(len(order)) - starts[sg] < P]
        parents, pg, ps, pb = pool[keep], gid[keep], scores[keep], born[keep]
        counts = np.bincount(pg, minlength=G)
        offs = np.concatenate([[0], np.cumsum(counts)[:-1]])
        cnt, off = counts[slot_gid], offs[slot_gid]
        if not aging:
            a = parents[off + (rng.random(len(slot_gid)) * cnt).astype(np.int64)]
            b = parents[off + (rng.random(len(slot_gid)) * cnt).astype(np.int64)]
        else:
            # each parent wins a tournament of ``tournament`` random pool members: a group's
            # rows are sorted best first, so the winner is the smallest position drawn
            a, b = (parents[off + (rng.random((len(slot_gid), config.tournament))
                                   * cnt[:, None]).astype(np.int64).min(axis=1)]
                    for _ in range(2))

        kids, done, t, f = _fill_slots(problem, a, b, is_mut, rng, p, pr, passed / tried,
                                       config.retry_rounds,
                                       lambda g, rows: feasible(g, slot_gid[rows]))
        tried += t
        passed += f
        kids, kg = kids[done], slot_gid[done]
        fresh = new_rows(kids, kg)
        if fresh:
            kids, kg = kids[fresh], kg[fresh]
            kscores = problem.score(kids)
            evaluations += np.bincount(kg, minlength=G)
            pool = np.concatenate([parents, kids])
            gid = np.concatenate([pg, kg])
            scores = np.concatenate([ps, kscores])
            born = np.concatenate([pb, np.full(len(kids), _gen + 1)])
            if aging:
                gain = np.full(G, -np.inf)
                np.maximum.at(gain, kg, kscores)
                for g in np.nonzero(gain > best)[0]:
                    rows = np.nonzero(kg == g)[0]
                    best_row[g] = kids[rows[np.argmax(kscores[rows])]]
                # the oldest die, so each group keeps its newest M rows
                by_age = np.lexsort((-born, gid))
                ga = gid[by_age]
                first = np.searchsorted(ga, np.arange(G))
                dead = np.arange(len(ga)) - first[ga] >= M
                if dead.any():
                    alive = np.sort(by_age[~dead])
                    pool, gid, scores, born = pool[alive], gid[alive], scores[alive], born[alive]
            np.maximum.at(best, kg, kscores)
        else:
            pool, gid, scores, born = parents, pg, ps, pb
        history.append(best.copy())
        elapsed.append(time.perf_counter() - t0)

    if aging:
        # each group's best so far joins its final pool (age may have removed it)
        ga = np.arange(G)
        held = set(cost.keys(pool, gid))
        ga = np.array([g for g, k in zip(ga, cost.keys(best_row[ga], ga)) if k not in held],
                      dtype=np.int64)
        pool = np.concatenate([pool, best_row[ga]])
        gid = np.concatenate([gid, ga])
        scores = np.concatenate([scores, best[ga]])
    return _Run(pool=pool, gid=gid, scores=scores, best=best, history=history,
                elapsed=elapsed, evaluations=evaluations, seeded=seeded, islands=KA)


def _finish(problem: _Problem, cons: List[Constraints], config: EvolutionConfig, run: _Run,
            t0: float) -> List[SearchResult]:
    """Per budget: relinking between its islands' bests, the final local search and the
    result (with its islands' report)."""
    B, KA = len(cons), run.islands
    pool, gid, scores, best = run.pool, run.gid, run.scores, run.best
    history, elapsed, evaluations, seeded = run.history, run.elapsed, run.evaluations, run.seeded
    cost = problem.cost
    bud = gid % B
    results: List[SearchResult] = []
    for g, c in enumerate(cons):
        problem.set_constraints(c)
        sel = bud == g
        pool_g, scores_g = pool[sel], scores[sel]
        isl = gid[sel] // B
        islands = [float(best[i * B + g]) for i in range(KA)]
        # a last pass of migration so the front is monotone even where it was one step behind
        for prev in results[-1:]:
            row = _genes_of(cost, prev.population[:1])
            if prev.predicted_accuracy > scores_g.max() and problem.feasible(row)[0]:
                pool_g = np.concatenate([pool_g, row])
                scores_g = np.append(scores_g, prev.predicted_accuracy)
                isl = np.append(isl, KA)  # the migrant counts as an island of its own
        n_relink = 0
        if config.relink and config.local_search:
            pool_g, scores_g, n_relink = relink_islands(problem, pool_g, scores_g, isl)
        # the same final local search as a single budget's, so every budget gets its quality
        pool_g, scores_g, n, report = polish(problem, pool_g, scores_g, config.local_search)
        report["local_search_evaluations"] += n_relink
        report["relink_evaluations"] = n_relink
        n += n_relink
        hist = [float(max(h[i * B + g] for i in range(KA))) for h in history]
        res = _result(problem, pool_g, scores_g, hist, t0,
                      int(evaluations[g::B].sum()) + n, "evolution", config)
        res.history[-1] = max(res.history[-1], res.predicted_accuracy)
        res.history_seconds = list(elapsed)
        res.extra.update(report)
        res.extra.update(_island_report(islands))
        res.extra.update(seeded[g])
        results.append(res)
    total = time.perf_counter() - t0
    for res in results:
        res.wall_seconds = total / B
        if B > 1:
            res.extra["front_seconds"] = total
    return results

