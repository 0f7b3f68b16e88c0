"""The OFA authors' accuracy predictor for ``ofa_resnet50``, read from its published file.

The file is a plain state_dict: ``base_acc`` (1,), an MLP ``layers.0.0`` / ``layers.1.0`` /
``layers.2.0`` (Linear + ReLU, 400 wide) and ``layers.3.weight`` (no bias); the prediction is
the MLP's output plus ``base_acc``. Its input follows the reference's ``ResNetArchEncoder``
(``ofa/nas/accuracy_predictor/arch_encoder.py``), in this order: one-hot of the resolution
over :data:`RESNET_PREDICTOR_IMAGE_SIZES`; one-hot of the input-stem bit (index 1 when
``d[0] > 0``, i.e. the stem's residual conv runs); for each of the 6 width entries a one-hot
of its width index; for each of the 18 blocks a one-hot of its expand ratio (blocks skipped by
their stage's depth all zero). 8 + 2 + 18 + 54 = 82 dims.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from supernet.resnet_space import ResNetArch, ResNetSpace, get_resnet_space

from .arch_encoding import PredictorError

__all__ = ["RESNET_PREDICTOR_IMAGE_SIZES", "ResNetArchEncoder", "ResNetReferencePredictor",
           "is_resnet_reference_state_dict", "load_resnet_predictor",
           "bundled_resnet_predictor_path"]

# the image sizes the published predictor encodes (the reference tutorials' list)
RESNET_PREDICTOR_IMAGE_SIZES = (128, 144, 160, 176, 192, 224, 240, 256)
_KEYS = {"base_acc", "layers.0.0.weight", "layers.0.0.bias", "layers.1.0.weight",
         "layers.1.0.bias", "layers.2.0.weight", "layers.2.0.bias", "layers.3.weight"}


class ResNetArchEncoder:
    """The reference ``ResNetArchEncoder`` layout for a :class:`ResNetSpace`."""

    def __init__(self, space: "ResNetSpace | str" = "ofa-resnet50",
                 image_sizes: Sequence[int] = RESNET_PREDICTOR_IMAGE_SIZES):
        self.space = get_resnet_space(space)
        self.image_sizes = tuple(int(r) for r in image_sizes)
        sp = self.space
        self.dim = (len(self.image_sizes) + 2 + sp.num_widths * len(sp.width_mult_choices)
                    + sp.num_blocks * len(sp.expand_choices))

    def encode(self, archs: Sequence[ResNetArch]) -> np.ndarray:
        """Features ``(N, dim)`` float32; a resolution outside the list is refused."""
        sp, nr = self.space, len(self.image_sizes)
        nw, ne = len(sp.width_mult_choices), len(sp.expand_choices)
        x = np.zeros((len(archs), self.dim), dtype=np.float32)
        w_off = nr + 2
        e_off = w_off + sp.num_widths * nw
        for row, a in enumerate(archs):
            a.validate(sp, any_resolution=True)
            if a.r not in self.image_sizes:
                raise PredictorError(f"resolution {a.r} cannot be encoded by the ResNet50 "
                                     f"predictor (it covers {list(self.image_sizes)})")
            x[row, self.image_sizes.index(a.r)] = 1.0
            x[row, nr + (1 if a.d[0] > 0 else 0)] = 1.0
            for i, w in enumerate(a.w):
                x[row, w_off + i * nw + w] = 1.0
            for i, active in enumerate(a.active_mask(sp)):
                if active:
                    k = min(range(ne), key=lambda j: abs(sp.expand_choices[j] - a.e[i]))
                    x[row, e_off + i * ne + k] = 1.0
        return x


def is_resnet_reference_state_dict(sd) -> bool:
    """Whether ``sd`` has the keys of the published ResNet50 predictor."""
    return isinstance(sd, Mapping) and set(sd) == _KEYS


class ResNetReferencePredictor:
    """Top-1 accuracy (a fraction) of ResNet50 subnets from the published predictor."""

    source_format = "ofa-reference-resnet50"

    def __init__(self, sd: Mapping, space: "ResNetSpace | str" = "ofa-resnet50",
                 source: str = "predictor"):
        if not is_resnet_reference_state_dict(sd):
            raise PredictorError(f"{source} is not the OFA ResNet50 reference predictor (keys "
                                 f"{', '.join(sorted(_KEYS))})")
        self.encoder = ResNetArchEncoder(space)
        self.weights = [(sd[f"layers.{i}.0.weight"].double().numpy(),
                         sd[f"layers.{i}.0.bias"].double().numpy()) for i in range(3)]
        self.last = sd["layers.3.weight"].double().numpy()
        self.base_acc = float(sd["base_acc"].reshape(-1)[0])
        if self.weights[0][0].shape[1] != self.encoder.dim:
            raise PredictorError(f"{source}: first layer takes {self.weights[0][0].shape[1]} "
                                 f"features; the ResNet50 encoding has {self.encoder.dim}")

    def predict(self, archs: Sequence[ResNetArch]) -> np.ndarray:
        """Predicted accuracy of each arch, shape ``(N,)``."""
        return self.predict_features(self.encoder.encode(list(archs)))

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Predicted accuracy from encoded features ``(N, dim)`` (what :meth:`predict` runs
        after encoding; the search builds them straight from its gene matrix)."""
        h = np.asarray(x, dtype=np.float64)
        for w, b in self.weights:
            h = np.maximum(h @ w.T + b, 0.0)
        return (h @ self.last.T)[:, 0] + self.base_acc

    def predict_one(self, arch: ResNetArch) -> float:
        """Predicted top-1 accuracy (fraction) of one arch."""
        return float(self.predict([arch])[0])


def bundled_resnet_predictor_path() -> Path:
    """Path of the published OFA ResNet50 accuracy predictor bundled in ``ofa_deploy/assets``, the
    default of :func:`load_resnet_predictor`."""
    return Path(__file__).resolve().parent / "assets" / "ofa-resnet50-imagenet-acc-predictor.pth"


def load_resnet_predictor(path: "str | os.PathLike | None" = None,
                          space: "ResNetSpace | str" = "ofa-resnet50") -> ResNetReferencePredictor:
    """Read the published ResNet50 predictor (default: the bundled copy)."""
    p = Path(path) if path is not None else bundled_resnet_predictor_path()
    if not p.is_file():
        raise PredictorError(f"predictor file not found: {p}")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PredictorError(f"cannot read predictor {p}: {first[:200]}") from None
    return ResNetReferencePredictor(sd, space, source=str(p))
