"""The search problem: one space, predictor, cost model and budget; samples, prices, scores."""
from __future__ import annotations

import contextlib
import math
from typing import List, Tuple

import numpy as np

from supernet.space import Space, get_space

from .costs import CostModel
from .settings import Constraints, InfeasibleBudgetError, SearchError


def _openblas_thread_calls():
    """``(get, set)`` of the thread count of the OpenBLAS that numpy's wheels bundle, or None
    (another BLAS, or not found): numpy has no API for it, and on a ~100-row product threads
    only wait for each other (on a busy 2-core machine, 10x slower than one thread)."""
    import ctypes
    import glob
    import os

    base = os.path.dirname(np.__file__)
    for lib in sorted(glob.glob(base + ".libs/*openblas*") + glob.glob(os.path.join(base, ".dylibs", "*openblas*"))):
        try:
            dll = ctypes.CDLL(lib)  # already loaded by numpy: this returns the same library
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""),
                               ("openblas", "64_"), ("openblas", "")):
            get = getattr(dll, f"{prefix}_get_num_threads{suffix}", None)
            put = getattr(dll, f"{prefix}_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                put.argtypes, get.restype = [ctypes.c_int], ctypes.c_int
                return get, put
    return None


_BLAS = []  # memo of _openblas_thread_calls() (searched once per process)


@contextlib.contextmanager
def _single_thread_torch():
    """Score in one thread (numpy's OpenBLAS, and torch if a predictor already imported it):
    the forward passes are ~100 rows, where intra-op threads only add synchronisation (and on
    a busy machine spin for milliseconds). Both counts are restored on exit."""
    import sys

    if not _BLAS:
        _BLAS.append(_openblas_thread_calls())
    blas = _BLAS[0]
    torch = sys.modules.get("torch")  # a numpy predictor needs no torch: never import it here
    before_blas = blas[0]() if blas else None
    before_torch = torch.get_num_threads() if torch is not None else None
    if blas:
        blas[1](1)
    if torch is not None:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if blas:
            blas[1](before_blas)
        if torch is not None:
            torch.set_num_threads(before_torch)


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


def _unseen_rows(keys, seen: set, limit: int) -> List[int]:
    """Indices of the first ``limit`` keys not in ``seen`` (added to it): the initial sample
    scores no arch twice, and the merged island starts from distinct archs."""
    take: List[int] = []
    for i, k in enumerate(keys):
        if len(take) >= limit:
            break
        if k not in seen:
            seen.add(k)
            take.append(i)
    return take


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
            slots = np.asarray(enc.resolution_slot(c.res_values))
            if (slots >= 0).all():
                self._fast = (enc, slots)
        self.set_constraints(constraints)

    def set_constraints(self, constraints: Constraints) -> None:
        """Switch to another budget (same space, predictor and cost model)."""
        if constraints.max_latency_ms is not None and self.table is None:
            raise SearchError("a latency budget needs a latency table")
        if getattr(self, "constraints", None) != constraints:
            self._spare = None  # feasible uniform draws not yet handed out (sample_feasible)
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
        """``(N,)`` mask of the gene rows that meet every active bound."""
        if not len(self.active_q):
            return np.ones(genes.shape[0], dtype=bool)
        return (self.cost.costs(genes, self.active_q) <= self._lim).all(axis=1)

    def score(self, genes: np.ndarray) -> np.ndarray:
        """Predicted accuracy of every gene row (one predictor pass)."""
        if len(genes) == 0:
            return np.zeros(0)
        c = self.cost
        if self._fast is not None:
            enc, slots = self._fast
            x = enc.encode_indices(genes[:, c.kernel_genes], genes[:, c.expand_genes], c.active(genes),
                                   slots[genes[:, c.res_gene]])
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
        """``n`` gene rows drawn uniformly from the whole space (feasible or not)."""
        return (rng.random((n, self.cost.width), dtype=np.float32)
                * self.cost.ranges).astype(self.cost.dtype)

    def _structure_floor(self) -> np.ndarray:
        """``(structures, 3)`` exact smallest latency / MACs / params of each *structure*
        (resolution and stage depths; index :meth:`_structure_index`) over every kernel and
        expand choice: costs are sums over the active blocks, so each block's cheapest op
        gives the minimum. NaN latency without a latency grid (no bound known)."""
        if getattr(self, "_sfloor", None) is None:
            c = self.cost
            ns = c.ns
            grids = np.stack(np.meshgrid(*[np.arange(r) for r in c.ranges[c.depth_genes]],
                                         indexing="ij"), -1).reshape(-1, ns)
            act = (c.stage_depths[c.stage_of_block[None, :], grids[:, c.stage_of_block]]
                   > c.pos)  # (depth combos, blocks)
            cheapest = c.blocks.min(axis=2)  # (R, blocks, 3)
            floor = c.fixed[:, None, :] + np.einsum("db,rbq->rdq", act.astype(float), cheapest)
            if c._lat_grid is None:
                floor[..., 0] = np.nan
            self._sfloor = floor.reshape(-1, 3)
            self._sstride = np.cumprod([1] + list(c.ranges[c.depth_genes][::-1]))[::-1][1:]
            self._sres_stride = int(grids.shape[0])
        return self._sfloor

    def _structure_index(self, struct: np.ndarray) -> np.ndarray:
        """Row of :meth:`_structure_floor` of ``(N, stages + 1)`` depth and resolution genes."""
        self._structure_floor()
        return (struct[:, -1].astype(np.intp) * self._sres_stride
                + struct[:, :-1].astype(np.intp) @ self._sstride)

    def _uniform_may_fit(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` uniform draws from the whole space, less those whose structure cannot meet
        the budget with any kernel and expand (they would be rejected anyway, so rejection
        sampling stays exactly uniform over the feasible set): at a tight budget most draws
        fail on their structure, and this skips drawing and pricing their block genes."""
        c = self.cost
        lo = c.width - (c.ns + 1)
        struct = (rng.random((n, c.ns + 1), dtype=np.float32) * c.ranges[lo:]).astype(c.dtype)
        floor = self._structure_floor()[self._structure_index(struct)][:, self.active_q]
        ok = ~(floor > self._lim).any(axis=1)  # NaN (no bound): kept
        struct = struct[ok]
        out = np.empty((len(struct), c.width), dtype=c.dtype)
        out[:, :lo] = (rng.random((len(struct), lo), dtype=np.float32)
                       * c.ranges[:lo]).astype(c.dtype)
        out[:, lo:] = struct
        return out

    def _floors(self) -> np.ndarray:
        c = self.cost
        smallest = np.zeros((1, c.width), dtype=c.dtype)
        smallest[0, c.res_gene] = int(np.argmin(c.fixed[:, 0 if c._lat_grid is not None else 1]))
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
        terminates.

        Feasible draws of a batch that this call does not need (those after the last one it
        takes, never looked at) are kept for the next call under the same constraints: they
        are independent uniform draws like any new ones, so the islands of a search share one
        64k batch instead of drawing one each (at a loose budget most of a batch is spare)."""
        seen = set(exclude)
        got: List[np.ndarray] = []
        count = 0
        chunk = min(max(8 * n, 16384), 65536)
        spare, self._spare = self._spare, None
        for attempt in range(-1, rounds + 4):
            if count >= n:
                break
            uniform = attempt < rounds
            if attempt < 0:
                if spare is None or not len(spare):
                    continue
                g = spare
            elif uniform:
                g = self._uniform_may_fit(chunk, rng)
                g = g[self.feasible(g)]
            else:
                g = self.uniform(2 * (n - count) + 8, rng)
                g = g[self.repair(g, rng)]
            take = _unseen_rows(self.cost.keys(g), seen, n - count)
            if take:
                got.append(g[take])
                count += len(take)
            if uniform and count >= n:
                self._spare = g[take[-1] + 1:]
        if not count:
            raise InfeasibleBudgetError(
                f"no subnet of {self.space.name} meets all constraints together "
                f"({self.constraints.describe()}); each is achievable alone, so loosen one")
        return np.concatenate(got)

    # -- variation ---------------------------------------------------------------------
    def vary(self, first: np.ndarray, second: np.ndarray, mutate_rows: np.ndarray,
             rng: np.random.Generator, mutate_prob: float, res_mutate_prob: float
             ) -> np.ndarray:
        """Children of parent rows ``first`` (and ``second``), as the reference makes them.

        Where ``mutate_rows``: a mutant of ``first``: each block's kernel and expand are
        resampled (together, on one draw) with probability ``mutate_prob``, each stage depth
        with ``mutate_prob``, the resolution with ``res_mutate_prob``. Elsewhere: a uniform
        crossover, each gene from ``first`` or ``second`` with probability 1/2. Both kinds read
        one uniform matrix (mutants use its first ``blocks + stages + 1`` columns as their
        decisions, crossovers every column as coins), so a mixed batch costs a handful of
        array operations."""
        c = self.cost
        u = rng.random(first.shape, dtype=np.float32)
        nd = len(c.ranges) - c.nb  # decision columns: one per block, stage, resolution
        probs = np.full(nd, mutate_prob, dtype=np.float32)
        probs[-1] = res_mutate_prob
        mut = mutate_rows[:, None]
        out = np.where((u < 0.5) & ~mut, second, first)
        # decide on the mutants' decision columns only, then spread each block's decision
        # to its kernel and expand genes: the same draws, in the same (row-major) order
        mi = np.nonzero(mutate_rows)[0]
        hit = (u[mi, :nd] < probs)[:, c.mutation_cols]
        rows, cols = np.nonzero(hit)
        rows = mi[rows]
        out[rows, cols] = (rng.random(len(rows), dtype=np.float32)
                           * c.ranges[cols]).astype(out.dtype)
        return out

    def mutate(self, parents: np.ndarray, rng: np.random.Generator, mutate_prob: float,
               res_mutate_prob: float) -> np.ndarray:
        """Mutants of ``parents`` (see :meth:`vary`)."""
        return self.vary(parents, parents, np.ones(len(parents), bool), rng, mutate_prob,
                         res_mutate_prob)

    def crossover(self, first: np.ndarray, second: np.ndarray, rng: np.random.Generator
                  ) -> np.ndarray:
        """Uniform crossovers of row pairs (see :meth:`vary`)."""
        return self.vary(first, second, np.zeros(len(first), bool), rng, 0.0, 0.0)
