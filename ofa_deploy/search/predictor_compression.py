"""Exact compression of an MLP accuracy predictor over the archs a search can score.

A one-hot arch encoding makes every linear function of the features a sum of one weight per
active choice, so its exact minimum and maximum over the whole search space are sums of
per-block minima/maxima (:class:`OneHotDomain`; a block beyond its stage's depth is all
zeros, which is one more option where the depth allows). From these bounds:

- a ReLU unit whose pre-activation is ``<= 0`` for every arch is *dead*: dropped;
- one whose pre-activation is ``>= 0`` for every arch is *linear*: ``relu(z) = z``, so it is
  folded into the next layer exactly (``W2[:, A] @ W1[A, :]`` becomes a direct term from the
  first layer's inputs, ``W2[:, A] @ b1[A]`` goes into the bias) where that takes fewer
  weights than keeping the units (a direct term is dense: next layer x this layer's inputs).

Bounds of the first layer are exact; later layers get sound but looser ones, from the
better of plain interval arithmetic and a linear back-substitution to the inputs (CROWN-style
ReLU relaxations), whose resulting linear function of the features is again bounded exactly
over the domain. Every removal is proved, so the compressed network computes the same
function on the domain (up to float32 rounding of a different summation order), and
:func:`compress_predictor` checks that on probe archs before it is used. When nothing can be
removed (the OFA reference predictor: its units all change sign over the space) or the
compressed network is not cheaper, the plain predictor is kept.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import hashlib
import weakref
from typing import Dict, List, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class OneHotDomain:
    """The feature vectors a search can produce, as a product of independent parts.

    ``fixed_groups``: column groups of which exactly one column is 1 (e.g. the resolution
    slots the search scores). ``stages``: ``(blocks, depths)`` pairs; each block is a list of
    column groups (kernel, expand) and an active block sets exactly one column of each of its
    groups; with depth ``d`` the first ``d`` blocks of the stage are active, the rest all zero.
    Columns in no group are always 0."""

    dim: int
    fixed_groups: Tuple[Tuple[int, ...], ...]
    stages: Tuple[Tuple[Tuple[Tuple[Tuple[int, ...], ...], ...], Tuple[int, ...]], ...]

    def linear_max(self, c: np.ndarray) -> np.ndarray:
        """Exact ``max over the domain of c @ x`` for each row of ``c`` ``(m, dim)``."""
        c = np.asarray(c, dtype=np.float64)
        out = np.zeros(c.shape[0])
        for g in self.fixed_groups:
            out += c[:, list(g)].max(axis=1)
        for blocks, depths in self.stages:
            prefix = [np.zeros(c.shape[0])]
            for groups in blocks:
                prefix.append(prefix[-1] + sum(c[:, list(g)].max(axis=1) for g in groups))
            out += np.max([prefix[d] for d in depths], axis=0)
        return out

    def linear_min(self, c: np.ndarray) -> np.ndarray:
        """Exact ``min over the domain of c @ x`` for each row of ``c``."""
        return -self.linear_max(-np.asarray(c, dtype=np.float64))

    def extremes(self, c: np.ndarray) -> np.ndarray:
        """``(2 * m, dim)`` feature rows: for each row of ``c``, an arch reaching its minimum,
        then one reaching its maximum (probe points for checking a compression)."""
        c = np.asarray(c, dtype=np.float64)
        rows = []
        for sign in (-1.0, 1.0):
            for ci in sign * c:
                x = np.zeros(self.dim, dtype=np.float32)
                for g in self.fixed_groups:
                    x[g[int(np.argmax(ci[list(g)]))]] = 1.0
                for blocks, depths in self.stages:
                    gains = [0.0]
                    for groups in blocks:
                        gains.append(gains[-1] + sum(ci[list(g)].max() for g in groups))
                    d = max(depths, key=lambda v: gains[v])
                    for groups in blocks[:d]:
                        for g in groups:
                            x[g[int(np.argmax(ci[list(g)]))]] = 1.0
                rows.append(x)
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)


def _relu_relaxation(lo: np.ndarray, hi: np.ndarray):
    """Slopes/intercepts of linear upper and lower bounds of ``relu(z)`` on ``[lo, hi]``."""
    dead, lin = hi <= 0, lo >= 0
    mixed = ~dead & ~lin
    up_s = np.where(lin, 1.0, 0.0)
    up_b = np.zeros_like(lo)
    span = np.where(mixed, hi - lo, 1.0)
    up_s = np.where(mixed, hi / span, up_s)
    up_b = np.where(mixed, -hi * lo / span, up_b)
    lo_s = np.where(lin, 1.0, np.where(mixed & (hi >= -lo), 1.0, 0.0))
    return up_s, up_b, lo_s


def _provable(bounds) -> bool:
    return any(bool((hi <= 0).any() or (lo >= 0).any()) for lo, hi in bounds)


def layer_bounds(layers: Sequence[Tuple[np.ndarray, np.ndarray]], domain: OneHotDomain, *,
                 back_substitute: bool = True) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Sound ``(lo, hi)`` of every hidden layer's pre-activation over ``domain`` (exact for
    the first layer); ``layers`` are ``(weight (out, in), bias (out,))``, the last one the
    output (no ReLU, no bounds returned for it). Without ``back_substitute``, plain interval
    arithmetic after the first layer (~20x cheaper, looser)."""
    w0, b0 = (np.asarray(v, dtype=np.float64) for v in layers[0])
    bounds = [(b0 + domain.linear_min(w0), b0 + domain.linear_max(w0))]
    for k in range(1, len(layers) - 1):
        w, b = (np.asarray(v, dtype=np.float64) for v in layers[k])
        lo, hi = bounds[-1]
        rlo, rhi = np.maximum(lo, 0), np.maximum(hi, 0)
        wp, wn = np.maximum(w, 0), np.minimum(w, 0)
        ilo, ihi = b + wp @ rlo + wn @ rhi, b + wp @ rhi + wn @ rlo
        if not back_substitute:
            bounds.append((ilo, ihi))
            continue
        # back-substitution: upper bound of +w (and of -w, for the lower bound) as a linear
        # function of the inputs, relaxing each earlier ReLU by its own bounds
        both = np.concatenate([w, -w])
        const = np.concatenate([b, -b])
        lam = both
        for j in range(k - 1, -1, -1):
            up_s, up_b, lo_s = _relu_relaxation(*bounds[j])
            pos, neg = np.maximum(lam, 0), np.minimum(lam, 0)
            const = const + pos @ up_b
            lam = pos * up_s + neg * lo_s
            wj, bj = (np.asarray(v, dtype=np.float64) for v in layers[j])
            const = const + lam @ bj
            lam = lam @ wj
        top = const + domain.linear_max(lam)
        m = len(b)
        bounds.append((np.maximum(ilo, -top[m:]), np.minimum(ihi, top[:m])))
    return bounds


@dataclass
class CompressedMLP:
    """An MLP rewritten with dead units dropped and linear units folded: layer ``k``'s
    pre-activation is ``bias[k] + sum_i h_i @ terms[k][i].T`` over earlier layers' outputs
    ``h_i`` (``h_0`` the features); the last layer is the scalar output, then
    ``* scale + offset``. ``report`` counts, per hidden layer, the units kept, dropped as
    dead, proved linear and folded (the linear ones, where folding is cheaper)."""

    biases: List[np.ndarray]
    terms: List[Dict[int, np.ndarray]]
    scale: float
    offset: float
    report: List[dict] = field(default_factory=list)
    _plan: list = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        # one matmul per source layer: its products for every later layer at once
        n = len(self.biases)
        self._plan = []
        for i in range(n):
            users = [k for k in range(i + 1, n + 1) if i in self.terms[k - 1]] if i < n else []
            if not users:
                self._plan.append(None)
                continue
            mats = [self.terms[k - 1][i] for k in users]
            cut = np.cumsum([0] + [m.shape[0] for m in mats])
            self._plan.append((users, np.ascontiguousarray(np.concatenate(mats).T,
                                                           dtype=np.float32), cut))

    @property
    def flops_per_row(self) -> int:
        """Multiply-adds per scored row."""
        return int(sum(p[1].size for p in self._plan if p is not None))

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """The predictor's output for feature rows ``x`` ``(N, dim)``."""
        n_layers = len(self.biases)
        acc: List[np.ndarray | None] = [None] * n_layers
        h = np.asarray(x, dtype=np.float32)
        for i in range(n_layers):
            plan = self._plan[i]
            if plan is not None:
                users, mat, cut = plan
                prod = h @ mat
                for j, k in enumerate(users):
                    part = prod[:, cut[j]:cut[j + 1]]
                    acc[k - 1] = part if acc[k - 1] is None else acc[k - 1] + part
            z = acc[i]
            if z is None:
                z = np.zeros((len(x), len(self.biases[i])), dtype=np.float32)
            z = z + self.biases[i]
            if i == n_layers - 1:
                return z.reshape(-1).astype(np.float64) * self.scale + self.offset
            h = np.maximum(z, 0.0)
        raise AssertionError("unreachable")


def compress_mlp(layers: Sequence[Tuple[np.ndarray, np.ndarray]], domain: OneHotDomain,
                 scale: float = 1.0, offset: float = 0.0, *, thorough: bool = True
                 ) -> CompressedMLP:
    """Drop the provably dead and fold the provably linear ReLU units of ``layers`` (see the
    module docstring). The arithmetic is float64, the result float32. With ``thorough=False``
    the back-substitution bounds (the costly part, ~40 ms for 3 x 400 units) are computed
    only if the cheap ones (exact first layer, intervals after) already prove some unit, so
    that a search does not pay for them on a predictor where nothing is removable (on the OFA
    reference predictor neither kind proves any unit)."""
    bounds = layer_bounds(layers, domain, back_substitute=False)
    if thorough or _provable(bounds):
        bounds = layer_bounds(layers, domain)
    n = len(layers)
    # terms[k][i]: weight from layer i's output (0: features) into layer k+1's pre-activation
    terms: List[Dict[int, np.ndarray]] = [
        {k: np.asarray(layers[k][0], dtype=np.float64)} for k in range(n)]
    biases = [np.asarray(b, dtype=np.float64).copy() for _, b in layers]
    report = []
    for k in range(n - 1):
        lo, hi = bounds[k]
        dead, lin = hi <= 0, (lo >= 0) & ~(hi <= 0)
        nxt = terms[k + 1]
        # folding trades the linear units' rows and columns for direct terms from this
        # layer's inputs into the next layer: only worth it if those are fewer weights
        n_out = len(biases[k + 1])
        saved = int(lin.sum()) * (sum(m.shape[1] for m in terms[k].values()) + n_out)
        added = sum(n_out * m.shape[1] for src, m in terms[k].items() if src not in nxt)
        proved = int(lin.sum())
        if added >= saved:
            lin = np.zeros_like(lin)
        keep = ~dead & ~lin
        w_next = nxt.pop(k + 1)  # columns: layer k's units (source index k + 1)
        if lin.any():
            wa = w_next[:, lin]
            biases[k + 1] += wa @ biases[k][lin]
            for src, m in terms[k].items():
                folded = wa @ m[lin]
                nxt[src] = nxt[src] + folded if src in nxt else folded
        if keep.any():
            nxt[k + 1] = w_next[:, keep]
            terms[k] = {src: m[keep] for src, m in terms[k].items()}
            biases[k] = biases[k][keep]
        else:  # the layer is gone: nothing reads it
            terms[k] = {}
            biases[k] = biases[k][:0]
        report.append({"units": int(len(lo)), "kept": int(keep.sum()),
                       "dead": int(dead.sum()), "linear": proved, "folded": int(lin.sum())})
    terms = [{src: m.astype(np.float32) for src, m in t.items() if np.any(m)} for t in terms]
    return CompressedMLP([b.astype(np.float32) for b in biases], terms, float(scale),
                         float(offset), report)


def encoder_domain(encoder, cost) -> OneHotDomain | None:
    """The :class:`OneHotDomain` of the features the search's fast path builds (see
    ``_Problem.score``) for the cost model ``cost``'s space and resolutions, or None if the
    encoder's layout is not the one-hot kernel / expand / resolution layout it knows."""
    slot_of = getattr(encoder, "resolution_slot", None)
    if slot_of is None or getattr(encoder, "num_blocks", None) != cost.nb:
        return None
    nb, nk, ne = cost.nb, cost.n_kernels, cost.n_expands
    if getattr(encoder, "dim", None) != nb * (nk + ne) + encoder.num_resolution_slots:
        return None
    slots = np.asarray(slot_of(cost.res_values))
    if (slots < 0).any():
        return None
    res = tuple(sorted({int(nb * (nk + ne) + s) for s in slots.tolist()}))
    stages = []
    for s in range(cost.ns):
        blocks_of = np.nonzero(cost.stage_of_block == s)[0]
        blocks_of = blocks_of[np.argsort(cost.pos[blocks_of])]
        blocks = tuple((tuple(int(b * nk + i) for i in range(nk)),
                        tuple(int(nb * nk + b * ne + i) for i in range(ne))) for b in blocks_of)
        depths = tuple(sorted({int(d) for d in cost.stage_depths[s][:int(cost.ranges[cost.depth_genes][s])]}))
        stages.append((blocks, depths))
    return OneHotDomain(int(encoder.dim), (res,), tuple(stages))


def compress_predictor(predictor, cost, *, probes: int = 2048, seed: int = 0,
                       tol: float = 1e-4, thorough: bool = True):
    """A :class:`CompressedMLP` equal to ``predictor.predict_features`` on every arch of
    ``cost``'s space and resolutions, or None (keep the plain predictor): the predictor is no
    plain ReLU MLP over a known one-hot layout (it needs ``weights()``, ``target_std``,
    ``target_mean`` and an ``encoder``), nothing could be proved removable, the result is not
    cheaper, or it differs by more than ``tol`` on probe archs (random ones and each first-
    layer unit's extreme archs). ``thorough``: see :func:`compress_mlp`."""
    weights = getattr(predictor, "weights", None)
    enc = getattr(predictor, "encoder", None)
    if not callable(weights) or enc is None or not callable(getattr(predictor, "predict_features", None)):
        return None
    try:
        layers = [(np.asarray(w), np.asarray(b)) for w, b in weights()]
        scale, offset = float(predictor.target_std), float(predictor.target_mean)
    except (AttributeError, TypeError, ValueError):
        return None
    if len(layers) < 2 or layers[-1][0].shape[0] != 1:
        return None
    domain = encoder_domain(enc, cost)
    if domain is None or layers[0][0].shape[1] != domain.dim:
        return None
    comp = compress_mlp(layers, domain, scale, offset, thorough=thorough)
    if not any(r["dead"] or r["folded"] for r in comp.report):
        return None
    if comp.flops_per_row >= sum(w.size for w, _ in layers):
        return None
    x = np.concatenate([random_features(domain, probes, np.random.default_rng(seed)),
                        domain.extremes(layers[0][0])])
    if np.max(np.abs(comp.predict_features(x) - predictor.predict_features(x))) > tol:
        return None
    return comp


def random_features(domain: OneHotDomain, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random feature rows of ``domain`` (each group's column and each stage's depth
    uniform)."""
    x = np.zeros((n, domain.dim), dtype=np.float32)
    rows = np.arange(n)
    for g in domain.fixed_groups:
        x[rows, np.asarray(g)[rng.integers(len(g), size=n)]] = 1.0
    for blocks, depths in domain.stages:
        d = np.asarray(depths)[rng.integers(len(depths), size=n)]
        for pos, groups in enumerate(blocks):
            on = rows[d > pos]
            for g in groups:
                x[on, np.asarray(g)[rng.integers(len(g), size=len(on))]] = 1.0
    return x


_MEMO: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # predictor -> {key: result}


def search_scorer(predictor, cost):
    """``predict_features`` for the search's fast path: a :class:`CompressedMLP` when
    :func:`compress_predictor` (not ``thorough``) finds one, else the predictor's own.
    Memoised per predictor object, its current weights and the domain, so that repeated
    searches (a front, a benchmark) pay for the bounds once."""
    try:
        layers = predictor.weights()
        h = hashlib.blake2b(digest_size=16)
        for w, b in layers:
            h.update(np.ascontiguousarray(w).tobytes())
            h.update(np.ascontiguousarray(b).tobytes())
        h.update(repr((float(predictor.target_std), float(predictor.target_mean))).encode())
        key = (h.hexdigest(), encoder_domain(predictor.encoder, cost))
        memo = _MEMO.setdefault(predictor, {})
    except (AttributeError, TypeError, ValueError):
        return predictor.predict_features
    if key not in memo:
        memo[key] = compress_predictor(predictor, cost, thorough=False)
    comp = memo[key]
    return predictor.predict_features if comp is None else comp.predict_features
