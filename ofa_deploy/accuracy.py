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

The arch encoding is in :mod:`ofa_deploy.arch_encoding`, finding and reading predictor files
in :mod:`ofa_deploy.predictor_files`; their public names are importable from here as well.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from supernet.arch import ArchConfig
from supernet.batch import ArchBatch
from supernet.errors import first_line
from supernet.space import Space, get_space
from supernet.stats import kendall_tau

from .arch_encoding import REFERENCE_RES_BINS, ArchEncoder, PredictorError  # noqa: F401 (re-exported)

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
        h = np.asarray(x, dtype=np.float32)  # BLAS takes a strided view (encode's) as it is
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


# File handling lives in predictor_files (which imports this module); its public names are
# served from here too, loaded on first use.
_FILE_NAMES = ("BUNDLED_PREDICTORS", "bundled_predictor_path", "load_predictor",
               "write_npz_twin")


def __getattr__(name: str):
    if name in _FILE_NAMES:
        from . import predictor_files

        return getattr(predictor_files, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
