"""Local search around a winner: single-gene and gene-pair moves, and the local-optimality report.

Evolution ends on an arch no random variation improved for a while, but not necessarily on one
that no *single* change improves: with ~100 single-gene neighbours and a few thousand pairs, the
whole neighbourhood is scored in a couple of predictor passes, so checking it costs far less
than the generations it would take to stumble on the same move. Pair moves matter at a binding
budget, where growing one block only fits if another shrinks.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .problem import _Problem


def single_moves(problem: _Problem, row: np.ndarray, *, active_only: bool = True
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every arch that differs from gene row ``row`` in exactly one gene: ``(genes, cols,
    values)``. With ``active_only``, genes of skipped blocks are left alone (changing them
    gives the same network)."""
    c = problem.cost
    cols = np.repeat(np.arange(c.width), c.ranges)
    vals = np.concatenate([np.arange(r) for r in c.ranges])
    keep = vals != row[cols]
    if active_only:
        act = c.active(row[None, :])[0]
        block_gene = cols < 2 * c.nb
        keep &= ~block_gene | act[cols % c.nb]
    cols, vals = cols[keep], vals[keep]
    out = np.repeat(row[None, :], len(cols), axis=0)
    out[np.arange(len(cols)), cols] = vals
    return out, cols, vals.astype(row.dtype)


def pair_moves(problem: _Problem, row: np.ndarray) -> np.ndarray:
    """Every arch that differs from ``row`` in exactly two genes (skipped blocks' genes
    included, so that a deeper stage can take a new choice in the block it brings back)."""
    singles, cols, vals = single_moves(problem, row, active_only=False)
    i, j = np.triu_indices(len(cols), 1)
    ok = cols[i] != cols[j]
    i, j = i[ok], j[ok]
    out = singles[i]
    out[np.arange(len(i)), cols[j]] = vals[j]
    return out


def _best_move(problem: _Problem, cand: np.ndarray, own_key: int
               ) -> Tuple[np.ndarray | None, float, int]:
    """The best-scoring feasible distinct network among ``cand`` (or None), and how many
    were scored."""
    cand = cand[problem.feasible(cand)]
    if not len(cand):
        return None, -np.inf, 0
    keys = problem.cost.keys(cand)
    first = {}
    for i, k in enumerate(keys):
        if k != own_key and k not in first:
            first[k] = i
    cand = cand[list(first.values())]
    if not len(cand):
        return None, -np.inf, 0
    s = problem.score(cand)
    i = int(np.argmax(s))
    return cand[i], float(s[i]), len(cand)


def best_single_move(problem: _Problem, row: np.ndarray) -> Tuple[np.ndarray | None, float, int]:
    """The best feasible single-gene neighbour of ``row``: ``(genes, score, evaluations)``."""
    return _best_move(problem, single_moves(problem, row)[0], problem.cost.keys(row[None])[0])


def hill_climb(problem: _Problem, row: np.ndarray, score: float, *, pairs: bool = True,
               max_steps: int = 100) -> Tuple[np.ndarray, float, int]:
    """Steepest ascent from ``row`` within the budget: take the best improving single-gene
    move; when there is none, the best improving pair move; stop when neither improves (or
    after ``max_steps`` moves). Returns ``(genes, score, evaluations)``."""
    evaluations = 0
    for _ in range(max_steps):
        key = problem.cost.keys(row[None])[0]
        best, s, n = _best_move(problem, single_moves(problem, row)[0], key)
        evaluations += n
        if best is None or s <= score:
            if not pairs:
                break
            best, s, n = _best_move(problem, pair_moves(problem, row), key)
            evaluations += n
            if best is None or s <= score:
                break
        row, score = best, s
    return row, score, evaluations


def polish(problem: _Problem, pool: np.ndarray, scores: np.ndarray, local_search: bool
           ) -> Tuple[np.ndarray, np.ndarray, int, dict]:
    """Hill-climb from the best of ``pool`` (if ``local_search``), add the result to the pool,
    and report how far the winner is from a local optimum: ``local_optimum`` (no feasible
    single-gene move improves it) and ``best_single_move_gain`` (the best such move's score
    minus the winner's; <= 0 at a local optimum, None if no move fits) and
    ``local_search_evaluations`` (archs scored by both, counted in ``evaluations``). Returns ``(pool, scores, evaluations,
    report)``."""
    top = int(np.argmax(scores))
    row, score, evaluations = pool[top], float(scores[top]), 0
    canon = problem.cost.canonical
    if local_search:
        new, new_score, evaluations = hill_climb(problem, row, score)
        # the winner is reported in canonical form (skipped blocks on choice 0), whose depth
        # moves bring blocks back with other choices than the climb's row held: climb on
        # until the canonical form is a local optimum too
        for _ in range(3):
            best, s, n = best_single_move(problem, canon(new[None])[0])
            evaluations += n
            if best is None or s <= new_score:
                break
            new, new_score, n = hill_climb(problem, best, s)
            evaluations += n
        if new_score > score:
            pool = np.concatenate([pool, new[None, :]])
            scores = np.append(scores, new_score)
            row, score = new, new_score
    _, s, n = best_single_move(problem, canon(row[None])[0])
    gain = (s - score) if np.isfinite(s) else None
    report = {"local_optimum": gain is None or gain <= 0,
              "best_single_move_gain": gain,
              "local_search_evaluations": evaluations + n}
    return pool, scores, evaluations + n, report



def relink(problem: _Problem, start: np.ndarray, guide: np.ndarray
           ) -> Tuple[np.ndarray | None, float, int]:
    """Greedy path relinking from gene row ``start`` towards ``guide`` (both taken in
    canonical form) within the budget: each step scores, in one batch, every feasible row
    that copies one more differing gene from ``guide`` and moves to the best, so the path
    ends after at most ``width`` steps. Returns the best-scoring row strictly between the
    ends (it may still hold the guide's network when only skipped blocks' genes differ), its
    score and the archs scored; ``(None, -inf, n)`` if no step fits."""
    canon = problem.cost.canonical
    row, guide = canon(start[None])[0], canon(guide[None])[0]
    best, best_s, evaluations = None, -np.inf, 0
    while True:
        diff = np.nonzero(row != guide)[0]
        if len(diff) <= 1:  # the next step would be the guide itself
            break
        cand = np.repeat(row[None], len(diff), axis=0)
        cand[np.arange(len(diff)), diff] = guide[diff]
        cand = cand[problem.feasible(cand)]
        if not len(cand):
            break
        s = problem.score(cand)
        evaluations += len(cand)
        i = int(np.argmax(s))
        row = cand[i]
        if s[i] > best_s:
            best, best_s = row, float(s[i])
    return best, best_s, evaluations


def relink_islands(problem: _Problem, pool: np.ndarray, scores: np.ndarray,
                   island: np.ndarray) -> Tuple[np.ndarray, np.ndarray, int]:
    """Path relinking between the islands' bests (``island``: each pool row's island), the
    step before :func:`polish`: the islands end in different basins, and a path between two
    of them sometimes passes a point from which a climb reaches a third, better one
    (benchmarks/search_vs_reference/README.md). For every ordered pair of island bests, the
    best intermediate of :func:`relink`'s path is climbed with single-gene moves, and so is
    every island's best but the overall best (which :func:`polish` climbs with pair moves
    too). Returns ``(pool, scores, evaluations)`` with the climbed archs added; with one
    island, the pool unchanged."""
    heads = []
    for i in np.unique(island):
        rows = np.nonzero(island == i)[0]
        j = rows[int(np.argmax(scores[rows]))]
        heads.append((-float(scores[j]), int(i), j))
    heads.sort()  # best first; ties by island index, so the order is deterministic
    if len(heads) < 2:
        return pool, scores, 0
    starts = [(pool[j], -s) for s, _, j in heads[1:]]
    evaluations = 0
    for _, _, a in heads:
        for _, _, b in heads:
            if a != b:
                row, s, n = relink(problem, pool[a], pool[b])
                evaluations += n
                if row is not None:
                    starts.append((row, s))
    rows, new = [], []
    for row, s in starts:
        row, s, n = hill_climb(problem, row, s, pairs=False)
        evaluations += n
        rows.append(row)
        new.append(s)
    return np.concatenate([pool, np.stack(rows)]), np.concatenate([scores, new]), evaluations
