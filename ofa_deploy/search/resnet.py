"""Evolutionary search over the OFA ResNet50 family under latency / MACs / params budgets.

The MobileNet search (:mod:`.costs`, :mod:`.problem`) prices a population per block from
per-op tables indexed by (kernel, expand); a ResNet block's cost also depends on its input
width (the previous stage's width multiplier), and its genes are width, expand and depth, so
this family has its own gene layout and cost tables (:class:`ResNetCostModel`) and a compact
evolution (:func:`resnet_evolution_search`) with the same rules, settings
(:class:`~.settings.EvolutionConfig`), result type (:class:`~.results.SearchResult`) and
guarantees as :func:`~.evolution.evolution_search`: every candidate meets the budget, budgets
below the smallest subnet are refused before searching, and a seed fixes the result.

Gene matrix, one ``(N, 30)`` int8 row per arch (all indices, 0 = smallest choice, so the
all-zero row is the smallest subnet): input-stem bit (0 skip / 1 keep), depth index per stage
(4), width index per entry (6: two stem convs, then the stages), expand index per block (18,
ignored where the block does not run), resolution index. Every quantity (MACs, params, and
latency from a table of the family's ops) is priced by a
:class:`~supernet.resnet_ops.ResNetOpGrid` built from the ops the family enumerates, so the
search, the table and the analytic cost agree op for op.
"""
from __future__ import annotations

import time
from typing import List, Sequence, Tuple

import numpy as np

from supernet.arch import ArchError
from supernet.resnet_ops import ResNetOpGrid
from supernet.resnet_space import ResNetArch, ResNetSpace, get_resnet_space

from .evolution import SeedArchError
from .problem import _single_thread_torch, _unseen_rows
from .results import SearchResult, _island_report
from .settings import Constraints, EvolutionConfig, InfeasibleBudgetError, SearchError, _check_int

__all__ = ["ResNetCostModel", "resnet_evolution_search", "resnet_random_search"]


class ResNetCostModel:
    """MACs and params (and latency, given a table) of ResNet archs held as a gene matrix (see
    the module docstring), from small exact grids (:class:`~supernet.resnet_ops.ResNetOpGrid`):
    stem ``(R, W, W, 2)``, first block of a stage ``(R, S, W, W, E)`` (input width x own width x
    expand), other blocks ``(R, S, W, E)``, head ``(R, W)``. MACs and params equal
    :func:`supernet.resnet.resnet_arch_cost` for every arch, latency the table's
    :meth:`~luts.table.LatencyTable.predict` (tested)."""

    def __init__(self, space: "ResNetSpace | str", resolutions: Sequence[int],
                 latency_table=None):
        self.space = sp = get_resnet_space(space)
        self.resolutions = tuple(int(r) for r in resolutions)
        ns, nb, nw = sp.num_stages, sp.num_blocks, sp.num_widths
        self.ns, self.nb = ns, nb
        self.n_w, self.n_e = len(sp.width_mult_choices), len(sp.expand_choices)
        self.n_d, self.n_res = len(sp.depth_choices), len(self.resolutions)
        self.stem_gene = 0
        self.depth_genes = slice(1, 1 + ns)
        self.width_genes = slice(1 + ns, 1 + ns + nw)
        self.expand_genes = slice(1 + ns + nw, 1 + ns + nw + nb)
        self.res_gene = 1 + ns + nw + nb
        self.width = self.res_gene + 1
        self.dtype = np.int8
        self.ranges = np.array([2] + [self.n_d] * ns + [self.n_w] * nw + [self.n_e] * nb
                               + [self.n_res])
        self.depth_values = np.asarray(sp.depth_choices)
        self.block_stage = np.repeat(np.arange(ns), sp.stage_block_counts)
        self.block_pos = np.concatenate([np.arange(n) for n in sp.stage_block_counts])
        self.base = np.asarray(sp.base_depths)
        self.macs_grid = ResNetOpGrid(sp, lambda op, r: op.macs, self.resolutions)
        self.params_grid = ResNetOpGrid(sp, lambda op, r: op.params, self.resolutions)
        self.table = latency_table
        self.lat_grid = None
        if latency_table is not None:
            g = latency_table.grid()
            if not isinstance(g, ResNetOpGrid) or g.space.name != sp.name:
                raise SearchError(f"the latency table is not a table of space {sp.name}")
            self.lat_grid = g
            # searched resolution index -> the table grid's resolution index
            self._lat_ri = g.resolution_index(list(self.resolutions))
        mult = np.random.default_rng(0x0FA).integers(1, 2**63, size=self.width,
                                                      dtype=np.uint64) | np.uint64(1)
        self._hash_mult = mult

    # -- gene matrices -----------------------------------------------------------------
    def active(self, genes: np.ndarray) -> np.ndarray:
        """``(N, blocks)`` mask of the blocks each arch runs."""
        d = self.depth_values[genes[:, self.depth_genes]]  # (N, S) extra blocks
        return self.block_pos < (self.base + d)[:, self.block_stage]

    def _priced(self, grid: ResNetOpGrid, genes: np.ndarray, ri: np.ndarray) -> np.ndarray:
        g = genes.astype(np.intp)
        return grid.evaluate_indices(ri, g[:, self.stem_gene], g[:, self.width_genes],
                                     g[:, self.expand_genes], self.active(genes))

    @property
    def has_latency(self) -> bool:
        """Whether latency can be priced (a latency table was given)."""
        return self.lat_grid is not None

    def costs(self, genes: np.ndarray) -> np.ndarray:
        """``(N, 2)`` MACs and params of every row."""
        ri = genes[:, self.res_gene].astype(np.intp)
        return np.stack([self._priced(self.macs_grid, genes, ri),
                         self._priced(self.params_grid, genes, ri)], axis=1)

    def latency(self, genes: np.ndarray) -> np.ndarray:
        """``(N,)`` predicted latency (ms) of every row: the table's calibrated prediction
        (NaN without a table)."""
        if self.lat_grid is None:
            return np.full(len(genes), np.nan)
        ri = self._lat_ri[genes[:, self.res_gene].astype(np.intp)]
        return self._priced(self.lat_grid, genes, ri)

    def fastest(self) -> Tuple[float, np.ndarray]:
        """The exact smallest predicted latency over every subnet at the searched resolutions
        and a ``(1, width)`` gene row that has it (needs a table)."""
        best = min((self.lat_grid.extreme(int(i)) for i in self._lat_ri), key=lambda t: t[0])
        return best[0], self.genes_of([best[1]])

    def canonical(self, genes: np.ndarray) -> np.ndarray:
        """Copy of ``genes`` with skipped blocks' expand set to index 0."""
        out = genes.copy()
        out[:, self.expand_genes] *= self.active(genes)
        return out

    def keys(self, genes: np.ndarray) -> List[int]:
        """One 64-bit hash per row, equal for equal networks (skipped blocks ignored)."""
        h = self.canonical(genes).astype(np.uint64) @ self._hash_mult
        h ^= h >> np.uint64(31)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(29)
        return h.tolist()

    def archs(self, genes: np.ndarray) -> List[ResNetArch]:
        """The rows as canonical :class:`ResNetArch` records."""
        sp = self.space
        dmax = max(sp.depth_choices)
        dmin = min(sp.depth_choices)
        c = self.canonical(genes)
        out = []
        for row in c:
            d = [dmax if row[self.stem_gene] else dmin] + \
                [int(sp.depth_choices[i]) for i in row[self.depth_genes]]
            out.append(ResNetArch(d, [sp.expand_choices[i] for i in row[self.expand_genes]],
                                  row[self.width_genes].tolist(),
                                  self.resolutions[row[self.res_gene]]))
        return out

    def genes_of(self, archs: Sequence[ResNetArch]) -> np.ndarray:
        """Gene rows of archs (validated against the space; resolutions must be searched)."""
        sp = self.space
        rows = []
        for a in archs:
            a = a.validate(sp)
            if a.r not in self.resolutions:
                raise SearchError(f"resolution {a.r} is not among the searched "
                                  f"{list(self.resolutions)}")
            act = a.active_mask(sp)
            rows.append([int(a.d[0] > min(sp.depth_choices))]
                        + [sp.depth_choices.index(v) for v in a.d[1:]] + list(a.w)
                        + [int(np.argmin([abs(c - v) for c in sp.expand_choices])) if on else 0
                           for v, on in zip(a.e, act)]
                        + [self.resolutions.index(a.r)])
        return np.asarray(rows, dtype=self.dtype).reshape(-1, self.width)


class _ResNetProblem:
    """Space + predictor + cost model (+ latency table) + budget for the ResNet family."""

    def __init__(self, space, predictor, constraints: Constraints, resolutions,
                 latency_table=None):
        self.space = sp = get_resnet_space(space)
        if not isinstance(constraints, Constraints):
            raise SearchError("constraints must be a Constraints object")
        if constraints.max_latency_ms is not None and latency_table is None:
            raise SearchError(f"a latency budget for space {sp.name} needs a latency table of "
                              f"its ops (`ofa-deploy profile --space {sp.name}`)")
        if latency_table is not None and getattr(latency_table.space, "name", None) != sp.name:
            raise SearchError(f"the latency table is for space {latency_table.space.name}, not "
                              f"{sp.name}")
        table_res = None if latency_table is None else tuple(latency_table.resolutions)
        enc = getattr(predictor, "encoder", None)
        if not callable(getattr(predictor, "predict_features", None)) or \
                getattr(getattr(enc, "space", None), "name", None) != sp.name:
            raise SearchError(f"the accuracy predictor does not score {sp.name} subnets (give "
                              f"the OFA ResNet50 reference predictor)")
        if resolutions is None:
            res = [r for r in sp.resolutions if r in enc.image_sizes
                   and (table_res is None or r in table_res)]
        else:
            res = sorted({int(r) for r in resolutions})
            bad = [r for r in res if r not in sp.resolutions]
            if bad:
                raise SearchError(f"resolution(s) {bad} are not resolutions of space {sp.name} "
                                  f"({sp.resolutions[0]}..{sp.resolutions[-1]})")
            bad = [r for r in res if r not in enc.image_sizes]
            if bad:
                raise SearchError(f"resolution(s) {bad} cannot be scored by the accuracy predictor")
            bad = [r for r in res if table_res is not None and r not in table_res]
            if bad:
                raise SearchError(f"resolution(s) {bad} are not in the latency table (resolutions "
                                  f"{list(table_res)})")
        if not res:
            raise SearchError("no resolutions to search")
        self.resolutions = tuple(res)
        self.predictor, self.encoder, self.constraints = predictor, enc, constraints
        self.cost = c = ResNetCostModel(sp, self.resolutions, latency_table)
        self.limits = np.array([constraints.limits()[1], constraints.limits()[2]])
        self.max_latency = constraints.limits()[0]
        # what sample_feasible's repair moves genes to: a subnet within every budget
        self.floor = np.zeros((1, c.width), c.dtype)
        # feature layout of the reference ResNetArchEncoder (see ofa_deploy.accuracy_resnet)
        self._res_slot = np.array([enc.image_sizes.index(r) for r in self.resolutions])
        nr = len(enc.image_sizes)
        self._w_cols = nr + 2 + np.arange(sp.num_widths) * c.n_w
        self._e_cols = nr + 2 + sp.num_widths * c.n_w + np.arange(sp.num_blocks) * c.n_e

    def check_feasible(self) -> None:
        """Refuse a budget below the smallest subnet's value (all-zero genes for MACs and
        params: every cost grows with every gene; the exact fastest subnet for latency) before
        any search, and choose the repair target :attr:`floor` (a subnet within every budget;
        none fitting every budget at once is refused too)."""
        lo = self.cost.costs(np.zeros((1, self.cost.width), self.cost.dtype))[0]
        r = self.resolutions[0]
        if lo[0] > self.limits[0]:
            raise InfeasibleBudgetError(
                f"MACs budget {self.limits[0] / 1e6:g}M is infeasible: the smallest subnet of "
                f"{self.space.name} has {lo[0] / 1e6:.2f}M MACs ({int(lo[0]):,}, at resolution "
                f"{r})")
        if lo[1] > self.limits[1]:
            raise InfeasibleBudgetError(
                f"params budget {self.limits[1] / 1e6:g}M is infeasible: the smallest subnet of "
                f"{self.space.name} has {lo[1] / 1e6:.3f}M params ({int(lo[1]):,})")
        if not np.isfinite(self.max_latency):
            return
        fast, row = self.cost.fastest()
        if fast > self.max_latency:
            raise InfeasibleBudgetError(
                f"latency budget {self.max_latency:g} ms is infeasible: the fastest subnet of "
                f"{self.space.name} is predicted at {fast:.3f} ms by the latency table "
                f"(resolution {self.cost.archs(row)[0].r})")
        for cand in (self.floor, row):
            if self.feasible(cand)[0]:
                self.floor = cand
                return
        raise InfeasibleBudgetError(
            f"the budgets ({self.constraints.describe()}) are infeasible together: neither the "
            f"smallest nor the fastest subnet of {self.space.name} meets all of them")

    def feasible(self, genes: np.ndarray) -> np.ndarray:
        """``(N,)`` mask of rows meeting every bound."""
        ok = (self.cost.costs(genes) <= self.limits).all(axis=1)
        if np.isfinite(self.max_latency):
            ok &= self.cost.latency(genes) <= self.max_latency
        return ok

    def features(self, genes: np.ndarray) -> np.ndarray:
        """The reference encoder's features, built straight from the gene matrix."""
        c, n = self.cost, len(genes)
        x = np.zeros((n, self.encoder.dim), dtype=np.float32)
        rows = np.arange(n)
        x[rows, self._res_slot[genes[:, c.res_gene]]] = 1.0
        x[rows, len(self.encoder.image_sizes) + genes[:, c.stem_gene]] = 1.0
        x[rows[:, None], self._w_cols + genes[:, c.width_genes]] = 1.0
        act = c.active(genes)
        cols = self._e_cols + genes[:, c.expand_genes]
        x[rows[:, None], cols] = act.astype(np.float32)  # distinct columns per block
        return x

    def score(self, genes: np.ndarray) -> np.ndarray:
        """Predicted accuracy of every row (one predictor pass)."""
        if not len(genes):
            return np.zeros(0)
        return np.asarray(self.predictor.predict_features(self.features(genes)),
                          dtype=np.float64).ravel()

    def uniform(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` rows drawn uniformly per gene (feasible or not)."""
        return (rng.random((n, self.cost.width)) * self.cost.ranges).astype(self.cost.dtype)

    def sample_feasible(self, n: int, rng: np.random.Generator, rounds: int = 16) -> np.ndarray:
        """Up to ``n`` distinct feasible rows: rejection sampling in bounded rounds, then
        *repair* (random genes moved to those of :attr:`floor`, the smallest subnet or the
        fastest, more each step) of rejected samples at tight budgets. Always terminates; the
        floor fits (checked)."""
        seen, got, count = set(), [], 0
        for attempt in range(rounds + 4):
            if count >= n:
                break
            g = self.uniform(min(max(8 * n, 4096), 65536) if attempt < rounds
                             else 2 * (n - count) + 8, rng)
            ok = self.feasible(g)
            if attempt >= rounds:
                for step in range(1, 13):
                    bad = np.nonzero(~ok)[0]
                    if not len(bad):
                        break
                    m = rng.random((len(bad), g.shape[1])) < step / 12
                    g[bad] = np.where(m, self.floor, g[bad])
                    ok[bad] = self.feasible(g[bad])
            g = g[ok]
            take = _unseen_rows(self.cost.keys(g), seen, n - count)
            if take:
                got.append(g[take])
                count += len(take)
        return np.concatenate(got)

    def vary(self, first: np.ndarray, second: np.ndarray, mutate_rows: np.ndarray,
             rng: np.random.Generator, mutate_prob: float, res_mutate_prob: float
             ) -> np.ndarray:
        """Mutants of ``first`` (each gene resampled with ``mutate_prob``, the resolution with
        ``res_mutate_prob``) where ``mutate_rows``; uniform crossovers of ``first`` and
        ``second`` elsewhere (the same names and draws as the MobileNet problem's ``vary``)."""
        u = rng.random(first.shape)
        probs = np.full(first.shape[1], mutate_prob)
        probs[self.cost.res_gene] = res_mutate_prob
        mut = mutate_rows[:, None]
        out = np.where((u < 0.5) & ~mut, second, first)
        rows, cols = np.nonzero((rng.random(first.shape) < probs) & mut)
        out[rows, cols] = (rng.random(len(rows)) * self.cost.ranges[cols]).astype(out.dtype)
        return out


def _children(prob: _ResNetProblem, parents: np.ndarray, cfg: EvolutionConfig,
              rng: np.random.Generator) -> np.ndarray:
    """One generation's feasible children: each open slot gets 4 candidates per round, for up
    to ``retry_rounds`` rounds, and takes its first feasible one; a slot still open stays
    empty (bounded, unlike the reference's ``while True``)."""
    n, k = cfg.population, 4
    mutate_prob = cfg.mutate_prob
    res_prob = mutate_prob if cfg.resolution_mutate_prob is None else cfg.resolution_mutate_prob
    a = parents[rng.integers(len(parents), size=n)]
    b = parents[rng.integers(len(parents), size=n)]
    mutate_rows = np.arange(n) < cfg.num_mutations
    kids, done, todo = np.empty_like(a), np.zeros(n, bool), np.arange(n)
    for _ in range(cfg.retry_rounds):
        rows = np.concatenate([todo] * k)
        cand = prob.vary(a[rows], b[rows], mutate_rows[rows], rng, mutate_prob, res_prob)
        ok = prob.feasible(cand).reshape(k, len(todo))
        first = ok.argmax(axis=0)
        hit = ok[first, np.arange(len(todo))]
        kids[todo[hit]] = cand[first[hit] * len(todo) + np.nonzero(hit)[0]]
        done[todo[hit]] = True
        todo = todo[~hit]
        if not len(todo):
            break
    return kids[done]


def _polish(prob: _ResNetProblem, best: np.ndarray, score: float, seen: set
            ) -> Tuple[np.ndarray, float, int, float]:
    """Steepest ascent over single-gene moves within the budget, from ``best`` until no move
    gains. Returns (row, score, archs scored, best single-move gain at the end)."""
    c, evals = prob.cost, 0
    cols = np.concatenate([np.full(int(c.ranges[j]), j) for j in range(c.width)])
    vals = np.concatenate([np.arange(int(c.ranges[j])) for j in range(c.width)])
    while True:
        cand = np.repeat(best[None, :], len(cols), axis=0)
        cand[np.arange(len(cols)), cols] = vals
        cand = cand[prob.feasible(cand)]
        keys = c.keys(cand)
        own = c.keys(best[None, :])[0]
        keep = [i for i, k in enumerate(keys) if k != own and keys.index(k) == i]
        if not keep:
            return best, score, evals, float("-inf")
        cand = cand[keep]
        s = prob.score(cand)
        evals += sum(1 for i in keep if keys[i] not in seen)
        seen.update(keys[i] for i in keep)
        i = int(np.argmax(s))
        gain = float(s[i] - score)
        if gain <= 0:
            return best, score, evals, gain
        best, score = cand[i].copy(), float(s[i])


def _result(prob, pool, scores, history, t0, evaluations, method, config) -> SearchResult:
    order = np.argsort(-scores, kind="stable")
    pool, scores = pool[order], scores[order]
    macs, params = prob.cost.costs(pool[:1])[0]
    archs = prob.cost.archs(pool)
    lat = float(prob.cost.latency(pool[:1])[0]) if prob.cost.has_latency else None
    return SearchResult(
        space=prob.space, constraints=prob.constraints, arch=archs[0],
        predicted_accuracy=float(scores[0]), latency_ms=lat, macs=int(round(macs)),
        params=int(round(params)), history=history, population=archs,
        population_scores=scores, wall_seconds=time.perf_counter() - t0,
        evaluations=evaluations, method=method, resolutions=prob.resolutions, config=config)


def resnet_evolution_search(space: "ResNetSpace | str", predictor, constraints: Constraints,
                            config: EvolutionConfig | None = None, *,
                            resolutions: Sequence[int] | None = None,
                            latency_table=None,
                            seed_archs: "Sequence[ResNetArch] | None" = None) -> SearchResult:
    """Best predicted-accuracy ResNet arch meeting a latency / MACs / params budget (regularised
    evolution, the rules of :func:`~.evolution.evolution_search`: the best distinct
    ``parent_ratio`` are kept, ``mutation_ratio`` of the children are mutants, the rest
    crossovers, every child meets the budget, children already scored are dropped).
    ``config.islands`` independent populations run one after another from one Generator (so a
    seed fixes the result); the best wins, then a single-gene steepest-ascent local search if
    ``config.local_search``. ``predictor`` is the OFA ResNet50 reference predictor
    (:class:`~ofa_deploy.accuracy_resnet.ResNetReferencePredictor`). Raises
    :class:`InfeasibleBudgetError` before searching if a budget is below the smallest subnet's.
    ``latency_table``: a :class:`~luts.table.LatencyTable` of the space, needed for
    ``constraints.max_latency_ms`` (its calibrated prediction is the latency; its resolutions
    bound the default ones). ``seed_archs`` start the first island, as in
    :func:`~.evolution.evolution_search` (``extra["seeds_used"]``, ``extra["seeds_over_budget"]``;
    a seed at a resolution not searched raises :class:`SearchError`).
    """
    # the MobileNet default prunes islands and adds an aging island; ResNet keeps its measured
    # 3 x 200 x 80
    config = (EvolutionConfig(islands=3, generations=80, prune_at=0, aging_islands=0)
              if config is None else config)
    if not isinstance(config, EvolutionConfig):
        raise SearchError("config must be an EvolutionConfig")
    if (config.prune_at and config.prune_at < config.generations
            and config.islands > config.keep_islands):  # a pruning that would take effect
        raise SearchError("island pruning (prune_at) is not supported for ResNet spaces; "
                          "give prune_at=0")
    if config.aging_islands:  # its own loop has no aging evolution
        raise SearchError("aging islands (aging_islands) are not supported for ResNet spaces; "
                          "give aging_islands=0")
    prob = _ResNetProblem(space, predictor, constraints, resolutions, latency_table)
    prob.check_feasible()
    rng = np.random.default_rng(config.seed)
    t0 = time.perf_counter()
    P = config.num_parents
    pools, island_best, history, evaluations = [], [], None, 0
    seen: set = set()
    seeds = _seed_rows(prob, seed_archs, P)
    with _single_thread_torch():
        for isl in range(config.islands):
            pool = prob.sample_feasible(config.population, rng)
            if isl == 0 and seeds is not None and len(seeds[0]):
                # the seeds first, the sample (less any copy of a seed) after them
                taken = set(prob.cost.keys(seeds[0]))
                rest = [i for i, k in enumerate(prob.cost.keys(pool)) if k not in taken]
                pool = np.concatenate([seeds[0], pool[rest][:config.population
                                                             - len(seeds[0])]])
            own = set(prob.cost.keys(pool))
            scores = prob.score(pool)
            evaluations += len(pool)
            hist = [float(scores.max())]
            for _gen in range(config.generations):
                top = np.argsort(-scores, kind="stable")[:P]
                parents, pscores = pool[top], scores[top]
                kids = _children(prob, parents, config, rng)
                fresh = [i for i, k in enumerate(prob.cost.keys(kids))
                         if k not in own and not own.add(k)]
                if fresh:
                    kids = kids[fresh]
                    ks = prob.score(kids)
                    evaluations += len(kids)
                    pool, scores = np.concatenate([parents, kids]), np.concatenate([pscores, ks])
                else:
                    pool, scores = parents, pscores
                hist.append(max(hist[-1], float(scores.max())))
            seen |= own
            island_best.append(hist[-1])
            pools.append((pool, scores))
            # history: the best over islands so far, generation by generation
            history = hist if history is None else [max(x, y) for x, y in zip(history, hist)]
        pool = np.concatenate([p for p, _ in pools])
        scores = np.concatenate([s for _, s in pools])
        report = {"local_search_moves": 0}
        if config.local_search:
            i = int(np.argmax(scores))
            row, sc, n, gain = _polish(prob, pool[i], float(scores[i]), seen)
            evaluations += n
            if sc > scores[i]:
                pool, scores = np.concatenate([row[None], pool]), np.concatenate([[sc], scores])
            report = {"local_optimum": gain <= 0, "best_single_move_gain": gain,
                      "local_search_evaluations": n}
            history[-1] = max(history[-1], sc)
    res = _result(prob, pool, scores, history, t0, evaluations, "evolution", config)
    res.extra.update(report)
    res.extra.update(_island_report(island_best))
    if seeds is not None:
        res.extra.update(seeds_used=len(seeds[0]), seeds_over_budget=seeds[1])
    return res


def _seed_rows(prob: _ResNetProblem, seed_archs, limit: int):
    """``(gene rows of the first distinct seeds within the budget, at most limit; indices of
    the seeds over it)``, or None without seeds."""
    if not seed_archs:
        return None
    rows = []
    for i, a in enumerate(seed_archs):
        if not isinstance(a, ResNetArch):
            raise SeedArchError(i, f"is not a ResNetArch: {a!r}")
        if a.r not in prob.resolutions:
            raise SeedArchError(i, f"has resolution {a.r}, which this search cannot score: "
                                   f"its resolutions (latency table, predictor, --resolution) "
                                   f"are {list(prob.resolutions)}")
        try:
            rows.append(prob.cost.genes_of([a]))
        except ArchError as exc:
            raise SeedArchError(i, f"does not fit the space: {exc}") from None
    genes = np.concatenate(rows)
    ok = prob.feasible(genes)
    take, keys = [], set()
    for i, k in zip(np.nonzero(ok)[0].tolist(), prob.cost.keys(genes[ok])):
        if len(take) < limit and k not in keys:
            keys.add(k)
            take.append(i)
    return genes[take], np.nonzero(~ok)[0].tolist()


def resnet_random_search(space: "ResNetSpace | str", predictor, constraints: Constraints,
                         evaluations: int, *, seed: int = 0,
                         resolutions: Sequence[int] | None = None,
                         latency_table=None) -> SearchResult:
    """Baseline: score ``evaluations`` distinct random feasible archs and keep the best."""
    _check_int("evaluations", evaluations, 1)
    prob = _ResNetProblem(space, predictor, constraints, resolutions, latency_table)
    prob.check_feasible()
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    with _single_thread_torch():
        g = prob.sample_feasible(int(evaluations), rng)
        scores = prob.score(g)
    history = np.maximum.accumulate(scores).tolist()
    return _result(prob, g, scores, history, t0, len(g), "random", None)
