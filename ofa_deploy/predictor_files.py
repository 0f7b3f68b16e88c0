"""Predictor files: the ones bundled with the package, their ``.npz`` twins, and
:func:`load_predictor`, which tells the formats apart by content (ours as a torch file or a
``.npz``, the OFA reference MobileNetV3 and ResNet50 state_dicts)."""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Dict, Mapping

import numpy as np

from supernet.errors import first_line
from supernet.space import Space, get_space

from .accuracy import (FORMATS, PREDICTOR_FORMAT, AccuracyPredictor, _reference_layer_indices,
                       _torch)
from .arch_encoding import PredictorError

__all__ = ["BUNDLED_PREDICTORS", "bundled_predictor_path", "load_predictor", "write_npz_twin"]

# Predictors shipped with the package, by space name (file names under ofa_deploy/assets/).
BUNDLED_PREDICTORS: Dict[str, str] = {
    "ofa-mbv3-w1.2": "ofa-mbv3-w1.2-imagenet-acc-predictor.pth",
    # trained on the bundled default supernet (see assets/README.md for the exact commands)
    "ofa-mbv3-tiny": "ofa-mbv3-tiny-fmnist-acc-predictor.pt",
}


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
