"""Arrays of archs, for scoring whole populations at once (search, predictors, LUTs)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Sequence

import numpy as np

from .arch import ArchConfig
from .space import Space, get_space

__all__ = ["ArchBatch"]


@dataclass(frozen=True)
class ArchBatch:
    """N archs of one space as integer arrays: ``ks``/``e`` (N, blocks), ``d`` (N, stages),
    ``r`` (N,), plus ``active`` (N, blocks) booleans. Skipped blocks hold the smallest choice
    (canonical form), so equal networks have equal rows."""

    space: Space
    ks: np.ndarray
    e: np.ndarray
    d: np.ndarray
    r: np.ndarray

    def __len__(self) -> int:
        return int(self.r.shape[0])

    @property
    def active(self) -> np.ndarray:
        """(N, blocks) booleans: True where a block runs under its row's stage depth."""
        pos = np.asarray(self.space.block_positions)  # position of each block in its stage
        depth = self.d[:, np.asarray(self.space.block_stages, dtype=np.intp)]  # its stage's depth
        return pos[None, :] < depth

    def canonical(self) -> "ArchBatch":
        """A copy with skipped blocks' kernel and expand set to the space's first choice (see
        :meth:`ArchConfig.canonical`)."""
        act = self.active
        ks = np.where(act, self.ks, self.space.kernel_choices[0])
        e = np.where(act, self.e, self.space.expand_choices[0])
        return ArchBatch(self.space, ks, e, self.d.copy(), self.r.copy())

    @classmethod
    def from_archs(cls, space: "Space | str", archs: Sequence[ArchConfig]) -> "ArchBatch":
        """Stack ``archs`` into canonical arrays (an empty list gives zero-row arrays of the space's
        widths); archs are not validated."""
        space = get_space(space)
        archs = list(archs)
        if not archs:
            nb, ns = space.num_blocks, space.num_stages
            z = np.zeros
            return cls(space, z((0, nb), np.int64), z((0, nb), np.int64), z((0, ns), np.int64),
                       z((0,), np.int64))
        return cls(
            space,
            np.array([a.ks for a in archs], dtype=np.int64),
            np.array([a.e for a in archs], dtype=np.int64),
            np.array([a.d for a in archs], dtype=np.int64),
            np.array([a.r for a in archs], dtype=np.int64),
        ).canonical()

    def to_archs(self) -> List[ArchConfig]:
        """One :class:`ArchConfig` per row, in order."""
        return [ArchConfig(tuple(k), tuple(e), tuple(d), int(r))
                for k, e, d, r in zip(self.ks.tolist(), self.e.tolist(), self.d.tolist(),
                                      self.r.tolist())]

    def __getitem__(self, idx) -> "ArchBatch":
        idx = np.atleast_1d(np.arange(len(self))[idx])
        return ArchBatch(self.space, self.ks[idx], self.e[idx], self.d[idx], self.r[idx])

    @classmethod
    def concat(cls, batches: Iterable["ArchBatch"]) -> "ArchBatch":
        """Rows of all ``batches`` in order; they must share one space (the first one's is kept) and
        the iterable must not be empty."""
        batches = list(batches)
        sp = batches[0].space
        return cls(sp, *(np.concatenate([getattr(b, f) for b in batches]) for f in ("ks", "e", "d", "r")))

    @classmethod
    def sample(cls, space: "Space | str", n: int, rng: np.random.Generator, *,
               resolutions: Sequence[int] | None = None) -> "ArchBatch":
        """``n`` uniform archs (fixed-depth stages take their one depth), canonical; all randomness
        comes from ``rng``, in a different order from :meth:`ArchConfig.sample`, so the two do
        not draw the same archs for one seed."""
        space = get_space(space)
        res = np.asarray(space.resolutions if resolutions is None else resolutions, dtype=np.int64)
        ks = rng.choice(np.asarray(space.kernel_choices), size=(n, space.num_blocks))
        e = rng.choice(np.asarray(space.expand_choices), size=(n, space.num_blocks))
        d = rng.choice(np.asarray(space.depth_choices), size=(n, space.num_stages))
        for s, elastic in enumerate(space.elastic_depth_stages):
            if not elastic:
                d[:, s] = space.stage_depth_choices(s)[0]
        return cls(space, ks, e, d, rng.choice(res, size=n)).canonical()

    def keys(self) -> np.ndarray:
        """One row of bytes per arch, for de-duplication (``np.unique`` on a void view)."""
        m = np.concatenate([self.ks, self.e, self.d, self.r[:, None]], axis=1).astype(np.int16)
        m = np.ascontiguousarray(m)
        return m.view(np.dtype((np.void, m.dtype.itemsize * m.shape[1]))).ravel()
