"""Rank statistics shared by the packages (scipy is not a dependency)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["kendall_tau"]

# Rows of the pairwise sign matrix computed at once: bounds memory to ~2M entries per block
# (a few tens of MB) whatever the sample count.
_BLOCK_ENTRIES = 2_000_000


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two equally long score vectors: the rank agreement of, e.g., predicted
    and measured latencies, with ties in either vector handled as scipy's ``kendalltau`` does.

    NaN when it is undefined: fewer than two points, or either vector constant (no untied
    pair). Vectors of different lengths raise ``ValueError``. Exact, in O(n^2) time and
    bounded memory (n of a few thousand takes well under a second)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"kendall_tau needs two vectors of the same length "
                         f"(got {x.size} and {y.size})")
    n = x.size
    if n < 2:
        return float("nan")
    score = 0.0   # concordant minus discordant pairs
    tied_x = tied_y = 0.0
    rows = max(1, _BLOCK_ENTRIES // n)
    cols = np.arange(n)
    for start in range(0, n - 1, rows):
        stop = min(n - 1, start + rows)
        upper = cols[None, :] > np.arange(start, stop)[:, None]  # each unordered pair once
        sx = np.sign(x[start:stop, None] - x[None, :])[upper]
        sy = np.sign(y[start:stop, None] - y[None, :])[upper]
        score += float((sx * sy).sum())
        tied_x += float((sx == 0).sum())
        tied_y += float((sy == 0).sum())
    pairs = n * (n - 1) / 2
    denom = (pairs - tied_x) * (pairs - tied_y)
    return score / math.sqrt(denom) if denom > 0 else float("nan")
