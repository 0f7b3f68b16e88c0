"""Evolutionary architecture search under latency / MACs / params budgets.

The algorithm is the OFA authors' regularised evolution (keep the best ``parent_ratio`` of the
population; make ``mutation_ratio`` of the next population by mutating a random parent, the
rest by uniform crossover of two random parents; children must meet the budget), run on whole
populations at once: a population is one integer matrix of choice indices, the budget check is
one gather over per-op cost tables, and the accuracy predictor scores every new child in one
forward pass. Two differences from the reference, both to spend the evaluation budget better,
neither changing what a generation can produce: parents are the best *distinct* archs (the
reference can fill its parent pool with clones of one arch), and a child identical to an arch
already scored is dropped instead of re-scored (the reference re-scores it; by the time it
reappears it has already lost its place among the parents).

Every sampling loop is bounded: a child slot that finds no feasible candidate within
``retry_rounds`` rounds stays empty (the reference would loop forever or fall back to a parent
copy, a duplicate), and the initial population is drawn by rejection in a bounded number of
large rounds, completed by *repair* (moving random genes to the cheapest choice until the arch
fits) when the budget is so tight that rejection finds too few. Budgets below the smallest
achievable value are refused before any search, naming that value.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np

from supernet.arch import ArchConfig
from supernet.batch import ArchBatch
from supernet.errors import OfaDeployError
from supernet.ops import OpGrid
from supernet.space import Space, get_space

__all__ = [
    "SearchError",
    "InfeasibleBudgetError",
    "EvolutionConfig",
    "Constraints",
    "SearchResult",
    "CostModel",
    "evolution_search",
    "pareto_search",
    "random_search",
]


class SearchError(OfaDeployError, ValueError):
    """Bad search settings (population, ratios, resolutions...)."""


class InfeasibleBudgetError(SearchError):
    """No subnet of the space can meet the budget; the message names the smallest value."""


# -- settings --------------------------------------------------------------------------------
def _check_int(name: str, v: Any, lo: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise SearchError(f"{name} must be an integer, got {v!r}")
    if v < lo:
        raise SearchError(f"{name} must be >= {lo}, got {v}")


def _check_frac(name: str, v: Any, *, open_low: bool = False) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
        raise SearchError(f"{name} must be a number, got {v!r}")
    if not math.isfinite(v) or v > 1 or v < 0 or (open_low and v == 0):
        rng = "(0, 1]" if open_low else "[0, 1]"
        raise SearchError(f"{name} must be in {rng}, got {v}")


@dataclass(frozen=True)
class EvolutionConfig:
    """Hyper-parameters of :func:`evolution_search` (defaults: the OFA reference's)."""

    population: int = 100
    parent_ratio: float = 0.25
    mutation_ratio: float = 0.5
    mutate_prob: float = 0.1
    generations: int = 500
    seed: int = 0
    # None: mutate the resolution with ``mutate_prob``, as the reference's tutorial finder does
    resolution_mutate_prob: float | None = None
    # rounds of candidates for a child slot before it is left empty (see _Children)
    retry_rounds: int = 10

    def __post_init__(self) -> None:
        _check_int("population", self.population, 2)
        _check_frac("parent_ratio", self.parent_ratio, open_low=True)
        _check_frac("mutation_ratio", self.mutation_ratio)
        _check_frac("mutate_prob", self.mutate_prob)
        if self.resolution_mutate_prob is not None:
            _check_frac("resolution_mutate_prob", self.resolution_mutate_prob)
        _check_int("generations", self.generations, 0)
        _check_int("seed", self.seed, 0)
        _check_int("retry_rounds", self.retry_rounds, 1)
        if self.num_parents < 1:
            raise SearchError(f"parent_ratio {self.parent_ratio} of population "
                              f"{self.population} leaves no parents")

    @property
    def num_parents(self) -> int:
        return int(round(self.parent_ratio * self.population))

    @property
    def num_mutations(self) -> int:
        return int(round(self.mutation_ratio * self.population))

    @property
    def evaluations_budget(self) -> int:
        """Children generated in a whole run (the reference scores exactly this many)."""
        return self.population * (self.generations + 1)

    def get_state(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, state: Mapping) -> "EvolutionConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(state) - names)
        if unknown:
            raise SearchError(f"unknown evolution setting(s): {', '.join(unknown)}")
        return cls(**dict(state))


def _check_limit(name: str, v: Any) -> None:
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise SearchError(f"{name} must be a number, got {v!r}")
    if not math.isfinite(v) or v <= 0:
        raise SearchError(f"{name} must be a positive number, got {v}")


@dataclass(frozen=True)
class Constraints:
    """Upper bounds an arch must meet; any mix, None = unconstrained."""

    max_latency_ms: float | None = None
    max_macs: float | None = None
    max_params: float | None = None

    def __post_init__(self) -> None:
        _check_limit("max_latency_ms", self.max_latency_ms)
        _check_limit("max_macs", self.max_macs)
        _check_limit("max_params", self.max_params)

    @property
    def empty(self) -> bool:
        return self.max_latency_ms is None and self.max_macs is None and self.max_params is None

    def limits(self) -> np.ndarray:
        """(latency, MACs, params) bounds with +inf where unconstrained."""
        return np.array([math.inf if v is None else float(v)
                         for v in (self.max_latency_ms, self.max_macs, self.max_params)])

    def looser_or_equal(self, other: "Constraints") -> bool:
        return bool((self.limits() >= other.limits()).all())

    def describe(self) -> str:
        parts = []
        if self.max_latency_ms is not None:
            parts.append(f"latency <= {self.max_latency_ms:g} ms")
        if self.max_macs is not None:
            parts.append(f"MACs <= {self.max_macs / 1e6:g}M")
        if self.max_params is not None:
            parts.append(f"params <= {self.max_params / 1e6:g}M")
        return ", ".join(parts) or "unconstrained"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- costs -----------------------------------------------------------------------------------
QUANTITIES = ("latency_ms", "macs", "params")


@functools.lru_cache(maxsize=16)
def _analytic_grid(space: Space, kind: str, resolutions: Tuple[int, ...]) -> OpGrid:
    fn = (lambda op: op.macs) if kind == "macs" else (lambda op: op.params)
    return OpGrid(space, fn, resolutions)


def _grid_rows(g: OpGrid, resolutions: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    ri = g.resolution_index(np.asarray(resolutions))
    return g.fixed[ri], g.blocks[ri]


class CostModel:
    """Latency (from a table, if any), MACs and params of archs held as a *gene matrix*.

    A gene matrix is an ``(N, 2*blocks + stages + 1)`` integer array of choice indices: kernel
    index per block, expand index per block, depth index per stage, resolution index. Entries
    of skipped blocks are kept (as in the reference) so that a depth mutation can bring back a
    block's earlier choice; :meth:`batch` and :meth:`keys` ignore them.

    The per-op grids are stacked into ``fixed (R, 3)`` and ``blocks (R, blocks, K*E, 3)`` so one
    fancy-indexing pass prices a whole population. ``latency_table`` may be a
    :class:`luts.table.LatencyTable` or any object with ``predict(ArchBatch)`` (``grid()``
    returning an :class:`~supernet.ops.OpGrid` enables the fast path and the exact minimum).
    """

    def __init__(self, space: "Space | str", resolutions: Sequence[int], latency_table=None):
        self.space = sp = get_space(space)
        self.resolutions = tuple(int(r) for r in resolutions)
        self.kc = np.asarray(sp.kernel_choices, dtype=np.int64)
        self.ec = np.asarray(sp.expand_choices, dtype=np.int64)
        self.dc = np.asarray(sp.depth_choices, dtype=np.int64)
        self.rc = np.asarray(self.resolutions, dtype=np.int64)
        nb, ns, md = sp.num_blocks, sp.num_stages, sp.max_depth
        self.nb, self.ns, self.md = nb, ns, md
        self.nk, self.ne, self.nd, self.nr = len(self.kc), len(self.ec), len(self.dc), len(self.rc)
        # gene matrix layout
        self.K, self.E = slice(0, nb), slice(nb, 2 * nb)
        self.D, self.R = slice(2 * nb, 2 * nb + ns), 2 * nb + ns
        self.width = 2 * nb + ns + 1
        # genes are small indices: int8 keeps the population arrays 8x smaller than int64,
        # which is most of the cost of gathering and mixing them
        self.dtype = np.int8 if max(self.nk, self.ne, self.nd, self.nr) <= 127 else np.int16
        self.ranges = np.array([self.nk] * nb + [self.ne] * nb + [self.nd] * ns + [self.nr])
        # which mutation draw (block, stage, resolution) decides each gene
        self.mutation_cols = np.r_[np.arange(nb), np.arange(nb), nb + np.arange(ns), nb + ns]
        self.pos = np.tile(np.arange(md), ns)
        self.stage_of_block = np.repeat(np.arange(ns), md)
        self.table = latency_table
        nr = self.nr
        fixed = np.zeros((nr, 3))
        blocks = np.zeros((nr, nb, self.nk * self.ne, 3))
        self._lat_grid = None
        if latency_table is not None and hasattr(latency_table, "grid"):
            self._lat_grid = latency_table.grid()
            f, b = _grid_rows(self._lat_grid, self.resolutions)
            fixed[:, 0], blocks[..., 0] = f, b.reshape(nr, nb, -1)
        for q, kind in ((1, "macs"), (2, "params")):
            f, b = _grid_rows(_analytic_grid(sp, kind, self.resolutions), self.resolutions)
            fixed[:, q], blocks[..., q] = f, b.reshape(nr, nb, -1)
        self.fixed, self.blocks = fixed, blocks
        # flat per-quantity tables with one trailing zero that skipped blocks point at, so a
        # population is priced by one take() and one sum per quantity
        ke = self.nk * self.ne
        self._flat = [np.append(blocks[..., q].ravel(), 0.0) for q in range(3)]
        self._zero = nr * nb * ke
        self._block_off = np.arange(nb) * ke
        self._row_stride = nb * ke
        self._dcols = 2 * nb + self.stage_of_block  # depth gene of each block's stage
        # fixed odd multipliers for keys(): a deterministic hash, the same in every run
        mult = np.random.default_rng(0x0FA).integers(1, 2**63, size=self.width + 1,
                                                      dtype=np.uint64) | np.uint64(1)
        self._hash_mult, self._hash_extra = mult[:-1], mult[-1]

    @property
    def has_latency(self) -> bool:
        return self.table is not None

    # -- gene matrices -----------------------------------------------------------------
    def active(self, genes: np.ndarray) -> np.ndarray:
        return self.dc[genes[:, self._dcols]] > self.pos

    def costs(self, genes: np.ndarray, quantities: Sequence[int] = (0, 1, 2)) -> np.ndarray:
        """``(N, len(quantities))`` of latency ms (NaN without a table), MACs, params."""
        r = genes[:, self.R].astype(np.intp)
        idx = (r[:, None] * self._row_stride + self._block_off
               + genes[:, self.K].astype(np.intp) * self.ne + genes[:, self.E])
        idx = np.where(self.active(genes), idx, self._zero)
        out = np.empty((len(genes), len(quantities)))
        for j, q in enumerate(quantities):
            if q == 0 and self.table is None:
                out[:, j] = np.nan
            elif q == 0 and self._lat_grid is None:
                out[:, j] = np.asarray(self.table.predict(self.batch(genes)), dtype=np.float64)
            else:
                out[:, j] = self.fixed[r, q] + np.take(self._flat[q], idx).sum(axis=1)
        return out

    def canonical(self, genes: np.ndarray) -> np.ndarray:
        act = self.active(genes)
        out = genes.copy()
        out[:, self.K] *= act
        out[:, self.E] *= act
        return out

    def batch(self, genes: np.ndarray) -> ArchBatch:
        """Canonical :class:`ArchBatch` (skipped blocks hold the smallest choice)."""
        c = self.canonical(genes)
        return ArchBatch(self.space, self.kc[c[:, self.K]], self.ec[c[:, self.E]],
                         self.dc[c[:, self.D]], self.rc[c[:, self.R]])

    def keys(self, genes: np.ndarray, extra: np.ndarray | None = None) -> List[int]:
        """One integer key per arch, equal for equal networks (skipped blocks ignored): a
        64-bit hash of the canonical genes (and of ``extra``, one more small integer per row).
        Python ints hash and compare far faster than byte strings in the search's sets; two
        different archs share a key with probability about 2**-64 per pair (then one is taken
        for already scored and skipped, which never breaks a budget)."""
        h = self.canonical(genes).astype(np.uint64) @ self._hash_mult
        if extra is not None:
            h += extra.astype(np.uint64) * self._hash_extra
        h ^= h >> np.uint64(31)  # finalise: spread the sums over all bits
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(29)
        return h.tolist()

    # -- bounds ------------------------------------------------------------------------
    def minimum(self, q: int) -> Tuple[float, int | None]:
        """Exact smallest value of quantity ``q`` over every subnet, and its resolution
        (values are non-negative, so the smallest depth is cheapest). For a latency table
        without a grid, its own ``min_max`` (resolution unknown), or 0 if it has none."""
        if q == 0 and self._lat_grid is None:
            mm = getattr(self.table, "min_max", None)
            return (float(mm(list(self.resolutions))[0]) if mm else 0.0), None
        mask = self.pos < self.dc.min()
        per_res = self.fixed[:, q] + self.blocks[:, :, :, q].min(axis=2)[:, mask].sum(axis=1)
        i = int(np.argmin(per_res))
        return float(per_res[i]), self.resolutions[i]

    def floor(self, q: int) -> np.ndarray:
        """The cheapest arch for quantity ``q`` as a ``(1, width)`` gene row (for a latency
        table without a grid: the smallest choices at the smallest resolution)."""
        _, r = self.minimum(q)
        if r is None:
            return np.zeros((1, self.width), dtype=self.dtype)
        ri = self.resolutions.index(r)
        best = self.blocks[ri, :, :, q].argmin(axis=1)
        return np.concatenate([best // self.ne, best % self.ne, np.zeros(self.ns, np.int64),
                               [ri]])[None, :].astype(self.dtype)


# -- the search problem ----------------------------------------------------------------------
@contextlib.contextmanager
def _single_thread_torch():
    """Score in one thread: the forward passes are ~100 rows, where intra-op threads only add
    synchronisation (and on a busy machine spin for milliseconds)."""
    try:
        import torch
    except ImportError:  # a duck-typed predictor may not use torch
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _table_name(table) -> str:
    meta = getattr(table, "meta", None) or {}
    return str(meta.get("device") or meta.get("name") or "the latency table")


def _resolve_resolutions(space: Space, predictor, latency_table, resolutions) -> Tuple[int, ...]:
    explicit = resolutions is not None
    if explicit:
        res = sorted({int(r) for r in resolutions})
        if not res:
            raise SearchError("no resolutions to search")
        bad = [r for r in res if r not in space.resolutions]
        if bad:
            raise SearchError(f"resolution(s) {bad} are not resolutions of space {space.name} "
                              f"({space.resolutions[0]}..{space.resolutions[-1]})")
    elif latency_table is not None and getattr(latency_table, "resolutions", None):
        res = sorted(r for r in latency_table.resolutions if r in space.resolutions)
        if not res:
            raise SearchError(f"the latency table's resolutions {list(latency_table.resolutions)} "
                              f"are not resolutions of space {space.name}")
    else:
        res = list(space.resolutions)
    if latency_table is not None and getattr(latency_table, "resolutions", None):
        bad = [r for r in res if r not in latency_table.resolutions]
        if bad:
            raise SearchError(f"resolution(s) {bad} are not in the latency table (it covers "
                              f"{list(latency_table.resolutions)})")
    supported = getattr(predictor, "supported_resolutions", None)
    if supported is not None:
        ok = list(supported(res))
        if explicit and len(ok) != len(res):
            bad = sorted(set(res) - set(ok))
            raise SearchError(f"resolution(s) {bad} cannot be scored by the accuracy predictor")
        if not ok:
            raise SearchError(f"the accuracy predictor cannot score any of the resolutions "
                              f"{res}")
        res = ok
    return tuple(res)


class _Problem:
    """One space + predictor + cost model + constraints: samples, prices and scores genes."""

    def __init__(self, space, predictor, constraints: Constraints, latency_table, resolutions):
        self.space = get_space(space)
        if not isinstance(constraints, Constraints):
            raise SearchError("constraints must be a Constraints object")
        if not callable(getattr(predictor, "predict", None)):
            raise SearchError("the accuracy predictor must have a predict(ArchBatch) method")
        sp_tab = getattr(latency_table, "space", None)
        if sp_tab is not None and get_space(sp_tab).name != self.space.name:
            raise SearchError(f"the latency table is for space {get_space(sp_tab).name}, not "
                              f"{self.space.name}")
        self.predictor = predictor
        self.table = latency_table
        self.resolutions = _resolve_resolutions(self.space, predictor, latency_table, resolutions)
        self.cost = c = CostModel(self.space, self.resolutions, latency_table)
        # fast path: a predictor with an ArchEncoder over this space's choices is fed features
        # built straight from the gene matrix, skipping the value -> index round trip
        self._fast = None
        enc = getattr(predictor, "encoder", None)
        if (callable(getattr(predictor, "predict_features", None))
                and callable(getattr(enc, "encode_indices", None))
                and tuple(getattr(enc, "kernel_choices", ())) == tuple(self.space.kernel_choices)
                and tuple(getattr(enc, "expand_choices", ())) == tuple(self.space.expand_choices)
                and getattr(enc, "num_blocks", None) == c.nb):
            slots = np.asarray(enc.resolution_slot(c.rc))
            if (slots >= 0).all():
                self._fast = (enc, slots)
        self.set_constraints(constraints)

    def set_constraints(self, constraints: Constraints) -> None:
        if constraints.max_latency_ms is not None and self.table is None:
            raise SearchError("a latency budget needs a latency table")
        self.constraints = constraints
        self.limits = constraints.limits()
        self.active_q = [int(q) for q in np.nonzero(np.isfinite(self.limits))[0]]
        self._lim = self.limits[self.active_q]

    def check_feasible(self) -> None:
        """Refuse a budget below the exact minimum of its quantity, before any search."""
        res = self.resolutions
        span = f"resolutions {res[0]}..{res[-1]}" if len(res) > 1 else f"resolution {res[0]}"
        for q in self.active_q:
            lo, r = self.cost.minimum(q)
            budget = self.limits[q]
            if budget >= lo:
                continue
            if q == 0:
                # rounded up so that passing the printed value back is feasible
                msg = (f"latency budget {budget:g} ms is infeasible on "
                       f"{_table_name(self.table)}: the fastest subnet of {self.space.name} "
                       f"takes {math.ceil(lo * 1000) / 1000:.3f} ms ("
                       + (f"at resolution {r}; " if r is not None else "") + f"{span} searched)")
            elif q == 1:
                msg = (f"MACs budget {budget / 1e6:g}M is infeasible: the smallest subnet of "
                       f"{self.space.name} has {lo / 1e6:.2f}M MACs ({int(round(lo)):,}, at "
                       f"resolution {r}; {span} searched)")
            else:
                msg = (f"params budget {budget / 1e6:g}M is infeasible: the smallest subnet of "
                       f"{self.space.name} has {lo / 1e6:.3f}M params ({int(round(lo)):,})")
            raise InfeasibleBudgetError(msg)

    def feasible(self, genes: np.ndarray) -> np.ndarray:
        if not len(self.active_q):
            return np.ones(genes.shape[0], dtype=bool)
        return (self.cost.costs(genes, self.active_q) <= self._lim).all(axis=1)

    def score(self, genes: np.ndarray) -> np.ndarray:
        if len(genes) == 0:
            return np.zeros(0)
        c = self.cost
        if self._fast is not None:
            enc, slots = self._fast
            x = enc.encode_indices(genes[:, c.K], genes[:, c.E], c.active(genes),
                                   slots[genes[:, c.R]])
            out = self.predictor.predict_features(x)
        else:
            out = self.predictor.predict(c.batch(genes))
        out = np.asarray(out, dtype=np.float64).ravel()
        if out.shape[0] != len(genes):
            raise SearchError(f"the accuracy predictor returned {out.shape[0]} values for "
                              f"{len(genes)} archs")
        return out

    # -- sampling ----------------------------------------------------------------------
    def uniform(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return (rng.random((n, self.cost.width), dtype=np.float32)
                * self.cost.ranges).astype(self.cost.dtype)

    def _floors(self) -> np.ndarray:
        c = self.cost
        smallest = np.zeros((1, c.width), dtype=c.dtype)
        smallest[0, c.R] = int(np.argmin(c.fixed[:, 0 if c._lat_grid is not None else 1]))
        return np.concatenate([smallest] + [c.floor(int(q)) for q in self.active_q])

    def repair(self, genes: np.ndarray, rng: np.random.Generator, steps: int = 12
               ) -> np.ndarray:
        """Move random genes of over-budget rows to a cheapest arch, more each step, until
        they fit; the last step lands on the floor itself. Returns the feasibility mask."""
        floors = self._floors()
        target = floors[rng.integers(len(floors), size=len(genes))]
        ok = self.feasible(genes)
        for step in range(1, steps + 1):
            bad = np.nonzero(~ok)[0]
            if not len(bad):
                break
            m = rng.random((len(bad), genes.shape[1])) < step / steps
            genes[bad] = np.where(m, target[bad], genes[bad])
            ok[bad] = self.feasible(genes[bad])
        return ok

    def sample_feasible(self, n: int, rng: np.random.Generator, *, exclude=(),
                        rounds: int = 16) -> np.ndarray:
        """Up to ``n`` distinct feasible archs: rejection sampling (uniform over the feasible
        set) in up to ``rounds`` batches of up to 64k archs, priced in one pass each; at budgets
        so tight that this finds too few, repair of rejected samples fills the rest. Always
        terminates."""
        seen = set(exclude)
        got: List[np.ndarray] = []
        count = 0
        chunk = min(max(8 * n, 16384), 65536)
        for attempt in range(rounds + 4):
            if count >= n:
                break
            if attempt < rounds:
                g = self.uniform(chunk, rng)
                g = g[self.feasible(g)]
            else:
                g = self.uniform(2 * (n - count) + 8, rng)
                g = g[self.repair(g, rng)]
            take = []
            for i, k in enumerate(self.cost.keys(g)):
                if count + len(take) >= n:
                    break
                if k not in seen:
                    seen.add(k)
                    take.append(i)
            if take:
                got.append(g[take])
                count += len(take)
        if not count:
            raise InfeasibleBudgetError(
                f"no subnet of {self.space.name} meets all constraints together "
                f"({self.constraints.describe()}); each is achievable alone, so loosen one")
        return np.concatenate(got)

    # -- variation ---------------------------------------------------------------------
    def vary(self, a: np.ndarray, b: np.ndarray, is_mut: np.ndarray,
             rng: np.random.Generator, p: float, pr: float) -> np.ndarray:
        """Children of parent rows ``a`` (and ``b``), as the reference makes them.

        Where ``is_mut``: a mutant of ``a``: each block's kernel and expand are resampled
        (together, on one draw) with probability ``p``, each stage depth with ``p``, the
        resolution with ``pr``. Elsewhere: a uniform crossover, each gene from ``a`` or ``b``
        with probability 1/2. Both kinds read one uniform matrix (mutants use its first
        ``blocks + stages + 1`` columns as their decisions, crossovers every column as coins),
        so a mixed batch costs a handful of array operations."""
        c = self.cost
        u = rng.random(a.shape, dtype=np.float32)
        probs = np.full(a.shape[1], p, dtype=np.float32)
        probs[c.R] = pr
        mut = is_mut[:, None]
        hit = (u[:, c.mutation_cols] < probs) & mut
        out = np.where((u < 0.5) & ~mut, b, a)
        rows, cols = np.nonzero(hit)
        out[rows, cols] = (rng.random(len(rows), dtype=np.float32)
                           * c.ranges[cols]).astype(out.dtype)
        return out

    def mutate(self, parents: np.ndarray, rng: np.random.Generator, p: float,
               pr: float) -> np.ndarray:
        return self.vary(parents, parents, np.ones(len(parents), bool), rng, p, pr)

    def crossover(self, a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.vary(a, b, np.zeros(len(a), bool), rng, 0.0, 0.0)


# -- results ---------------------------------------------------------------------------------
@dataclass
class SearchResult:
    """The best arch a search found, its predicted numbers, and how the search went."""

    space: Space
    constraints: Constraints
    arch: ArchConfig
    predicted_accuracy: float
    latency_ms: float | None
    macs: int
    params: int
    history: List[float]  # best predicted accuracy after generation i (0: initial population)
    population: ArchBatch  # final population, best first
    population_scores: np.ndarray
    wall_seconds: float
    evaluations: int  # distinct archs the predictor scored
    method: str = "evolution"
    resolutions: Tuple[int, ...] = ()
    config: EvolutionConfig | None = None
    extra: Dict[str, Any] = field(default_factory=dict)
    # seconds since the search started when history[i] was reached (evolution only): how fast
    # a quality level is reached, beside the full run's wall time
    history_seconds: List[float] = field(default_factory=list)

    @property
    def predicted_latency_ms(self) -> float | None:
        return self.latency_ms

    def to_dict(self, *, with_history: bool = False) -> dict:
        d = {
            "space": self.space.name,
            "method": self.method,
            "constraints": self.constraints.to_dict(),
            "arch": self.arch.to_dict(),
            "arch_string": self.arch.to_string(self.space),
            "predicted_accuracy": self.predicted_accuracy,
            "predicted_latency_ms": self.latency_ms,
            "macs": self.macs,
            "params": self.params,
            "search_seconds": self.wall_seconds,
            "evaluations": self.evaluations,
            "resolutions": list(self.resolutions),
        }
        if self.config is not None:
            d["config"] = self.config.get_state()
        if with_history:
            d["history"] = list(self.history)
            if self.history_seconds:
                d["history_seconds"] = list(self.history_seconds)
        d.update(self.extra)
        return d


def _result(problem: _Problem, pool: np.ndarray, scores: np.ndarray, history: List[float],
            t0: float, evaluations: int, method: str, config=None) -> SearchResult:
    order = np.argsort(-scores, kind="stable")
    pool, scores = pool[order], scores[order]
    costs = problem.cost.costs(pool[:1])[0]
    batch = problem.cost.batch(pool)
    return SearchResult(
        space=problem.space, constraints=problem.constraints, arch=batch[0].to_archs()[0],
        predicted_accuracy=float(scores[0]),
        latency_ms=float(costs[0]) if problem.cost.has_latency else None,
        macs=int(round(costs[1])), params=int(round(costs[2])), history=history,
        population=batch, population_scores=scores, wall_seconds=time.perf_counter() - t0,
        evaluations=evaluations, method=method, resolutions=problem.resolutions, config=config)


# -- searches --------------------------------------------------------------------------------
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


def _evolve(problem: _Problem, config: EvolutionConfig, rng: np.random.Generator,
            seed_pool: np.ndarray | None = None) -> SearchResult:
    t0 = time.perf_counter()
    cost = problem.cost
    P, N = config.num_parents, config.population
    seen: set = set()

    # initial population: the best distinct feasible seeds (if any), topped up by sampling
    parts = []
    if seed_pool is not None and len(seed_pool):
        fit = seed_pool[problem.feasible(seed_pool)]
        take = []
        for i, k in enumerate(cost.keys(fit)):
            if len(take) >= P:
                break
            if k not in seen:
                seen.add(k)
                take.append(i)
        if take:
            parts.append(fit[take])
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
    res = _result(problem, pool, scores, history, t0, evaluations, "evolution", config)
    res.history_seconds = elapsed
    return res


def evolution_search(space: "Space | str", predictor, constraints: Constraints,
                     config: EvolutionConfig | None = None, *, latency_table=None,
                     resolutions: Sequence[int] | None = None) -> SearchResult:
    """Best predicted-accuracy arch meeting ``constraints`` (regularised evolution).

    ``predictor`` is anything with ``predict(ArchBatch) -> array`` (e.g.
    :class:`~ofa_deploy.accuracy.AccuracyPredictor`); ``latency_table`` a
    :class:`luts.table.LatencyTable` (needed for a latency budget). ``resolutions`` default to
    the table's (else the space's) that the predictor can score. Raises
    :class:`InfeasibleBudgetError` before searching if a budget is below its exact minimum.
    """
    config = EvolutionConfig() if config is None else config
    if not isinstance(config, EvolutionConfig):
        raise SearchError("config must be an EvolutionConfig")
    problem = _Problem(space, predictor, constraints, latency_table, resolutions)
    problem.check_feasible()
    with _single_thread_torch():
        return _evolve(problem, config, np.random.default_rng(config.seed))


def _as_constraints(b, base: Constraints | None) -> Constraints:
    if isinstance(b, Constraints):
        return b
    if isinstance(b, bool) or not isinstance(b, (int, float, np.integer, np.floating)):
        raise SearchError(f"a budget must be a number of ms or a Constraints, got {b!r}")
    return dataclasses.replace(base or Constraints(), max_latency_ms=float(b))


def pareto_search(space: "Space | str", predictor, budgets: Sequence["Constraints | float"],
                  config: EvolutionConfig | None = None, *, latency_table=None,
                  constraints: Constraints | None = None,
                  resolutions: Sequence[int] | None = None) -> List[SearchResult]:
    """The best arch for each budget (a Pareto front), tightest first; a number is a latency
    budget (ms) combined with ``constraints``. Every budget is checked before any search runs.

    All budgets evolve in lock-step: one population per budget, but every step (variation,
    budget checks, de-duplication, scoring) is one array operation over all of them, so a front
    of B budgets costs far less than B searches. After every generation the best arch of each
    budget also joins the population of the next looser budget when it fits there and is
    better, so a looser budget never ends worse than a tighter one. One budget is exactly
    :func:`evolution_search`. ``wall_seconds`` of each result is its share of the total, which
    ``extra["front_seconds"]`` holds."""
    config = EvolutionConfig() if config is None else config
    if not isinstance(config, EvolutionConfig):
        raise SearchError("config must be an EvolutionConfig")
    cons = [_as_constraints(b, constraints) for b in budgets]
    if not cons:
        raise SearchError("no budgets given")
    cons.sort(key=lambda c: tuple(c.limits()))
    problem = _Problem(space, predictor, cons[0], latency_table, resolutions)
    for c in cons:
        problem.set_constraints(c)
        problem.check_feasible()
    rng = np.random.default_rng(config.seed)
    with _single_thread_torch():
        if len(cons) == 1:
            return [_evolve(problem, config, rng)]
        return _evolve_lockstep(problem, cons, config, rng)


def _evolve_lockstep(problem: _Problem, cons: List[Constraints], config: EvolutionConfig,
                     rng: np.random.Generator) -> List[SearchResult]:
    """:func:`_evolve` for several budgets at once; rows carry their budget's index ``gid``."""
    t0 = time.perf_counter()
    cost = problem.cost
    G, P, N = len(cons), config.num_parents, config.population
    q_all = sorted({q for c in cons for q in np.nonzero(np.isfinite(c.limits()))[0].tolist()})
    lims = np.stack([c.limits()[q_all] for c in cons])  # (G, Q)

    def feasible(genes: np.ndarray, gid: np.ndarray) -> np.ndarray:
        return (cost.costs(genes, q_all) <= lims[gid]).all(axis=1)

    seen: set = set()  # keys of (arch, budget index) pairs already scored
    add = seen.add

    def new_rows(genes: np.ndarray, gid: np.ndarray) -> List[int]:
        return [i for i, k in enumerate(cost.keys(genes, gid)) if k not in seen and not add(k)]

    parts = []
    for g, c in enumerate(cons):
        problem.set_constraints(c)
        parts.append(problem.sample_feasible(N, rng))
    gid = np.concatenate([np.full(len(x), g) for g, x in enumerate(parts)])
    pool = np.concatenate(parts)
    seen.update(cost.keys(pool, gid))
    scores = problem.score(pool)
    evaluations = np.bincount(gid, minlength=G)
    best = np.full(G, -np.inf)
    np.maximum.at(best, gid, scores)
    history = [best.copy()]

    slot_gid = np.repeat(np.arange(G), N)
    is_mut = np.tile(np.arange(N) < config.num_mutations, G)
    p = config.mutate_prob
    pr = p if config.resolution_mutate_prob is None else config.resolution_mutate_prob
    tried = passed = 1.0
    for _gen in range(config.generations):
        # parents: the best P of each budget (rows sorted by budget, then score)
        order = np.lexsort((-scores, gid))
        sg = gid[order]
        starts = np.searchsorted(sg, np.arange(G))
        # migration: a budget's best joins the next looser budget's pool if better there
        tops = order[starts]
        up = np.nonzero(scores[tops[:-1]] > scores[tops[1:]])[0]
        if len(up):
            cand, cg = pool[tops[up]], up + 1
            ok = np.nonzero(feasible(cand, cg))[0]
            fresh = [ok[i] for i in new_rows(cand[ok], cg[ok])] if len(ok) else []
            if fresh:
                pool = np.concatenate([pool, cand[fresh]])
                gid = np.concatenate([gid, cg[fresh]])
                scores = np.concatenate([scores, scores[tops[up]][fresh]])
                order = np.lexsort((-scores, gid))
                sg = gid[order]
                starts = np.searchsorted(sg, np.arange(G))
        keep = order[np.arange(len(order)) - starts[sg] < P]
        parents, pg, ps = pool[keep], gid[keep], scores[keep]
        counts = np.bincount(pg, minlength=G)
        offs = np.concatenate([[0], np.cumsum(counts)[:-1]])
        cnt, off = counts[slot_gid], offs[slot_gid]
        a = parents[off + (rng.random(G * N) * cnt).astype(np.int64)]
        b = parents[off + (rng.random(G * N) * cnt).astype(np.int64)]

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
            np.maximum.at(best, kg, kscores)
        else:
            pool, gid, scores = parents, pg, ps
        history.append(best.copy())

    total = time.perf_counter() - t0
    results: List[SearchResult] = []
    for g, c in enumerate(cons):
        problem.set_constraints(c)
        sel = gid == g
        pool_g, scores_g = pool[sel], scores[sel]
        # a last pass of migration so the front is monotone even where it was one step behind
        for prev in results[-1:]:
            row = _genes_of(cost, prev.population[:1])
            if prev.predicted_accuracy > scores_g.max() and problem.feasible(row)[0]:
                pool_g = np.concatenate([pool_g, row])
                scores_g = np.append(scores_g, prev.predicted_accuracy)
        res = _result(problem, pool_g, scores_g, [float(h[g]) for h in history], t0,
                      int(evaluations[g]), "evolution", config)
        res.history[-1] = max(res.history[-1], res.predicted_accuracy)
        res.wall_seconds = total / G
        res.extra["front_seconds"] = total
        results.append(res)
    return results


def _genes_of(cost: CostModel, batch: ArchBatch) -> np.ndarray:
    """Gene matrix of a canonical batch produced by this cost model."""
    cols = [np.searchsorted(cost.kc, batch.ks), np.searchsorted(cost.ec, batch.e),
            np.searchsorted(cost.dc, batch.d), np.searchsorted(cost.rc, batch.r)[:, None]]
    return np.concatenate(cols, axis=1).astype(cost.dtype)


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
