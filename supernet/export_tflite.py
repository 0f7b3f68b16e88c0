"""PyTorch -> LiteRT (.tflite) conversion through litert-torch (optional extra ``tflite``).

litert-torch is imported only when a conversion is asked for, so everything else works without
it; a missing install is one clear error naming the extra to install.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import torch

from .errors import OfaDeployError, first_line

__all__ = ["TFLiteExportError", "export_tflite", "export_tflite_fp16", "export_tflite_int8",
           "integer_friendly", "fp16_tool_version",
           "litert_torch_version", "quiet_native_output", "require_litert_torch",
           "tflite_dtype_counts", "tflite_graph_summary"]


class TFLiteExportError(OfaDeployError):
    """litert-torch is missing, or it could not convert a model."""


def require_litert_torch():
    """The imported ``litert_torch`` module; raises :class:`TFLiteExportError` with the install
    command when it is missing. Imported only on need because it takes seconds."""
    try:
        import litert_torch
    except ImportError as exc:
        raise TFLiteExportError(
            f"converting to .tflite needs litert-torch, which is not installed ({exc}); "
            f"install it with: pip install 'ofa-deploy[tflite]'") from None
    return litert_torch


def litert_torch_version() -> str | None:
    """Installed litert-torch version without importing it (importing it costs seconds)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("litert-torch")
    except PackageNotFoundError:
        return None


def _flush() -> None:
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass


@contextlib.contextmanager
def quiet_native_output() -> Iterator[Path]:
    """Silence litert-torch's progress console and the converter's C++ logging (written to
    the process's stdout/stderr file descriptors, so Python redirection cannot catch them);
    yields the file that collects them, for error messages.

    Process-wide state is put back on exit, also when the body raises: file descriptors 1 and 2
    point where they pointed before, and ``os.environ`` holds what it held (this sets
    ``LITERT_TORCH_SHOW_PROGRESS``, and importing the converter may set variables of its own)."""
    env_before = dict(os.environ)
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    log = tempfile.NamedTemporaryFile(prefix="ofa-litert-", suffix=".log", delete=False)
    saved = []
    _flush()
    try:
        for fd in (1, 2):
            try:
                dup = os.dup(fd)
            except OSError:  # no such descriptor (embedded interpreters): leave it
                continue
            saved.append((fd, dup))
            os.dup2(log.fileno(), fd)
        yield Path(log.name)
    finally:
        _flush()
        for fd, dup in saved:
            os.dup2(dup, fd)
            os.close(dup)
        log.close()
        _restore_environ(env_before)
        with contextlib.suppress(OSError):
            os.unlink(log.name)


def _restore_environ(before: dict) -> None:
    """Make ``os.environ`` equal ``before`` again (only the keys that differ are touched)."""
    for key in [k for k in os.environ if k not in before]:
        del os.environ[key]
    for key, value in before.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def export_tflite(model: torch.nn.Module, input_shape: Sequence[int], path: "str | os.PathLike",
                  *, quiet: bool = True) -> Path:
    """Convert ``model`` (eval mode, one float32 NCHW input of ``input_shape``) to ``path``,
    atomically. The .tflite keeps the NCHW interface; litert-torch moves the work inside to
    NHWC, which is what LiteRT's CPU kernels (XNNPACK) run."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    sample = (torch.zeros(tuple(int(s) for s in input_shape)),)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    ctx = quiet_native_output() if quiet else contextlib.nullcontext(None)
    try:
        with ctx as log, torch.no_grad():
            lt = require_litert_torch()  # importing it logs too: inside the quiet block
            try:
                edge = lt.convert(model, sample)
                edge.export(str(tmp))
            except Exception as exc:
                detail = ""
                if log is not None:
                    tail = [ln for ln in Path(log).read_text(errors="replace").splitlines()
                            if ln.strip()][-1:]
                    detail = f" ({first_line(tail[0], 200)})" if tail else ""
                raise TFLiteExportError(f"litert-torch could not convert the model: "
                                        f"{first_line(exc)}{detail}") from None
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def fp16_tool_version() -> str | None:
    """Installed ai-edge-quantizer version (the tool that casts TFLite weights to fp16; it
    comes with litert-torch), without importing it."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("ai-edge-quantizer")
    except PackageNotFoundError:
        return None


def export_tflite_fp16(model: torch.nn.Module, input_shape: Sequence[int],
                       path: "str | os.PathLike", *, quiet: bool = True) -> dict:
    """Convert ``model`` to a .tflite whose conv and fully-connected weights are stored as
    float16, each behind a DEQUANTIZE op (fp32 input and output, float activations).

    The fp32 conversion (:func:`export_tflite`), then ai-edge-quantizer's weight-only
    ``float_casting`` recipe: the TFLite converter's "float16 quantization". It halves the
    weights; the runtime decides where fp16 arithmetic happens (XNNPACK expands the weights to
    fp32 at load time on CPUs without fp16 arithmetic, GPU delegates compute in fp16).
    Returns the op histogram, the number of XNNPACK partitions and of fp16 weight tensors."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    float_path = path.with_name(f".{path.stem}.{os.getpid()}.fp32.tflite")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        export_tflite(model, input_shape, float_path, quiet=quiet)
        if fp16_tool_version() is None:
            raise TFLiteExportError("fp16 .tflite files need ai-edge-quantizer (it comes with "
                                    "litert-torch): pip install 'ofa-deploy[tflite]'")
        ctx = quiet_native_output() if quiet else contextlib.nullcontext(None)
        with ctx:
            from ai_edge_quantizer import qtyping, quantizer
            from ai_edge_quantizer.algorithm_manager import AlgorithmName

            try:
                q = quantizer.Quantizer(str(float_path))
                q.add_weight_only_config(regex=".*",
                                         operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                         num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)
                res = q.quantize(enable_progress_bar=False, enable_progress_report=False)
            except Exception as exc:
                raise TFLiteExportError(f"ai-edge-quantizer could not cast the weights to "
                                        f"fp16: {first_line(exc)}") from None
        tmp.write_bytes(bytes(res.quantized_model))
        os.replace(tmp, path)
    finally:
        float_path.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    summary = tflite_graph_summary(path)
    summary.pop("float_islands")  # every op of an fp16-weight graph computes in float
    return {**summary, "fp16_weights": tflite_dtype_counts(path).get("float16", 0)}


def tflite_dtype_counts(path: "str | os.PathLike") -> dict:
    """dtype name -> number of tensors of that type in a .tflite (as LiteRT lists them)."""
    from collections import Counter

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(path), num_threads=1).get_tensor_details()
    return dict(Counter(np.dtype(d["dtype"]).name for d in details))


class _Hardsigmoid6(torch.nn.Module):
    """``relu6(x + 3) / 6``: the same function as ``nn.Hardsigmoid``, spelled in ops that
    LiteRT has int8 kernels for (litert-torch lowers a quantized hardsigmoid to float ADD/MUL
    between a dequantize and a quantize, a float island in every squeeze-excite block)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.relu6(x + 3.0) * (1.0 / 6.0)


def integer_friendly(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` with every ``nn.Hardsigmoid`` replaced by :class:`_Hardsigmoid6`
    (numerically identical), so that the int8 graph has no float islands."""
    import copy

    out = copy.deepcopy(model).eval()

    def swap(module: torch.nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, torch.nn.Hardsigmoid):
                setattr(module, name, _Hardsigmoid6())
            else:
                swap(child)

    swap(out)
    return out


def _full_integer_quantizer(per_channel: bool):
    """litert-torch's PT2E quantizer, also annotating the elementwise ops its pattern table
    misses on torch.export graphs (add, mul, hardswish, relu6, mean), so every op gets int8
    inputs and outputs."""
    from litert_torch.quantize.pt2e_quantizer import (PT2EQuantizer,
                                                      get_symmetric_quantization_config)
    from litert_torch.quantize.pt2e_quantizer_utils import (get_input_act_qspec,
                                                            get_output_act_qspec)
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    aten = torch.ops.aten
    elementwise = {aten.add.Tensor, aten.mul.Tensor, aten.hardswish.default,
                   aten.hardswish_.default, aten.hardsigmoid.default, aten.hardsigmoid_.default,
                   aten.relu.default, aten.relu_.default, aten.relu6.default,
                   aten.hardtanh.default, aten.mean.dim, aten.adaptive_avg_pool2d.default}

    class FullIntegerQuantizer(PT2EQuantizer):
        def annotate(self, model):
            model = super().annotate(model)
            cfg = self.global_config
            for node in model.graph.nodes:
                if node.op != "call_function" or node.target not in elementwise:
                    continue
                done = node.meta.get("quantization_annotation")
                if done is not None and done._annotated:
                    continue
                inputs = {a: get_input_act_qspec(cfg) for a in node.args
                          if isinstance(a, torch.fx.Node)}
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map=inputs, output_qspec=get_output_act_qspec(cfg),
                    _annotated=True)
            return model

    return FullIntegerQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=per_channel, is_dynamic=False))


def export_tflite_int8(model: torch.nn.Module, input_shape: Sequence[int],
                       path: "str | os.PathLike", batches, *, calib_images: int,
                       per_channel: bool = True, quiet: bool = True) -> dict:
    """Convert ``model`` to a full-integer .tflite (int8 weights, activations, input and
    output), calibrated on ``batches`` (N x 3 x H x W arrays of training images).

    PT2E post-training quantization with litert-torch's quantizer: ``torch.export``, observers
    inserted, calibration images run through, then converted. Returns the op histogram, the ops
    that still take a float input (``float_islands``; empty for the OFA MobileNetV3 nets) and
    the input/output quantization (scale, zero point) a caller needs to feed the model.
    """
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(s) for s in input_shape)
    friendly = integer_friendly(model)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    ctx = quiet_native_output() if quiet else contextlib.nullcontext(None)
    seen = 0
    try:
        with ctx, torch.no_grad():
            lt = require_litert_torch()
            from litert_torch.quantize.quant_config import QuantConfig
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

            sample = (torch.zeros(shape),)
            try:
                quantizer = _full_integer_quantizer(per_channel)
                graph = torch.export.export(friendly, sample).module()
                prepared = prepare_pt2e(graph, quantizer)
                for batch in batches:
                    for x in np.asarray(batch, dtype=np.float32):
                        if seen >= calib_images:
                            break
                        prepared(torch.from_numpy(x[None]))
                        seen += 1
                    if seen >= calib_images:
                        break
                if seen == 0:
                    raise TFLiteExportError("int8 conversion needs calibration images, and none "
                                            "were given (pass training data with --data)")
                converted = convert_pt2e(prepared, fold_quantize=False)
                edge = lt.convert(converted, sample, quant_config=QuantConfig(
                    pt2e_quantizer=quantizer))
                edge.export(str(tmp))
            except OfaDeployError:
                raise
            except Exception as exc:
                raise TFLiteExportError(f"litert-torch could not make an int8 model: "
                                        f"{first_line(exc)}") from None
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return {"calibrated_on": seen, **tflite_graph_summary(path)}


def tflite_graph_summary(path: "str | os.PathLike") -> dict:
    """Op histogram of a .tflite, its number of XNNPACK partitions, the ops that take a float
    input apart from (de)quantize (``float_islands``) and the input/output dtype and
    quantization (scale, zero point)."""
    from collections import Counter

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()  # applies the default (XNNPACK) delegate
    ops = interp._get_ops_details()  # the public API lists tensors, not operators
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    islands = Counter(op["op_name"] for op in ops
                      if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE", "DELEGATE")
                      and any(i >= 0 and tensors[i]["dtype"] == np.float32 for i in op["inputs"]))

    def io(d):
        scale, zero = d["quantization"]
        return {"dtype": np.dtype(d["dtype"]).name, "scale": float(scale), "zero_point": int(zero)}

    # Each DELEGATE node is one XNNPACK partition: ops XNNPACK cannot take split the graph,
    # and every split costs a hand-over between XNNPACK and LiteRT's own kernels.
    return {"op_types": dict(Counter(op["op_name"] for op in ops if op["op_name"] != "DELEGATE")),
            "delegate_partitions": sum(op["op_name"] == "DELEGATE" for op in ops),
            "float_islands": dict(islands), "input": io(interp.get_input_details()[0]),
            "output": io(interp.get_output_details()[0])}
