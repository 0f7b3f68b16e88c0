"""Iterated local search: kick the best archs a few genes away, climb back, keep improvements.

After a short evolution the best archs sit near good basins, but not always in the best one;
random variation takes many generations to jump between neighbouring basins. Here several
walkers (the best archs of every island) are each perturbed in ``k`` genes (within budget),
then climbed by steepest ascent over all single-gene moves, every walker's whole
neighbourhood scored in one predictor pass per step; a walker moves to the climbed arch only
if it is better. Every candidate scored meets the budget.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .local import single_moves
from .problem import _Problem


def _start_walkers(problem: _Problem, pool: np.ndarray, scores: np.ndarray,
                   group: np.ndarray | None, walkers: int) -> Tuple[np.ndarray, np.ndarray]:
    """The best ``walkers`` distinct archs of ``pool``, taken round-robin over ``group``
    (islands) so that every basin the islands found gets walkers."""
    group = np.zeros(len(pool), dtype=np.int64) if group is None else group
    order = np.lexsort((-scores, group))
    ranked = [order[group[order] == g] for g in np.unique(group)]
    seen, take = set(), []
    keys = problem.cost.keys(pool)
    depth = 0
    while len(take) < walkers and any(depth < len(r) for r in ranked):
        for r in ranked:
            if depth < len(r) and len(take) < walkers:
                i = int(r[depth])
                if keys[i] not in seen:
                    seen.add(keys[i])
                    take.append(i)
        depth += 1
    take = np.asarray(take, dtype=np.int64)
    return pool[take].copy(), scores[take].copy()


def climb_many(problem: _Problem, rows: np.ndarray, scores: np.ndarray, max_steps: int = 50
               ) -> Tuple[np.ndarray, np.ndarray, int]:
    """Steepest single-gene ascent from every row at once, within budget: per step all rows'
    feasible neighbours are scored in one pass and each row takes its best if it improves.
    Returns ``(rows, scores, evaluations)``."""
    rows, scores = rows.copy(), scores.copy()
    live = np.arange(len(rows))
    evaluations = 0
    for _ in range(max_steps):
        if not len(live):
            break
        cand, owner = [], []
        for i in live:
            m = single_moves(problem, rows[i])[0]
            cand.append(m)
            owner.append(np.full(len(m), i))
        cand, owner = np.concatenate(cand), np.concatenate(owner)
        ok = problem.feasible(cand)
        cand, owner = cand[ok], owner[ok]
        if not len(cand):
            break
        s = problem.score(cand)
        evaluations += len(cand)
        # best candidate per owner: sort by (owner, -score), first of each owner
        order = np.lexsort((-s, owner))
        first = order[np.r_[True, owner[order][1:] != owner[order][:-1]]]
        better = s[first] > scores[owner[first]]
        win = first[better]
        rows[owner[win]] = cand[win]
        scores[owner[win]] = s[win]
        live = owner[win]
    return rows, scores, evaluations


def perturb(problem: _Problem, rows: np.ndarray, k: np.ndarray, rng: np.random.Generator,
            tries: int = 8) -> Tuple[np.ndarray, np.ndarray]:
    """Each row with ``k[i]`` random genes set to random other values, within budget:
    ``tries`` candidates per row, the first feasible kept. Returns ``(rows, changed mask)``."""
    c = problem.cost
    n = len(rows)
    cand = np.repeat(rows, tries, axis=0)
    kk = np.repeat(k, tries)
    # k distinct columns per candidate: the k smallest of a random key per column
    cols = np.argsort(rng.random((len(cand), c.width)), axis=1)
    pick = np.arange(c.width)[None, :] < kk[:, None]
    r, j = np.nonzero(pick)
    col = cols[r, j]
    # a value other than the current one: shift by 1..range-1
    span = c.ranges[col]
    shift = 1 + (rng.random(len(col)) * np.maximum(span - 1, 1)).astype(np.int64)
    cand[r, col] = ((cand[r, col].astype(np.int64) + shift) % span).astype(cand.dtype)
    ok = problem.feasible(cand).reshape(n, tries)
    first = ok.argmax(axis=1)
    hit = ok[np.arange(n), first]
    out = rows.copy()
    out[hit] = cand[np.arange(n)[hit] * tries + first[hit]]
    return out, hit


def iterated_local_search(problem: _Problem, pool: np.ndarray, scores: np.ndarray,
                          rng: np.random.Generator, *, walkers: int, rounds: int,
                          group: np.ndarray | None = None, kicks: Tuple[int, int] = (2, 4)
                          ) -> Tuple[np.ndarray, np.ndarray, int]:
    """``rounds`` of kick-and-climb for ``walkers`` walkers started at the best archs of
    ``pool`` (round-robin over ``group``); each kick changes ``kicks[0]..kicks[1]`` genes.
    Returns the pool with every walker's final arch added, its scores, and the evaluations."""
    if walkers < 1 or rounds < 0 or not len(pool):
        return pool, scores, 0
    cur, cur_s = _start_walkers(problem, pool, scores, group, walkers)
    cur, cur_s, evaluations = climb_many(problem, cur, cur_s)
    for _ in range(rounds):
        k = rng.integers(kicks[0], kicks[1] + 1, size=len(cur))
        kicked, hit = perturb(problem, cur, k, rng)
        if not hit.any():
            break
        ks = problem.score(kicked[hit])
        evaluations += int(hit.sum())
        climbed, cs, n = climb_many(problem, kicked[hit], ks)
        evaluations += n
        idx = np.nonzero(hit)[0]
        better = cs > cur_s[idx]
        cur[idx[better]] = climbed[better]
        cur_s[idx[better]] = cs[better]
    return np.concatenate([pool, cur]), np.concatenate([scores, cur_s]), evaluations
