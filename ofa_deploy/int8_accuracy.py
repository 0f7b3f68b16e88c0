"""int8 accuracy for the search: the float predictor minus a quantization-drop model.

A drop model is fitted on subnets that were exported both fp32 and int8 and evaluated as
shipped (``benchmarks/int8/accuracy_drop.py``); :func:`fit_drop_model` picks, by
leave-one-out mean absolute error, between a constant drop and a line in (MACs, resolution),
and the one fitted for the bundled default ships in ``assets/`` with its provenance. A space
or supernet without a fitted model gets drop 0 and a warning, never an invented figure.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from supernet.errors import OfaDeployError

__all__ = ["DROP_MODEL_FORMAT", "BUNDLED_DROP_MODELS", "fit_drop_model", "load_drop_model",
           "drop_of", "int8_accuracy", "Int8Predictor"]

DROP_MODEL_FORMAT = "ofa-deploy-int8-drop/1"
# (space, supernet name) -> asset file under ofa_deploy/assets/: a drop model describes one
# supernet's weights, so another supernet of the same space does not get it
BUNDLED_DROP_MODELS: Dict[tuple, str] = {
    ("ofa-mbv3-tiny", "default"): "ofa-mbv3-tiny-fmnist-int8-drop.json",
}


def _features(macs: Sequence[float], r: Sequence[float]) -> np.ndarray:
    return np.column_stack([np.ones(len(macs)), np.asarray(macs, float) / 1e6,
                            np.asarray(r, float)])


def fit_drop_model(records: Sequence[Mapping]) -> dict:
    """Fit the drop (fp32 - int8 accuracy, a fraction) of ``records`` (dicts with ``fp32``,
    ``int8``, ``macs``, ``r``) by a constant and by a least-squares line in (MACs in millions,
    resolution); score both and "no drop" by leave-one-out MAE (points) and return the best
    one refitted on all records: ``{"model": "constant"|"linear"|"none", "drop"| "coef", ...}``."""
    recs = list(records)
    if len(recs) < 3:
        raise OfaDeployError(f"a drop model needs at least 3 measured subnets, got {len(recs)}")
    drop = np.array([float(r["fp32"]) - float(r["int8"]) for r in recs])
    x = _features([r["macs"] for r in recs], [r["r"] for r in recs])
    n = len(drop)
    err = {"none": [], "constant": [], "linear": []}
    for i in range(n):
        keep = np.arange(n) != i
        err["none"].append(abs(drop[i]))
        err["constant"].append(abs(drop[keep].mean() - drop[i]))
        coef, *_ = np.linalg.lstsq(x[keep], drop[keep], rcond=None)
        err["linear"].append(abs(float(x[i] @ coef) - drop[i]))
    mae = {k: round(100 * float(np.mean(v)), 3) for k, v in err.items()}
    # ties go to the simpler model (listed first)
    best = min(("none", "constant", "linear"), key=lambda k: (mae[k], k != "none", k == "linear"))
    out = {"model": best, "leave_one_out_mae_points": mae, "subnets": n,
           "drop_points": {"mean": round(100 * float(drop.mean()), 3),
                           "min": round(100 * float(drop.min()), 3),
                           "max": round(100 * float(drop.max()), 3)}}
    if best == "constant":
        out["drop"] = float(drop.mean())
    elif best == "linear":
        coef, *_ = np.linalg.lstsq(x, drop, rcond=None)
        out["coef"] = [float(c) for c in coef]
        out["features"] = ["1", "MACs / 1e6", "resolution"]
    return out


def load_drop_model(space, supernet_name: str, path: "str | Path | None" = None
                    ) -> Optional[dict]:
    """The drop model of ``path``, else the one bundled for (``space``, ``supernet_name``);
    None where none is fitted. A file for another space is a one-line error."""
    name = getattr(space, "name", str(space))
    if path is None:
        asset = BUNDLED_DROP_MODELS.get((name, str(supernet_name)))
        if asset is None:
            return None
        path = Path(__file__).resolve().parent / "assets" / asset
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise OfaDeployError(f"cannot read the int8 drop model {p}: {exc}") from None
    if doc.get("format") != DROP_MODEL_FORMAT or doc.get("model") not in ("none", "constant",
                                                                        "linear"):
        raise OfaDeployError(f"{p} is not an int8 drop model ({DROP_MODEL_FORMAT})")
    if doc.get("space") != name:
        raise OfaDeployError(f"int8 drop model {p} is for space {doc.get('space')}, not {name}")
    return {**doc, "path": str(p)}


def drop_of(archs, drop_model: Optional[Mapping], space=None) -> np.ndarray:
    """Predicted accuracy drop (fraction) of each arch of ``archs`` (a list of ArchConfig or
    an ArchBatch); zeros without a model."""
    n = len(archs)
    kind = None if drop_model is None else drop_model["model"]
    if kind in (None, "none"):
        return np.zeros(n)
    if kind == "constant":
        return np.full(n, float(drop_model["drop"]))
    from supernet import arch_cost, get_space

    sp = get_space(space or drop_model["space"])
    archs = list(archs.to_archs()) if hasattr(archs, "to_archs") else list(archs)
    macs = [arch_cost(sp, a)["macs"] for a in archs]
    return _features(macs, [a.r for a in archs]) @ np.asarray(drop_model["coef"], float)


def int8_accuracy(pred_fp32, archs, drop_model: Optional[Mapping], space=None) -> np.ndarray:
    """int8 accuracy estimate: the float predictor's ``pred_fp32`` for ``archs`` minus the
    drop model's drop (none: unchanged)."""
    return np.asarray(pred_fp32, dtype=np.float64) - drop_of(archs, drop_model, space)


class Int8Predictor:
    """A float accuracy predictor seen through a drop model: what the search ranks by for
    ``--precision int8``. A constant drop keeps the search's encoded-features fast path."""

    def __init__(self, base, drop_model: Optional[Mapping], space=None):
        self.base, self.drop_model, self.space = base, drop_model, space or getattr(base, "space",
                                                                                  None)
        self._const = (0.0 if drop_model is None or drop_model["model"] == "none" else
                       float(drop_model["drop"]) if drop_model["model"] == "constant" else None)
        if self._const is None:
            # a per-arch drop needs the archs, not their encoded features: hide the fast path
            self.predict_features = None

    def __getattr__(self, name):
        # everything else (encoder, supported_resolutions...) is the float predictor's
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """int8 estimate from encoded features (constant drop models only)."""
        return np.asarray(self.base.predict_features(x), dtype=np.float64) - self._const

    def predict(self, archs) -> np.ndarray:
        """int8 estimate of each arch (:func:`int8_accuracy`)."""
        return int8_accuracy(self.base.predict(archs), archs, self.drop_model, self.space)

    __call__ = predict

    def predict_one(self, arch) -> float:
        """int8 estimate of one arch."""
        return float(self.predict([arch])[0])
