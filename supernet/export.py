"""ONNX export of static networks (extracted subnets) and a numerical check in onnxruntime.

The file written is always a single self-contained ``.onnx`` (weights inside), written
atomically, so a half-written model never sits where a profiler or a phone could pick it up.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import torch
import torch.nn as nn

from .errors import OfaDeployError, first_line
from .fileio import shared_file_mode

__all__ = ["ExportError", "export_onnx", "check_onnx", "onnx_op_types", "INPUT_NAME",
           "OUTPUT_NAME"]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


class ExportError(OfaDeployError, RuntimeError):
    """An export that failed or whose result does not compute what the torch model computes."""


def _shape(input_shape: Sequence[int]) -> tuple:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ExportError(f"input shape must be a sequence of integers, got {input_shape!r}") from None
    if len(shape) != 4 or min(shape) < 1:
        raise ExportError(f"input shape must be (N, C, H, W) with positive sizes, got {shape}")
    return shape


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _export_torchscript(model, x, path, opset, dynamic_batch):
    kw = {}
    if dynamic_batch:
        kw["dynamic_axes"] = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    torch.onnx.export(model, (x,), path, dynamo=False, opset_version=opset,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      do_constant_folding=True, **kw)


def _export_dynamo(model, x, path, opset, dynamic_batch):
    kw = {}
    if dynamic_batch:
        kw["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    program = torch.onnx.export(model, (x,), dynamo=True, opset_version=opset,
                                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                optimize=True, verbose=False, **kw)
    program.save(path, external_data=False)


# The dynamo exporter builds opset 18 graphs; asking it for less runs a down-converter that
# fails on ReduceMean and leaves the graph at 18 anyway.
DYNAMO_MIN_OPSET = 18


@contextlib.contextmanager
def _quiet_loggers(names=("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")):
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def export_onnx(model: nn.Module, input_shape: Sequence[int], path: "str | os.PathLike", *,
                opset: int | None = None, dynamo: bool = False,
                dynamic_batch: bool = False) -> Path:
    """Export ``model`` (in eval mode) for inputs of ``input_shape`` to one ``.onnx`` file.

    ``dynamo=False`` (the default) uses the TorchScript exporter: on extracted subnets it is
    about ten times faster than the dynamo exporter and gives the same standard op set (BN
    folded into Conv, HardSwish/HardSigmoid kept as single ops); ``dynamo=True`` is there for
    models the TorchScript tracer cannot handle. ``opset`` defaults to 17 (TorchScript) or 18
    (dynamo, its minimum). ``dynamic_batch`` leaves the batch size free.
    """
    shape = _shape(input_shape)
    if opset is None:
        opset = DYNAMO_MIN_OPSET if dynamo else 17
    if dynamo and opset < DYNAMO_MIN_OPSET:
        raise ExportError(f"the dynamo exporter writes opset {DYNAMO_MIN_OPSET} or newer, "
                          f"not {opset} (use dynamo=False for older opsets)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    x = torch.zeros(shape, device=device)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp.onnx", dir=path.parent)
    os.close(fd)
    try:
        with _eval_mode(model), torch.no_grad(), warnings.catch_warnings(), _quiet_loggers(), \
                contextlib.redirect_stdout(io.StringIO()):
            # The exporters chat on stdout/warnings about things that do not apply to
            # fixed-shape CNNs; a real failure still raises.
            warnings.simplefilter("ignore")
            (_export_dynamo if dynamo else _export_torchscript)(model, x, tmp, opset,
                                                                 dynamic_batch)
        leftovers = [p for p in path.parent.iterdir()
                     if p.name.startswith(Path(tmp).name) and p.name != Path(tmp).name]
        if leftovers:  # weights spilled to a side file: the result would not be one file
            raise ExportError(f"ONNX export of {type(model).__name__} wrote external data "
                              f"({', '.join(p.name for p in leftovers)}); expected one file")
        os.chmod(tmp, shared_file_mode())  # mkstemp made it 0600; models are shared
        os.replace(tmp, path)
    except OfaDeployError:
        raise
    except Exception as exc:
        raise ExportError(f"ONNX export of {type(model).__name__} failed: "
                          f"{first_line(exc)}") from exc
    finally:
        for p in path.parent.glob(Path(tmp).name + "*"):
            p.unlink(missing_ok=True)
    return path


def onnx_op_types(path: "str | os.PathLike") -> Dict[str, int]:
    """Op type -> count over the main graph of an ONNX file (also a readability check)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ExportError(f"cannot read ONNX file {path}: {first_line(exc, 200)}") from None
    return dict(Counter(node.op_type for node in model.graph.node))


def check_onnx(model: nn.Module, path: "str | os.PathLike", input_shape: Sequence[int], *,
               atol: float = 1e-4, seed: int = 0, relative: bool = False) -> float:
    """Run the ONNX file in onnxruntime (CPU) and ``model`` in torch on the same seeded input;
    return the largest absolute difference, raising :class:`ExportError` above ``atol``
    (``relative``: ``atol`` times 1 + the largest absolute torch output, since float32
    round-off grows with the outputs: a random-weight subnet's logits of ~10 differ by 1e-4
    between two correct runtimes)."""
    import onnxruntime as ort

    shape = _shape(input_shape)
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot run {path}: {first_line(exc)}") from None
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    with _eval_mode(model), torch.no_grad():
        want = model(torch.from_numpy(x).to(device)).float().cpu().numpy()
    if got.shape != want.shape:
        raise ExportError(f"{path}: onnxruntime output shape {got.shape} != torch {want.shape}")
    diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    if relative:
        atol = atol * (1.0 + float(np.max(np.abs(want))))
    if not np.isfinite(diff) or diff > atol:
        raise ExportError(f"{path}: onnxruntime and torch differ by {diff:.3g} (atol {atol:g})")
    return diff
