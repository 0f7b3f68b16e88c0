"""Accuracy predictors: an arch encoding and a small MLP that maps it to top-1 accuracy.

Two file formats are read:

* ``ofa-reference``: the OFA authors' ImageNet predictor (``acc_predictor.pth``), a plain
  ``state_dict`` of an MLP whose Linear layers sit at even indices (``0.*``, ``2.*``, ...).
  Its 128-d input is, in order: per elastic block a one-hot of the kernel over (3, 5, 7),
  then per block a one-hot of the expand ratio over (3, 4, 6) (skipped blocks all zero in
  both), then a one-hot of the resolution over 8 bins, ``bin = (r - 112) // 16``. Output is
  top-1 accuracy as a fraction.
* ``ofa-deploy``: our own ``torch.save`` dict with ``format``/``version``, the encoder's state,
  the hidden sizes, the target normalisation and the weights; or the same content as a numpy
  ``.npz`` (the weights as arrays, the rest as one JSON string), which loads without torch.

Both are served by :class:`AccuracyPredictor`, whose :meth:`~AccuracyPredictor.predict`
scores a whole :class:`~supernet.batch.ArchBatch` with one forward pass, in numpy (float32,
the same arithmetic as torch's): torch is imported only to train (:meth:`~AccuracyPredictor.fit`),
to read or write a torch file, or when :attr:`~AccuracyPredictor.model` is asked for.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from supernet.arch import ArchConfig
from supernet.batch import ArchBatch
from supernet.errors import OfaDeployError, first_line
from supernet.space import Space, get_space
from supernet.stats import kendall_tau

__all__ = [
    "PredictorError",
    "ArchEncoder",
    "AccuracyPredictor",
    "FitReport",
    "kendall_tau",
    "load_predictor",
    "bundled_predictor_path",
    "write_npz_twin",
    "PREDICTOR_FORMAT",
    "PREDICTOR_VERSION",
    "FORMATS",
]

PREDICTOR_FORMAT = "ofa-deploy-accuracy-predictor"
PREDICTOR_VERSION = 1
FORMATS = ("auto", "ofa-reference", "ofa-deploy")

# The reference predictor's resolution encoding: 8 bins of 16 px starting at 112.
REFERENCE_RES_BINS = (112, 16, 8)
# Predictors shipped with the package, by space name (file names under ofa_deploy/assets/).
BUNDLED_PREDICTORS: Dict[str, str] = {
    "ofa-mbv3-w1.2": "ofa-mbv3-w1.2-imagenet-acc-predictor.pth",
    # trained on the bundled default supernet (see assets/README.md for the exact commands)
    "ofa-mbv3-tiny": "ofa-mbv3-tiny-fmnist-acc-predictor.pt",
}


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
        return self.encode_indices(ki, ei, active, slot)

    def encode_indices(self, ki: np.ndarray, ei: np.ndarray, active: np.ndarray,
                       slot: np.ndarray) -> np.ndarray:
        """Features from choice indices (``ki``/``ei`` (N, blocks) into the kernel/expand
        choices, ``active`` (N, blocks), ``slot`` (N,) from :meth:`resolution_slot`); the fast
        path for callers that already hold indices, such as the search."""
        n, nb = ki.shape
        nk, ne = len(self.kernel_choices), len(self.expand_choices)
        x = np.zeros((n, self.dim), dtype=np.float32)
        rows = np.arange(n)[:, None]
        blocks = np.arange(nb)[None, :]
        # skipped blocks may hold any value (the reference writes 0): point them at a valid
        # column and write 0 there, so they can never clear a neighbour's one
        x[rows, blocks * nk + np.where(active, ki, 0)] = active
        x[rows, nb * nk + blocks * ne + np.where(active, ei, 0)] = active
        x[rows[:, 0], nb * (nk + ne) + slot] = 1.0
        return x

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
@dataclass
class FitReport:
    """What :meth:`AccuracyPredictor.fit` achieved (RMSE in accuracy units, i.e. fractions)."""

    n_train: int
    n_val: int
    epochs: int
    best_epoch: int
    train_rmse: float
    val_rmse: float
    kendall_tau: float
    seconds: float

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return asdict(self)


# -- the predictor ---------------------------------------------------------------------------
def _torch():
    """torch, imported on first need: prediction and ``.npz`` files work without it."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency, but optional at run time
        raise PredictorError("this needs torch (training, or reading/writing a torch predictor "
                             "file); the .npz predictors run without it") from None
    return torch


def _mlp(in_dim: int, hidden: Sequence[int]):
    """Linear/ReLU stack ending in one output; Linear layers at even indices, like the
    reference, so its state_dict keys load unchanged."""
    nn = _torch().nn
    layers = []
    prev = in_dim
    for h in hidden:
        layers += [nn.Linear(prev, h), nn.ReLU()]
        prev = h
    layers.append(nn.Linear(prev, 1))
    return nn.Sequential(*layers)


def _init_mlp(model, seed: int) -> None:
    """PyTorch's default Linear init bounds, drawn from a seeded generator instead of the
    global RNG so that two fits with one seed start from the same weights."""
    torch = _torch()
    nn = torch.nn
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.in_features)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 2 * bound - bound)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 2 * bound - bound)


def _as_batch(space: Space | None, archs) -> ArchBatch:
    if isinstance(archs, ArchBatch):
        return archs
    archs = list(archs)
    if space is None:
        raise PredictorError("this predictor has no space; pass an ArchBatch")
    return ArchBatch.from_archs(space, archs)


class AccuracyPredictor:
    """An MLP over :class:`ArchEncoder` features predicting top-1 accuracy (a fraction).

    The network's raw output is de-normalised as ``out * target_std + target_mean``; the
    reference predictor has ``(0, 1)``, our trained ones the statistics of their training set.
    ``weights`` (see :meth:`set_weights`) skip the seeded random initialisation, and torch.
    """

    def __init__(self, encoder: ArchEncoder, hidden: Sequence[int] = (400, 400, 400), *,
                 space: "Space | str | None" = None, target_mean: float = 0.0,
                 target_std: float = 1.0, seed: int = 0, source_format: str = "ofa-deploy",
                 metadata: Mapping | None = None,
                 weights: Sequence[Tuple[np.ndarray, np.ndarray]] | None = None):
        self.encoder = encoder
        self.hidden = tuple(int(h) for h in hidden)
        if not self.hidden or min(self.hidden) < 1:
            raise PredictorError(f"hidden sizes must be positive integers, got {hidden!r}")
        self.space: Space | None = None if space is None else get_space(space)
        if self.space is not None:
            encoder.check_space(self.space)
            if len(encoder.unsupported_resolutions(self.space.resolutions)) == \
                    len(self.space.resolutions):
                raise PredictorError(
                    f"the predictor cannot encode any resolution of space {self.space.name} "
                    f"(it covers {encoder.describe_resolutions()})")
        self.target_mean = float(target_mean)
        self.target_std = float(target_std)
        self.source_format = source_format
        self.metadata: dict = dict(metadata or {})
        self._model = None
        if weights is None:
            model = _mlp(encoder.dim, self.hidden)
            _init_mlp(model, seed)
            self._adopt(model)
        else:
            self.set_weights(weights)

    # -- weights -----------------------------------------------------------------------
    # The numpy arrays in ``_layers`` are the weights; the torch module, when there is one,
    # holds tensors that share their memory, so training (in-place optimiser steps) and
    # ``load_state_dict`` (in-place copies) are seen by the numpy forward pass at once.
    def _adopt(self, model) -> None:
        """Take ``model``'s Linear weights as the numpy weights (shared memory)."""
        lins = [m for m in model if isinstance(m, _torch().nn.Linear)]
        self._layers = [(lin.weight.detach().numpy(), lin.bias.detach().numpy()) for lin in lins]
        self._model = model.eval()

    @property
    def model(self):
        """The network as a torch ``nn.Sequential`` (built on first use, sharing the numpy
        weights' memory); only training and torch files need it."""
        if self._model is None:
            torch = _torch()
            model = _mlp(self.encoder.dim, self.hidden)
            lins = [m for m in model if isinstance(m, torch.nn.Linear)]
            for lin, (w, b) in zip(lins, self._layers):
                lin.weight = torch.nn.Parameter(torch.from_numpy(w))
                lin.bias = torch.nn.Parameter(torch.from_numpy(b))
            self._model = model.eval()
        return self._model

    def weights(self) -> List[Tuple[np.ndarray, np.ndarray]]:
        """Copies of the Linear layers' ``(weight (out, in), bias (out,))``, float32."""
        return [(w.copy(), b.copy()) for w, b in self._layers]

    def set_weights(self, layers: Sequence[Tuple[np.ndarray, np.ndarray]], *,
                    source: str = "predictor") -> None:
        """Replace the weights by ``layers`` (``(weight (out, in), bias (out,))`` per Linear
        layer, shapes fitting the encoder and the hidden sizes); copied as float32."""
        dims = [self.encoder.dim, *self.hidden, 1]
        if len(layers) != len(dims) - 1:
            raise PredictorError(f"{source}: weights do not fit: {len(layers)} layers, the "
                                 f"network has {len(dims) - 1}")
        new = []
        for j, ((w, b), i, o) in enumerate(zip(layers, dims, dims[1:])):
            w, b = np.asarray(w), np.asarray(b)
            if w.shape != (o, i) or b.shape != (o,):
                raise PredictorError(f"{source}: weights do not fit: layer {j} has weight "
                                     f"{tuple(w.shape)} and bias {tuple(b.shape)}, expected "
                                     f"({o}, {i}) and ({o},)")
            if not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise PredictorError(f"{source}: layer {j} has non-finite weights")
            new.append((np.array(w, dtype=np.float32, order="C"),
                        np.array(b, dtype=np.float32, order="C")))
        if self._model is not None:  # keep sharing memory with the existing module
            for (dw, db), (w, b) in zip(self._layers, new):
                dw[...] = w
                db[...] = b
        else:
            self._layers = new

    def __repr__(self) -> str:
        return (f"AccuracyPredictor(dim={self.encoder.dim}, hidden={list(self.hidden)}, "
                f"space={getattr(self.space, 'name', None)!r}, format={self.source_format!r})")

    # -- prediction --------------------------------------------------------------------
    def supported_resolutions(self, candidates: Sequence[int]) -> Tuple[int, ...]:
        """The ``candidates`` the encoding can represent, in their order; the others would get no
        resolution feature."""
        bad = set(self.encoder.unsupported_resolutions(candidates))
        return tuple(r for r in candidates if r not in bad)

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Predicted accuracy for already-encoded features ``(N, encoder.dim)`` float32."""
        # numpy, float32 like torch: on the ~100-row batches of a search, torch's per-call
        # dispatch costs as much as the arithmetic, and the search then needs no torch at all
        h = np.ascontiguousarray(x, dtype=np.float32)
        for w, b in self._layers[:-1]:
            h = h @ w.T
            h += b
            np.maximum(h, 0.0, out=h)
        w, b = self._layers[-1]
        out = (h @ w.T).reshape(-1) + b
        return out.astype(np.float64) * self.target_std + self.target_mean

    def predict(self, archs) -> np.ndarray:
        """Predicted accuracy (fraction) of each arch: an :class:`ArchBatch` (one forward pass
        for all rows) or a list of :class:`ArchConfig`. Shape ``(N,)``."""
        batch = _as_batch(self.space, archs)
        if len(batch) == 0:
            return np.zeros(0)
        return self.predict_features(self.encoder.encode(batch))

    __call__ = predict

    def predict_one(self, arch: ArchConfig) -> float:
        """Predicted accuracy (fraction) of one arch."""
        return float(self.predict([arch])[0])

    # -- training ----------------------------------------------------------------------
    def fit(self, archs, accs, *, epochs: int = 200, lr: float = 1e-3, batch_size: int = 256,
            weight_decay: float = 0.0, seed: int = 0, val_fraction: float = 0.2) -> FitReport:
        """Train on (arch, accuracy) pairs with Adam on the MSE of normalised targets.

        A ``val_fraction`` of the data (chosen with ``seed``) is held out; the weights of the
        epoch with the lowest held-out RMSE are kept, and the report gives that RMSE and the
        Kendall tau of the held-out ranking (the quantity a search relies on)."""
        torch = _torch()
        nn = torch.nn
        t0 = time.perf_counter()
        batch = _as_batch(self.space, archs)
        y = np.asarray(accs, dtype=np.float64).ravel()
        n = len(batch)
        if y.size != n:
            raise PredictorError(f"{n} archs but {y.size} accuracies")
        if not np.isfinite(y).all():
            raise PredictorError("accuracies must be finite numbers")
        if not (isinstance(epochs, int) and epochs >= 1):
            raise PredictorError(f"epochs must be a positive integer, got {epochs!r}")
        if not (lr > 0 and math.isfinite(lr)):
            raise PredictorError(f"lr must be positive, got {lr!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise PredictorError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
        n_val = int(round(n * val_fraction))
        if n - n_val < 2:
            raise PredictorError(f"need at least 2 training samples, got {n - n_val}")
        x = self.encoder.encode(batch)
        order = np.random.default_rng(seed).permutation(n)
        val_idx, tr_idx = order[:n_val], order[n_val:]
        mean = float(y[tr_idx].mean())
        std = float(y[tr_idx].std()) or 1.0
        xt = torch.from_numpy(x[tr_idx])
        yt = torch.from_numpy(((y[tr_idx] - mean) / std).astype(np.float32))
        xv = torch.from_numpy(x[val_idx])

        _init_mlp(self.model, seed)
        self.target_mean, self.target_std = mean, std
        opt = torch.optim.Adam(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        g = torch.Generator().manual_seed(int(seed))
        bs = max(1, int(batch_size))
        best = (math.inf, 0, None)
        for ep in range(1, epochs + 1):
            self.model.train()
            perm = torch.randperm(len(tr_idx), generator=g)
            for s in range(0, len(tr_idx), bs):
                idx = perm[s:s + bs]
                loss = nn.functional.mse_loss(self.model(xt[idx]).reshape(-1), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
            self.model.eval()
            if n_val:
                with torch.no_grad():
                    pv = self.model(xv).reshape(-1).numpy() * std + mean
                rmse = float(np.sqrt(np.mean((pv - y[val_idx]) ** 2)))
                if rmse < best[0]:
                    best = (rmse, ep, {k: v.clone() for k, v in self.model.state_dict().items()})
        if best[2] is not None:
            self.model.load_state_dict(best[2])
        self.model.eval()
        pt = self.predict_features(x[tr_idx])
        train_rmse = float(np.sqrt(np.mean((pt - y[tr_idx]) ** 2)))
        if n_val:
            pv = self.predict_features(x[val_idx])
            val_rmse = float(np.sqrt(np.mean((pv - y[val_idx]) ** 2)))
            tau = kendall_tau(pv, y[val_idx]) if n_val > 1 else float("nan")
        else:
            val_rmse, tau = float("nan"), float("nan")
        self.source_format = "ofa-deploy"
        return FitReport(n_train=len(tr_idx), n_val=n_val, epochs=epochs,
                         best_epoch=best[1] if n_val else epochs, train_rmse=train_rmse,
                         val_rmse=val_rmse, kendall_tau=tau, seconds=time.perf_counter() - t0)

    # -- state -------------------------------------------------------------------------
    def _header(self) -> dict:
        """Everything but the weights (JSON-ready)."""
        return {
            "format": PREDICTOR_FORMAT,
            "version": PREDICTOR_VERSION,
            "space": None if self.space is None else self.space.name,
            "encoder": self.encoder.get_state(),
            "hidden": list(self.hidden),
            "target_mean": self.target_mean,
            "target_std": self.target_std,
            "metadata": dict(self.metadata),
        }

    def get_state(self) -> dict:
        """Everything needed to rebuild this predictor (loads with ``weights_only=True``)."""
        torch = _torch()
        state = self._header()
        state["state_dict"] = {f"{2 * j}.{name}": torch.from_numpy(a.copy())
                               for j, (w, b) in enumerate(self._layers)
                               for name, a in (("weight", w), ("bias", b))}
        return state

    @classmethod
    def _from_header(cls, state: Mapping, space, source: str, weights) -> "AccuracyPredictor":
        """Rebuild from :meth:`_header`'s fields and ``weights`` (a list of (w, b) arrays, or a
        ``{"0.weight": ...}`` mapping), checking format, version, space and shapes."""
        if not isinstance(state, Mapping) or state.get("format") != PREDICTOR_FORMAT:
            raise PredictorError(f"{source} is not an ofa-deploy predictor")
        ver = state.get("version")
        if not isinstance(ver, int) or ver < 1:
            raise PredictorError(f"{source}: bad version {ver!r}")
        if ver > PREDICTOR_VERSION:
            raise PredictorError(f"{source} was written by a newer ofa-deploy (version {ver}; "
                                 f"this one reads up to {PREDICTOR_VERSION})")
        encoder = ArchEncoder.from_state(state.get("encoder") or {})
        trained = state.get("space")
        if space is not None and trained is not None and get_space(space).name != trained:
            raise PredictorError(f"{source} was trained for space {trained}, not "
                                 f"{get_space(space).name}")
        use_space = space if space is not None else trained
        hidden = state.get("hidden") or ()
        try:
            if isinstance(weights, Mapping):
                weights = _layers_of_state_dict(weights, len(hidden) + 1, source)
            return cls(encoder, hidden, space=use_space,
                       target_mean=float(state.get("target_mean", 0.0)),
                       target_std=float(state.get("target_std", 1.0)),
                       source_format=str(state.get("source_format", "ofa-deploy")),
                       metadata=state.get("metadata") or {}, weights=weights)
        except (KeyError, TypeError, ValueError) as exc:
            raise PredictorError(f"{source}: weights do not fit: {first_line(exc)}") from None

    @classmethod
    def from_state(cls, state: Mapping, space: "Space | str | None" = None,
                   *, source: str = "predictor") -> "AccuracyPredictor":
        """Rebuild from :meth:`get_state`'s dict (checks format, version, space, shapes)."""
        if not isinstance(state, Mapping) or state.get("format") != PREDICTOR_FORMAT:
            raise PredictorError(f"{source} is not an ofa-deploy predictor")
        if "state_dict" not in state:
            raise PredictorError(f"{source}: no weights (state_dict) in the file")
        return cls._from_header(state, space, source, state["state_dict"])

    @classmethod
    def from_reference_state_dict(cls, sd: Mapping, space: "Space | str | None" = None, *,
                                  source: str = "predictor") -> "AccuracyPredictor":
        """The OFA ImageNet predictor's plain state_dict (Linear layers at ``0.``, ``2.``...)."""
        idx = _reference_layer_indices(sd)
        if idx is None:
            raise PredictorError(f"{source} is not an OFA reference predictor state_dict "
                                 f"(expected keys 0.weight, 0.bias, 2.weight, ...)")
        shapes = [tuple(sd[f"{i}.weight"].shape) for i in idx]
        encoder = ArchEncoder.reference()
        if shapes[0][1] != encoder.dim:
            raise PredictorError(f"{source}: first layer takes {shapes[0][1]} features; the "
                                 f"reference encoding has {encoder.dim}")
        if shapes[-1][0] != 1:
            raise PredictorError(f"{source}: last layer has {shapes[-1][0]} outputs, expected 1")
        for (o, _), (_, i2) in zip(shapes, shapes[1:]):
            if o != i2:
                raise PredictorError(f"{source}: layer sizes do not chain ({shapes})")
        return cls(encoder, [s[0] for s in shapes[:-1]], space=space,
                   source_format="ofa-reference",
                   metadata={"description": "OFA reference ImageNet accuracy predictor "
                                            "(ofa_mbv3_d234_e346_k357_w1.2 supernet)"},
                   weights=_layers_of_state_dict(sd, len(idx), source))

    def save(self, path: "str | os.PathLike") -> Path:
        """Write atomically (temp file + rename): a ``.npz`` path as numpy arrays plus a JSON
        header (read back without torch), anything else as a ``torch.save`` dict."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        try:
            if p.suffix == ".npz":
                head = self._header()
                head["source_format"] = self.source_format
                # where this copy was loaded from says nothing about the new file
                head["metadata"].pop("path", None)
                arrays = {f"{kind}{j}": a for j, (w, b) in enumerate(self._layers)
                          for kind, a in (("w", w), ("b", b))}
                with open(tmp, "wb") as f:  # a file object: savez adds no suffix
                    np.savez(f, header=np.array(json.dumps(head, sort_keys=True)), **arrays)
            else:
                _torch().save(self.get_state(), tmp)
            os.replace(tmp, p)
        finally:
            if tmp.exists():
                tmp.unlink()
        return p


_REF_KEY = re.compile(r"^(\d+)\.(weight|bias)$")


def _layers_of_state_dict(sd: Mapping, n: int, source: str) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``n`` (weight, bias) numpy pairs from a Sequential state_dict (Linear at ``0.``, ``2.``...)."""
    want = {f"{2 * j}.{p}" for j in range(n) for p in ("weight", "bias")}
    if set(sd) != want:
        missing, extra = sorted(want - set(sd)), sorted(set(sd) - want)
        raise PredictorError(f"{source}: weights do not fit: "
                             + (f"missing {', '.join(missing)}" if missing else "")
                             + ("; " if missing and extra else "")
                             + (f"unexpected {', '.join(extra)}" if extra else ""))

    def arr(v):
        return v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)

    return [(arr(sd[f"{2 * j}.weight"]), arr(sd[f"{2 * j}.bias"])) for j in range(n)]


def _reference_layer_indices(sd) -> List[int] | None:
    """Sorted Linear indices if ``sd`` looks like a plain Sequential MLP state_dict."""
    if not isinstance(sd, Mapping) or not sd:
        return None
    layers: Dict[int, set] = {}
    for k, v in sd.items():
        m = _REF_KEY.match(str(k))
        if not m or not (hasattr(v, "detach") and hasattr(v, "dim")):  # a torch tensor
            return None
        layers.setdefault(int(m.group(1)), set()).add(m.group(2))
    idx = sorted(layers)
    if any(layers[i] != {"weight", "bias"} for i in idx):
        return None
    if idx != list(range(0, 2 * len(idx), 2)):
        return None
    if any(sd[f"{i}.weight"].dim() != 2 for i in idx):
        return None
    return idx


def bundled_predictor_path(space: "Space | str") -> Path | None:
    """The predictor shipped for ``space``, if the package has one: its ``.npz`` twin (loads
    without torch) where that ships, else the torch file."""
    name = BUNDLED_PREDICTORS.get(get_space(space).name)
    if name is None:
        return None
    p = Path(__file__).resolve().parent / "assets" / name
    twin = p.with_suffix(".npz")
    if twin.is_file():
        return twin
    return p if p.is_file() else None


def write_npz_twin(path: "str | os.PathLike", space: "Space | str | None" = None) -> Path:
    """Write the ``.npz`` twin of the torch predictor file ``path`` beside it (same name,
    suffix ``.npz``): same weights, encoder and normalisation, so the same predictions."""
    p = Path(path)
    if p.suffix == ".npz":
        raise PredictorError(f"{p} is already a .npz predictor")
    return load_predictor(p, space).save(p.with_suffix(".npz"))


def _is_npz(p: Path) -> bool:
    """A numpy ``.npz`` archive: a zip of ``.npy`` members (a torch file is a zip too, of a
    pickle and raw storages, or a bare pickle)."""
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return bool(names) and all(n.endswith(".npy") for n in names)


def _load_npz(p: Path, space, format: str) -> AccuracyPredictor:
    source = f"predictor {p}"
    if format == "ofa-reference":
        raise PredictorError(f"{p} is not an OFA reference predictor state_dict (it is an "
                             f"ofa-deploy .npz predictor)")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # numpy raises several types for a damaged archive
        raise PredictorError(f"cannot read predictor {p}: not a loadable .npz file "
                             f"({first_line(exc, 200)})") from None
    try:
        head = json.loads(str(arrays.pop("header")))
    except (KeyError, ValueError):
        raise PredictorError(f"{p} is not an ofa-deploy predictor (no JSON header)") from None
    n = len(arrays) // 2
    try:
        layers = [(arrays.pop(f"w{j}"), arrays.pop(f"b{j}")) for j in range(n)]
    except KeyError as exc:
        raise PredictorError(f"{source}: weights do not fit: missing {exc.args[0]}") from None
    if arrays:
        raise PredictorError(f"{source}: weights do not fit: unexpected "
                             f"{', '.join(sorted(arrays))}")
    return AccuracyPredictor._from_header(head, space, source, layers)


def load_predictor(path: "str | os.PathLike", space: "Space | str | None" = None,
                   format: str = "auto") -> AccuracyPredictor:
    """Read a predictor file: ``ofa-deploy`` (ours, a torch file or a ``.npz``),
    ``ofa-reference`` (the OFA authors' plain state_dict) or ``auto`` (decided by the file's
    content). A ``.npz`` is read with numpy alone; a torch file with
    ``torch.load(weights_only=True)``."""
    if format not in FORMATS:
        raise PredictorError(f"unknown predictor format {format!r} (choose from "
                             f"{', '.join(FORMATS)})")
    p = Path(path)
    if not p.exists():
        raise PredictorError(f"predictor file not found: {p}")
    if p.is_dir():
        raise PredictorError(f"predictor path is a directory: {p}")
    if _is_npz(p):
        pred = _load_npz(p, space, format)
        pred.metadata["path"] = str(p)
        return pred
    try:
        obj = _torch().load(p, map_location="cpu", weights_only=True)
    except PredictorError:
        raise
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise PredictorError(f"cannot read predictor {p}: not a loadable torch file "
                             f"({first_line(exc, 200)})") from None
    from .accuracy_resnet import ResNetReferencePredictor, is_resnet_reference_state_dict

    if format != "ofa-deploy" and is_resnet_reference_state_dict(obj):
        # the OFA ResNet50 predictor: its own encoding and arch record
        name = getattr(space, "name", space)
        if name is not None and name != "ofa-resnet50":
            raise PredictorError(f"{p} is the OFA ResNet50 reference predictor; it predicts "
                                 f"ofa-resnet50 subnets, not {name}")
        return ResNetReferencePredictor(obj, "ofa-resnet50", source=str(p))
    is_ours = isinstance(obj, Mapping) and obj.get("format") == PREDICTOR_FORMAT
    is_ref = not is_ours and _reference_layer_indices(obj) is not None
    if format == "auto":
        if not (is_ours or is_ref):
            raise PredictorError(f"{p} is neither an ofa-deploy predictor nor an OFA reference "
                                 f"predictor state_dict")
        format = "ofa-deploy" if is_ours else "ofa-reference"
    source = f"predictor {p}"
    if format == "ofa-deploy":
        if not is_ours:
            raise PredictorError(f"{p} is not an ofa-deploy predictor (try --predictor-format "
                                 f"ofa-reference)" if is_ref else
                                 f"{p} is not an ofa-deploy predictor")
        pred = AccuracyPredictor.from_state(obj, space, source=source)
    else:
        if not is_ref:
            raise PredictorError(f"{p} is not an OFA reference predictor state_dict" +
                                 (" (it is an ofa-deploy predictor)" if is_ours else ""))
        pred = AccuracyPredictor.from_reference_state_dict(obj, space, source=source)
    pred.metadata.setdefault("path", str(p))
    return pred
