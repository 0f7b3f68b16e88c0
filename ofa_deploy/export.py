"""Export a subnet as deployable artifacts (ONNX, TFLite), each checked against torch."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import torch

from supernet.errors import OfaDeployError
from supernet.export import ExportError, check_onnx, export_onnx, onnx_op_types

__all__ = ["FORMATS", "parse_formats", "export_artifacts", "check_tflite"]

FORMATS = ("onnx", "tflite")
FILE_NAMES = {"onnx": "model.onnx", "tflite": "model.tflite"}


def parse_formats(text: "str | Sequence[str]") -> tuple:
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for f in (s.strip().lower() for s in items):
        if not f:
            continue
        if f not in FORMATS:
            raise OfaDeployError(f"unknown export format {f!r}; choose from {', '.join(FORMATS)}")
        if f not in out:
            out.append(f)
    if not out:
        raise OfaDeployError("no export format given")
    return tuple(out)


def check_tflite(model: torch.nn.Module, path: "str | Path", input_shape: Sequence[int], *,
                 atol: float = 1e-3, seed: int = 0) -> float:
    """Run the .tflite in LiteRT and ``model`` in torch on one seeded input; max abs diff."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise ExportError(f"LiteRT (ai-edge-litert) is not installed: {exc}") from None
    x = np.random.default_rng(seed).standard_normal(tuple(input_shape)).astype(np.float32)
    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    if tuple(inp["shape"]) != x.shape:
        raise ExportError(f"{path}: TFLite input shape {tuple(inp['shape'])} != {x.shape}")
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    model.eval()
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    if got.shape != want.shape:
        raise ExportError(f"{path}: TFLite output shape {got.shape} != torch {want.shape}")
    diff = float(np.max(np.abs(got.astype(np.float64) - want)))
    if not np.isfinite(diff) or diff > atol:
        raise ExportError(f"{path}: LiteRT and torch differ by {diff:.3g} (atol {atol:g})")
    return diff


def export_artifacts(model: torch.nn.Module, input_shape: Sequence[int], out_dir: "str | Path",
                     formats: Sequence[str] = FORMATS, *, seed: int = 0) -> Dict[str, dict]:
    """Write ``model.onnx`` / ``model.tflite`` into ``out_dir``, check each against torch on a
    seeded random input, and return per-format ``path``, ``max_abs_diff``, ``export_seconds``."""
    out = Path(out_dir)
    model = model.cpu().eval()
    res: Dict[str, dict] = {}
    for fmt in parse_formats(formats):
        path = out / FILE_NAMES[fmt]
        t0 = time.perf_counter()
        if fmt == "onnx":
            export_onnx(model, input_shape, path)
            secs = time.perf_counter() - t0
            diff = check_onnx(model, path, input_shape, atol=1e-4, seed=seed)
            extra = {"op_types": onnx_op_types(path)}
        else:
            from supernet.export_tflite import export_tflite

            export_tflite(model, input_shape, path)
            secs = time.perf_counter() - t0
            diff = check_tflite(model, path, input_shape, atol=1e-3, seed=seed)
            extra = {}
        res[fmt] = {"path": str(path), "max_abs_diff": diff, "export_seconds": round(secs, 3),
                    "bytes": path.stat().st_size, **extra}
    return res
