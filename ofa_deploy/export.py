"""Export a subnet as deployable artifacts (ONNX, TFLite), each checked against torch."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Sequence

import numpy as np
import torch

from supernet.errors import OfaDeployError
from supernet.export import ExportError, check_onnx, export_onnx, onnx_op_types
from supernet.quantize import (QuantizeError, QuantSettings, check_fp16_format, export_fp16,
                               export_int8, parse_precision)

__all__ = ["FORMATS", "parse_formats", "export_artifacts", "check_tflite", "check_int8"]

FORMATS = ("onnx", "tflite")
FILE_NAMES = {"onnx": "model.onnx", "tflite": "model.tflite"}


def parse_formats(text: "str | Sequence[str]") -> tuple:
    """``"onnx,tflite"`` -> ("onnx", "tflite"); an unknown or empty list is a one-line error."""
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


# fp16 weights keep 11 significant bits: an fp16 artifact may differ from torch by this share
# of (1 + the largest logit); measured: under 1e-3 absolute on the bundled default's largest
# and smallest subnet.
FP16_REL_TOL = 1e-2


def check_tflite(model: torch.nn.Module, path: "str | Path", input_shape: Sequence[int], *,
                 atol: float = 1e-3, seed: int = 0, relative: bool = False) -> float:
    """Run the .tflite in LiteRT and ``model`` in torch on one seeded input; max abs diff.
    ``relative``: the tolerance is ``atol`` times (1 + the largest absolute torch output)."""
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
    if relative:
        atol = atol * (1.0 + float(np.max(np.abs(want))))
    if not np.isfinite(diff) or diff > atol:
        raise ExportError(f"{path}: LiteRT and torch differ by {diff:.3g} (atol {atol:g})")
    return diff


# An int8 model that disagrees with its float original on most images is broken (wrong
# calibration data, say), not merely less accurate: refuse it rather than ship it.
MIN_INT8_AGREEMENT = 0.5


def check_int8(model: torch.nn.Module, path: "str | Path", images: np.ndarray, *,
               min_agreement: float = MIN_INT8_AGREEMENT) -> dict:
    """Run an int8 artifact as shipped (``.onnx`` in onnxruntime, ``.tflite`` in LiteRT, one
    thread) and ``model`` (torch, float) on real ``images``; return the share of images where
    both pick the same class and the largest absolute logit difference. Raises below
    ``min_agreement`` (default :data:`MIN_INT8_AGREEMENT`; 0 for random-weight nets, whose
    near-equal logits make the class a coin toss)."""
    from .evaluate import onnx_runner, tflite_runner

    run = tflite_runner(path) if str(path).endswith(".tflite") else onnx_runner(path, 1)
    got = run(images).astype(np.float64)
    model.eval()
    with torch.no_grad():
        want = model(torch.from_numpy(images)).numpy()
    agreement = float(np.mean(got.argmax(1) == want.argmax(1)))
    if agreement < min_agreement:
        raise ExportError(f"{path}: the int8 model picks the float model's class on only "
                          f"{agreement:.0%} of {len(images)} calibration images")
    return {"top1_agreement": round(agreement, 4), "max_abs_diff": float(np.max(np.abs(got - want)))}


def _check_images(calibration: Callable[[], Iterable[np.ndarray]], limit: int = 64) -> np.ndarray:
    out, seen = [], 0
    for batch in calibration():
        batch = np.asarray(batch, dtype=np.float32)
        out.append(batch[:limit - seen])
        seen += len(out[-1])
        if seen >= limit:
            break
    return np.concatenate(out)


def export_artifacts(model: torch.nn.Module, input_shape: Sequence[int], out_dir: "str | Path",
                     formats: Sequence[str] = FORMATS, *, seed: int = 0, precision: str = "fp32",
                     calibration: Optional[Callable[[], Iterable[np.ndarray]]] = None,
                     quant: Optional[QuantSettings] = None,
                     min_agreement: float = MIN_INT8_AGREEMENT) -> Dict[str, dict]:
    """Write ``model.onnx`` / ``model.tflite`` into ``out_dir``, check each against torch, and
    return per-format ``path``, ``max_abs_diff``, ``export_seconds``, ``precision``.

    fp32 artifacts are checked on a seeded random input. ``precision="int8"`` quantizes with
    the runtime's own quantizer, calibrated on ``calibration()`` (a function returning batches
    N x 3 x H x W of training images, called once per use) and checked on real images
    (:func:`check_int8`); the result also carries the op histogram, the ops left in float
    and the quantization settings. ``precision="fp16"`` (TFLite only: ONNX is refused in one
    line before anything is written) stores the weights as float16
    (:func:`~supernet.quantize.export_fp16`) and is checked on a seeded random input against
    torch within a tolerance relative to the logits (fp16 weights carry about 3 significant
    digits); it carries the op histogram, the number of fp16 weight tensors and the settings.
    """
    precision = parse_precision(precision)
    fmts = parse_formats(formats)
    if precision == "fp16":
        for fmt in fmts:
            check_fp16_format(fmt, f"--precision fp16 --format {fmt}")
    if precision == "int8":
        if calibration is None:
            raise QuantizeError("int8 export needs calibration images of the task's training "
                                "data (give --data)")
        quant = quant or QuantSettings()
    out = Path(out_dir)
    model = model.cpu().eval()
    res: Dict[str, dict] = {}
    for fmt in fmts:
        path = out / FILE_NAMES[fmt]
        t0 = time.perf_counter()
        if precision == "int8":
            info = export_int8(model, input_shape, path, fmt, calibration(), quant)
            secs = time.perf_counter() - t0
            check = check_int8(model, path, _check_images(calibration), min_agreement=min_agreement)
            diff = check.pop("max_abs_diff")
            extra = {**check, **info}  # op histogram, float islands, settings, images used
        elif precision == "fp16":
            extra = export_fp16(model, input_shape, path, fmt)
            secs = time.perf_counter() - t0
            diff = check_tflite(model, path, input_shape, atol=FP16_REL_TOL, seed=seed,
                                relative=True)
        elif fmt == "onnx":
            export_onnx(model, input_shape, path)
            secs = time.perf_counter() - t0
            diff = check_onnx(model, path, input_shape, atol=1e-4, seed=seed, relative=True)
            extra = {"op_types": onnx_op_types(path)}
        else:
            from supernet.export_tflite import export_tflite

            export_tflite(model, input_shape, path)
            secs = time.perf_counter() - t0
            diff = check_tflite(model, path, input_shape, atol=1e-3, seed=seed)
            extra = {}
        res[fmt] = {"path": str(path), "precision": precision, "max_abs_diff": diff,
                    "export_seconds": round(secs, 3), "bytes": path.stat().st_size, **extra}
    return res


def resnet_subnet_metadata(space, arch, artifacts: Dict[str, dict], **extra) -> dict:
    """:func:`~ofa_deploy.specialize.subnet_metadata` for a ResNet-family subnet (a
    :class:`supernet.resnet.ResNetArch`): the same keys, params and MACs counted by
    :func:`supernet.resnet.resnet_arch_cost`."""
    from supernet.fileio import sha256_file
    from supernet.resnet_space import resnet_arch_cost

    from .specialize import _INT8_KEYS

    cost = resnet_arch_cost(space, arch)
    files = {}
    for fmt, a in artifacts.items():
        p = Path(a["path"])
        files[fmt] = {"path": p.name, "bytes": p.stat().st_size, "sha256": sha256_file(p),
                      "max_abs_diff": a.get("max_abs_diff"), "precision": a.get("precision", "fp32")}
        files[fmt].update({k: a[k] for k in _INT8_KEYS if k in a})
    return {"space": space.name, "arch": arch.to_dict(), "arch_string": arch.to_string(space),
            "input_shape": [1, 3, arch.r, arch.r], "params": cost["params"],
            "macs": cost["macs"], "files": files, **extra}
