"""How an arch becomes an accuracy predictor's input: :class:`ArchEncoder` (one-hots of kernel,
expand and resolution per elastic block, in the OFA reference predictor's order) and the
predictors' shared error type."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping, Sequence, Tuple

import numpy as np

from supernet.batch import ArchBatch
from supernet.errors import OfaDeployError
from supernet.space import Space, get_space

__all__ = ["PredictorError", "ArchEncoder", "REFERENCE_RES_BINS"]

# The reference predictor's resolution encoding: 8 bins of 16 px starting at 112.
REFERENCE_RES_BINS = (112, 16, 8)


class PredictorError(OfaDeployError):
    """A predictor file that is missing, unreadable, or does not fit the space."""


# -- encoding --------------------------------------------------------------------------------
def _lookup_table(choices: Sequence[int]) -> np.ndarray:
    lut = np.full(max(choices) + 1, -1, dtype=np.int64)
    lut[list(choices)] = np.arange(len(choices))
    return lut


def _lookup(lut: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each value in the choices behind ``lut``; -1 for values that are not choices."""
    inside = (values >= 0) & (values < len(lut))
    return np.where(inside, lut[np.clip(values, 0, len(lut) - 1)], -1)


@dataclass(frozen=True)
class ArchEncoder:
    """One-hot arch features: kernel per block, then expand per block, then resolution.

    Blocks skipped by their stage depth are all zero. The resolution is one-hot either over
    an explicit list (``resolutions``) or, for the reference layout, over ``count`` bins of
    ``step`` px from ``start`` (``resolution_bins``); exactly one of the two is set.
    """

    num_stages: int
    max_depth: int
    kernel_choices: Tuple[int, ...]
    expand_choices: Tuple[int, ...]
    resolutions: Tuple[int, ...] = ()
    resolution_bins: Tuple[int, int, int] | None = None
    # blocks per stage when not every stage holds max_depth (ProxylessNAS: 4,4,4,4,4,1);
    # empty means max_depth each, and a uniform tuple is stored as empty
    stage_blocks: Tuple[int, ...] = ()

    def __post_init__(self) -> None:
        sb = tuple(int(v) for v in self.stage_blocks)
        if sb and len(sb) != self.num_stages:
            raise ValueError(f"ArchEncoder stage_blocks needs {self.num_stages} entries")
        if sb and (min(sb) < 1 or max(sb) > self.max_depth):
            raise ValueError(f"ArchEncoder stage_blocks must be in 1..{self.max_depth}")
        object.__setattr__(self, "stage_blocks",
                           () if sb == (self.max_depth,) * self.num_stages else sb)
        for name in ("kernel_choices", "expand_choices", "resolutions"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.resolution_bins is not None:
            object.__setattr__(self, "resolution_bins",
                               tuple(int(v) for v in self.resolution_bins))
        if (self.resolution_bins is None) == (not self.resolutions):
            raise ValueError("an ArchEncoder needs exactly one of resolutions or resolution_bins")
        if self.resolution_bins is not None:
            start, step, count = self.resolution_bins
            if step < 1 or count < 1:
                raise ValueError(f"bad resolution bins {self.resolution_bins}")
        for name in ("kernel_choices", "expand_choices", "resolutions"):
            vals = getattr(self, name)
            if list(vals) != sorted(set(vals)) or any(v < 0 for v in vals):
                raise ValueError(f"ArchEncoder {name} must be sorted, unique, non-negative")
        if not self.kernel_choices or not self.expand_choices:
            raise ValueError("ArchEncoder needs kernel and expand choices")
        object.__setattr__(self, "_k_lut", _lookup_table(self.kernel_choices))
        object.__setattr__(self, "_e_lut", _lookup_table(self.expand_choices))
        if self.resolutions:
            object.__setattr__(self, "_r_lut", _lookup_table(self.resolutions))

    # -- construction ------------------------------------------------------------------
    @classmethod
    def for_space(cls, space: "Space | str", resolutions: Sequence[int] | None = None
                  ) -> "ArchEncoder":
        """Our layout: resolution one-hot over ``resolutions`` (default: the space's)."""
        space = get_space(space)
        res = tuple(sorted(set(space.resolutions if resolutions is None else resolutions)))
        return cls(space.num_stages, space.max_depth, space.kernel_choices,
                   space.expand_choices, resolutions=res, stage_blocks=space.stage_block_counts)

    @classmethod
    def reference(cls) -> "ArchEncoder":
        """The OFA ImageNet predictor's 128-d layout (5 stages x 4 blocks, k357, e346, 8 bins)."""
        return cls(5, 4, (3, 5, 7), (3, 4, 6), resolution_bins=REFERENCE_RES_BINS)

    # -- facts -------------------------------------------------------------------------
    @property
    def block_counts(self) -> Tuple[int, ...]:
        """Blocks per stage."""
        return self.stage_blocks or (self.max_depth,) * self.num_stages

    @property
    def num_blocks(self) -> int:
        """Block slots the encoding has, over all stages (kernel and expand one-hots each have this
        many groups)."""
        return sum(self.block_counts)

    @property
    def num_resolution_slots(self) -> int:
        """Width of the resolution one-hot: the number of bins, or of listed resolutions."""
        return self.resolution_bins[2] if self.resolution_bins else len(self.resolutions)

    @property
    def dim(self) -> int:
        """Length of one encoded arch: a kernel and an expand one-hot per block slot plus the
        resolution one-hot."""
        nb = self.num_blocks
        return nb * len(self.kernel_choices) + nb * len(self.expand_choices) + \
            self.num_resolution_slots

    def resolution_slot(self, r) -> np.ndarray:
        """Slot of each resolution in the one-hot; -1 where it cannot be encoded."""
        r = np.asarray(r, dtype=np.int64)
        if self.resolution_bins is not None:
            start, step, count = self.resolution_bins
            off = r - start
            slot = np.where(off >= 0, off // step, -1)
            return np.where(slot < count, slot, -1)
        return _lookup(self._r_lut, r)

    def unsupported_resolutions(self, resolutions: Sequence[int]) -> List[int]:
        """The sorted, distinct ``resolutions`` this encoding has no slot for (empty when it covers
        them all)."""
        res = np.asarray(list(resolutions), dtype=np.int64)
        return sorted(set(res[self.resolution_slot(res) < 0].tolist()))

    def describe_resolutions(self) -> str:
        """The resolutions it encodes, for error messages: the listed values, or the bins' range and
        step."""
        if self.resolution_bins is not None:
            start, step, count = self.resolution_bins
            return f"{start}..{start + step * count - 1} in {count} bins of {step} px"
        return ", ".join(map(str, self.resolutions))

    def check_space(self, space: "Space | str") -> None:
        """Raise :class:`PredictorError` unless ``space``'s archs have this encoding's shape."""
        space = get_space(space)
        want = (self.block_counts, self.kernel_choices, self.expand_choices)
        have = (tuple(space.stage_block_counts), tuple(space.kernel_choices),
                tuple(space.expand_choices))
        if want != have:
            raise PredictorError(
                f"predictor encodes {len(want[0])} stages of {'/'.join(map(str, want[0]))} "
                f"blocks, kernels {list(self.kernel_choices)}, expands "
                f"{list(self.expand_choices)}; space {space.name} has {len(have[0])} stages of "
                f"{'/'.join(map(str, have[0]))}, {list(have[1])}, {list(have[2])}")

    # -- encoding ----------------------------------------------------------------------
    def encode(self, batch: ArchBatch) -> np.ndarray:
        """Features of every arch in ``batch`` as a float32 array ``(N, dim)``."""
        ks, e, d, r = batch.ks, batch.e, batch.d, batch.r
        n, nb = ks.shape
        if nb != self.num_blocks or d.shape[1] != self.num_stages:
            raise PredictorError(f"archs have {nb} blocks and {d.shape[1]} stages; the "
                                 f"predictor encodes {self.num_blocks} blocks and "
                                 f"{self.num_stages} stages")
        counts = self.block_counts
        pos = np.concatenate([np.arange(n) for n in counts])
        active = pos[None, :] < np.repeat(d, counts, axis=1)
        ki, ei = _lookup(self._k_lut, ks), _lookup(self._e_lut, e)
        bad = active & ((ki < 0) | (ei < 0))
        if bad.any():
            row, blk = (int(v[0]) for v in np.nonzero(bad))
            raise PredictorError(
                f"arch #{row} block {blk}: kernel {int(ks[row, blk])} / expand "
                f"{int(e[row, blk])} not among the predictor's choices "
                f"{list(self.kernel_choices)} / {list(self.expand_choices)}")
        slot = self.resolution_slot(r)
        if (slot < 0).any():
            bad_r = sorted(set(r[slot < 0].tolist()))
            raise PredictorError(f"resolution(s) {bad_r} cannot be encoded by the predictor "
                                 f"(it covers {self.describe_resolutions()})")
        return np.ascontiguousarray(self.encode_indices(ki, ei, active, slot))

    def encode_indices(self, ki: np.ndarray, ei: np.ndarray, active: np.ndarray,
                       slot: np.ndarray) -> np.ndarray:
        """Features from choice indices (``ki``/``ei`` (N, blocks) into the kernel/expand
        choices, ``active`` (N, blocks), ``slot`` (N,) from :meth:`resolution_slot`); the fast
        path for callers that already hold indices, such as the search. The result may be a
        strided view (rows one float apart from contiguous); :meth:`encode` makes it contiguous."""
        n, nb = ki.shape
        nk, ne = len(self.kernel_choices), len(self.expand_choices)
        dim = self.dim
        # one scatter into rows with a spare last column: skipped blocks (which may hold any
        # value; the reference writes 0) point at the spare, so they can never set or clear a
        # real feature; the result is a view without it (2-3x faster than three scatters)
        x = np.zeros((n, dim + 1), dtype=np.float32)
        cols = np.empty((n, 2 * nb + 1), dtype=np.intp)
        cols[:, :nb] = np.where(active, np.arange(nb) * nk + ki, dim)
        cols[:, nb:2 * nb] = np.where(active, nb * nk + np.arange(nb) * ne + ei, dim)
        cols[:, -1] = nb * (nk + ne) + np.asarray(slot)
        cols += (np.arange(n) * (dim + 1))[:, None]
        x.reshape(-1)[cols] = 1.0
        return x[:, :dim]

    # -- state -------------------------------------------------------------------------
    def get_state(self) -> dict:
        """JSON-ready dict of the layout; :meth:`from_state` rebuilds an equal encoder from it."""
        return {
            "num_stages": self.num_stages,
            "max_depth": self.max_depth,
            "kernel_choices": list(self.kernel_choices),
            "expand_choices": list(self.expand_choices),
            "resolutions": list(self.resolutions),
            "resolution_bins": None if self.resolution_bins is None else
            list(self.resolution_bins),
            **({"stage_blocks": list(self.stage_blocks)} if self.stage_blocks else {}),
        }

    @classmethod
    def from_state(cls, state: Mapping) -> "ArchEncoder":
        """Rebuild from :meth:`get_state`'s dict; raises :class:`PredictorError` for unknown,
        missing or malformed fields."""
        known = {"num_stages", "max_depth", "kernel_choices", "expand_choices", "resolutions",
                 "resolution_bins", "stage_blocks"}
        unknown = sorted(set(state) - known)
        if unknown:
            raise PredictorError(f"unknown encoder fields: {', '.join(unknown)}")
        try:
            bins = state.get("resolution_bins")
            return cls(int(state["num_stages"]), int(state["max_depth"]),
                       tuple(state["kernel_choices"]), tuple(state["expand_choices"]),
                       resolutions=tuple(state.get("resolutions") or ()),
                       resolution_bins=None if bins is None else tuple(bins),
                       stage_blocks=tuple(state.get("stage_blocks") or ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise PredictorError(f"bad encoder state: {exc}") from None


# -- metrics ---------------------------------------------------------------------------------
