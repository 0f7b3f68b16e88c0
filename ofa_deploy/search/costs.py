"""Cost model: latency / MACs / params of whole populations held as gene matrices."""
from __future__ import annotations

import functools
from typing import List, Sequence, Tuple

import numpy as np

from supernet.batch import ArchBatch
from supernet.ops import OpGrid
from supernet.space import Space, get_space

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
        self.kernel_values = np.asarray(sp.kernel_choices, dtype=np.int64)
        self.expand_values = np.asarray(sp.expand_choices, dtype=np.int64)
        self.depth_values = np.asarray(sp.depth_choices, dtype=np.int64)
        self.res_values = np.asarray(self.resolutions, dtype=np.int64)
        nb, ns, md = sp.num_blocks, sp.num_stages, sp.max_depth
        self.nb, self.ns, self.md = nb, ns, md
        self.n_kernels, self.n_expands = len(self.kernel_values), len(self.expand_values)
        self.n_depths, self.n_res = len(self.depth_values), len(self.res_values)
        # gene matrix layout
        self.kernel_genes, self.expand_genes = slice(0, nb), slice(nb, 2 * nb)
        self.depth_genes, self.res_gene = slice(2 * nb, 2 * nb + ns), 2 * nb + ns
        self.width = 2 * nb + ns + 1
        # genes are small indices: int8 keeps the population arrays 8x smaller than int64,
        # which is most of the cost of gathering and mixing them
        widest = max(self.n_kernels, self.n_expands, self.n_depths, self.n_res)
        self.dtype = np.int8 if widest <= 127 else np.int16
        # a stage of fixed depth (ProxylessNAS's last) has one depth gene value, index 0
        elastic = np.asarray(sp.elastic_depth_stages)
        self.ranges = np.array([self.n_kernels] * nb + [self.n_expands] * nb
                               + np.where(elastic, self.n_depths, 1).tolist() + [self.n_res])
        # depth of each stage for each depth gene value (fixed stages: their block count)
        self.stage_depths = np.where(elastic[:, None], self.depth_values[None, :],
                                     np.asarray(sp.stage_block_counts)[:, None])
        # which mutation draw (block, stage, resolution) decides each gene
        self.mutation_cols = np.r_[np.arange(nb), np.arange(nb), nb + np.arange(ns), nb + ns]
        self.pos = np.asarray(sp.block_positions)
        self.stage_of_block = np.asarray(sp.block_stages)
        self.table = latency_table
        nr = self.n_res
        fixed = np.zeros((nr, 3))
        blocks = np.zeros((nr, nb, self.n_kernels * self.n_expands, 3))
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
        ke = self.n_kernels * self.n_expands
        self._flat = [np.append(blocks[..., q].ravel(), 0.0) for q in range(3)]
        self._zero = nr * nb * ke
        self._block_off = np.arange(nb) * ke
        self._row_stride = nb * ke
        self._dcols = 2 * nb + self.stage_of_block  # depth gene of each block's stage
        # whether block b runs at depth gene value v: entry b * n_depths + v, so that
        # active() is one gather (3-5x faster than indexing stage_depths by two arrays)
        self._act_flat = (self.stage_depths[self.stage_of_block] > self.pos[:, None]).ravel()
        self._act_off = np.arange(nb) * self.stage_depths.shape[1]
        # fixed odd multipliers for keys(): a deterministic hash, the same in every run
        mult = np.random.default_rng(0x0FA).integers(1, 2**63, size=self.width + 1,
                                                      dtype=np.uint64) | np.uint64(1)
        self._hash_mult, self._hash_extra = mult[:-1], mult[-1]

    @property
    def has_latency(self) -> bool:
        """Whether latency can be priced (a latency table was given)."""
        return self.table is not None

    # -- gene matrices -----------------------------------------------------------------
    def active(self, genes: np.ndarray) -> np.ndarray:
        """``(N, blocks)`` mask of the blocks each arch runs (its stage's depth reaches them)."""
        return self._act_flat[genes[:, self._dcols] + self._act_off]

    def costs(self, genes: np.ndarray, quantities: Sequence[int] = (0, 1, 2)) -> np.ndarray:
        """``(N, len(quantities))`` of latency ms (NaN without a table), MACs, params."""
        r = genes[:, self.res_gene].astype(np.intp)
        idx = (r[:, None] * self._row_stride + self._block_off
               + genes[:, self.kernel_genes].astype(np.intp) * self.n_expands + genes[:, self.expand_genes])
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
        """Copy of ``genes`` with skipped blocks' kernel/expand set to index 0."""
        act = self.active(genes)
        out = genes.copy()
        out[:, self.kernel_genes] *= act
        out[:, self.expand_genes] *= act
        return out

    def batch(self, genes: np.ndarray) -> ArchBatch:
        """Canonical :class:`ArchBatch` (skipped blocks hold the smallest choice)."""
        c = self.canonical(genes)
        return ArchBatch(self.space, self.kernel_values[c[:, self.kernel_genes]], self.expand_values[c[:, self.expand_genes]],
                         self.stage_depths[np.arange(self.ns), c[:, self.depth_genes]],
                         self.res_values[c[:, self.res_gene]])

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
        mask = self.pos < self.stage_depths.min(axis=1)[self.stage_of_block]
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
        return np.concatenate([best // self.n_expands, best % self.n_expands, np.zeros(self.ns, np.int64),
                               [ri]])[None, :].astype(self.dtype)
