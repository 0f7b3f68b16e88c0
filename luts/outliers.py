"""Suspect table entries: ops whose time does not fit the same op at the other resolutions.

An op of a given shape (kind, channels, kernel, stride, SE, activation) appears in a table
once per input size ``h`` (one per resolution). Its work grows with the number of pixels, so
across resolutions its time follows ``a + b * h**2`` closely (``a``: the per-call and
per-weight cost, ``b``: the per-pixel cost). An entry far *above* that curve fitted on the
other resolutions is, far more often than not, an entry timed while the machine was slow in
every one of its rounds. Measured on the six fresh ``ofa-mbv3-tiny`` tables of
benchmarks/latency_contract (2026-12-03; three fp32, three int8, each compared with the
median of its three builds): of the entries more than 15% above that median, 65 of 126, 0 of
0, 8 of 11, 7 of 8, 39 of 49 and 39 of 48 sat more than 15% above their leave-one-out curve,
while 3-26 entries per table were flagged without being off. Re-timing a flagged entry is
harmless when it was right: more rounds under the lowest-round-median estimator move a
correct entry by about the spread of its round medians (1-3%).

Only entries above the curve are flagged: re-timing can lower an entry that a slow spell
raised, but an entry below its curve (a fast kernel at one size, or a context model timed
slow) is not made more right by more rounds of the op.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Tuple

import numpy as np

from supernet.ops import OpKey

__all__ = ["suspect_entries", "MIN_SIZES", "DEFAULT_THRESHOLD", "MIN_EXCESS_MS"]

# At least this many input sizes of one op shape: with fewer, a leave-one-out fit of two
# parameters has no spare point to tell an outlier from the curve.
MIN_SIZES = 4
# How far above its curve (relative) an entry must sit to be re-timed.
DEFAULT_THRESHOLD = 0.15
# ... and by how much in absolute terms: a few microseconds are within the timer's noise.
MIN_EXCESS_MS = 0.002


def _shape_groups(entries: Mapping[OpKey, float]) -> Dict[OpKey, List[Tuple[int, OpKey]]]:
    groups: Dict[OpKey, List[Tuple[int, OpKey]]] = {}
    for op in entries:
        groups.setdefault(dataclasses.replace(op, h=0), []).append((op.h, op))
    return groups


def suspect_entries(entries: Mapping[OpKey, float], *, threshold: float = DEFAULT_THRESHOLD,
                    min_excess_ms: float = MIN_EXCESS_MS) -> Dict[OpKey, float]:
    """Entries (op -> latency ms) more than ``threshold`` (relative) and ``min_excess_ms``
    above ``a + b * h**2`` fitted by least squares on the same op shape at its other input
    sizes (shapes with fewer than :data:`MIN_SIZES` sizes are skipped). Returns op -> how far
    above its curve it sits (0.2 = 20%), worst first."""
    out: Dict[OpKey, float] = {}
    for members in _shape_groups(entries).values():
        if len({h for h, _ in members}) < MIN_SIZES:
            continue
        members.sort(key=lambda m: m[0])
        h = np.array([m[0] for m in members], float)
        y = np.array([float(entries[m[1]]) for m in members])
        X = np.stack([np.ones_like(h), h * h], axis=1)
        for i, (_, op) in enumerate(members):
            keep = np.arange(len(members)) != i
            coef, *_ = np.linalg.lstsq(X[keep], y[keep], rcond=None)
            fit = float(X[i] @ coef)
            if fit <= 0:
                continue
            excess = y[i] - fit
            if excess > min_excess_ms and excess / fit > threshold:
                out[op] = excess / fit
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0].to_string())))
