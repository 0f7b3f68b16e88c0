"""Post-training int8 quantization of exported subnets, with the runtimes' own quantizers.

ONNX: static QDQ quantization by ``onnxruntime.quantization`` (per-channel int8 weights, uint8
activations, calibrated on images of the task's training data). onnxruntime fuses each
``DequantizeLinear -> op -> QuantizeLinear`` triple into an integer kernel when it has one, so
the QDQ file is what a phone or server runtime consumes, not a simulation.

The settings travel with the artifact (``QuantSettings.get_state``) so that a latency table, a
report and a benchmark can say which quantization they describe.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping

import numpy as np

from .errors import OfaDeployError, first_line

__all__ = ["PRECISIONS", "QuantizeError", "QuantSettings", "quantize_onnx", "float_islands",
           "parse_precision", "export_int8", "export_fp16", "check_fp16_format", "fp16_settings",
           "FP16_FORMATS", "FP16_REFUSAL",
           "random_calibration"]

PRECISIONS = ("fp32", "int8", "fp16")
# fp16 is offered where a runtime has a use for it: TFLite (fp16 weights; GPU delegates and
# ARM CPUs with fp16 arithmetic compute in fp16) and CUDA (torch .half()). onnxruntime's CPU
# provider wraps an fp16 ONNX model's ops in casts to and from fp32 (96 Cast nodes in the
# bundled default's smallest subnet, 180 in its largest) and ran it 2-9% slower than the fp32
# file (benchmarks/int8/fp16/onnx_fp16.json).
FP16_FORMATS = ("tflite",)
FP16_REFUSAL = ("fp16 is offered for TFLite and CUDA only; onnxruntime's CPU provider casts an "
                "fp16 ONNX model back to fp32 around its ops and runs it slower than the fp32 one")
_ACTIVATION_TYPES = ("uint8", "int8")
_CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


class QuantizeError(OfaDeployError):
    """A model could not be quantized, or quantization settings are invalid."""


def parse_precision(text: str) -> str:
    """``"fp32"``/``"int8"``/``"fp16"`` (any case) or a one-line error naming the valid
    choices."""
    p = str(text).strip().lower()
    if p not in PRECISIONS:
        raise QuantizeError(f"unknown precision {text!r}; choose from {', '.join(PRECISIONS)}")
    return p


@dataclass(frozen=True)
class QuantSettings:
    """How an int8 artifact was made; recorded in model.json and in int8 latency tables.

    ``calib_images`` images of the training data (never the test split) calibrate the
    activation ranges; ``per_channel`` gives each output channel of a conv its own weight scale
    (needed for depthwise convs, whose channels differ by orders of magnitude).
    ``reduce_range`` keeps weights to 7 bits: onnxruntime's uint8 x int8 kernels on x86 CPUs
    without VNNI (AVX2 only) add pairs of products in 16 bits, which saturate with full-range
    weights. Measured on an AVX2-only EPYC, the bundled default's smallest subnet picked the
    float model's class on 89% of 64 images without it and 98% with it. One file has to be
    right on every CPU it meets, so the default is on.
    """

    activations: str = "uint8"
    weights: str = "int8"
    per_channel: bool = True
    calibration: str = "minmax"
    calib_images: int = 256
    format: str = "qdq"
    reduce_range: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.activations not in _ACTIVATION_TYPES:
            problems.append(f"activations must be one of {', '.join(_ACTIVATION_TYPES)}, "
                            f"not {self.activations!r}")
        if self.weights != "int8":
            problems.append(f"weights must be int8, not {self.weights!r}")
        if self.calibration not in _CALIBRATION_METHODS:
            problems.append(f"calibration must be one of {', '.join(_CALIBRATION_METHODS)}, "
                            f"not {self.calibration!r}")
        if not isinstance(self.calib_images, int) or self.calib_images < 1:
            problems.append(f"calib_images must be a positive integer, not {self.calib_images!r}")
        if not isinstance(self.reduce_range, bool):
            problems.append(f"reduce_range must be true or false, not {self.reduce_range!r}")
        if self.format != "qdq":
            problems.append(f"format must be qdq, not {self.format!r}")
        if problems:
            raise QuantizeError("invalid quantization settings: " + "; ".join(problems))

    def get_state(self) -> dict:
        """Plain-data form (JSON-ready), the inverse of :meth:`from_state`."""
        return {"precision": "int8", **asdict(self)}

    @classmethod
    def from_state(cls, state: Mapping) -> "QuantSettings":
        """Settings from :meth:`get_state` output; unknown keys are an error, not ignored."""
        names = {f.name for f in fields(cls)}
        extra = sorted(set(state) - names - {"precision"})
        if extra:
            raise QuantizeError(f"unknown quantization setting(s): {', '.join(extra)}")
        kw = {k: v for k, v in state.items() if k in names}
        kw.setdefault("reduce_range", False)  # records older than the field used full range
        return cls(**kw)


class _Reader:
    """Feeds calibration batches to onnxruntime's calibrator one at a time."""

    def __init__(self, name: str, batches: Iterable[np.ndarray]):
        self._name = name
        self._batches = iter(batches)

    def get_next(self):
        x = next(self._batches, None)
        return None if x is None else {self._name: np.ascontiguousarray(x, dtype=np.float32)}


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    # onnxruntime.quantization logs one warning per op it leaves in float; the caller gets
    # the same facts as data (float_islands).
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _split_batches(batches: Iterable[np.ndarray], limit: int) -> Iterator[np.ndarray]:
    # onnxruntime's calibrator runs one sample at a time through the augmented graph; batches of
    # one keep the model's fixed input shape.
    seen = 0
    for batch in batches:
        for x in np.asarray(batch, dtype=np.float32):
            if seen >= limit:
                return
            yield x[None]
            seen += 1


def quantize_onnx(float_path: "str | os.PathLike", out_path: "str | os.PathLike",
                  batches: Iterable[np.ndarray], settings: QuantSettings = QuantSettings()) -> dict:
    """Quantize a float ONNX model to int8 QDQ, calibrated on ``batches`` (N x 3 x H x W).

    Writes ``out_path`` atomically and returns ``{"quantization": settings, "calibrated_on":
    images used, "op_types": op histogram, "float_islands": ops left in float}``.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    float_path, out_path = Path(float_path), Path(out_path)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    input_name = ort.InferenceSession(str(float_path), opts,
                                      providers=["CPUExecutionProvider"]).get_inputs()[0].name
    samples: List[np.ndarray] = list(_split_batches(batches, settings.calib_images))
    if not samples:
        raise QuantizeError("int8 quantization needs calibration images, and none were given "
                            "(pass training data with --data)")
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings.calibration]
    act = QuantType.QUInt8 if settings.activations == "uint8" else QuantType.QInt8
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".quantize-") as tmp:
        pooled = Path(tmp) / "pooled.onnx"
        prepared = Path(tmp) / "prepared.onnx"
        staged = Path(tmp) / "int8.onnx"
        try:
            global_pools(float_path, pooled)
            with _quiet_quantizer():
                quant_pre_process(str(pooled), str(prepared))
                quantize_static(str(prepared), str(staged), _Reader(input_name, samples),
                                quant_format=QuantFormat.QDQ, per_channel=settings.per_channel,
                                activation_type=act, weight_type=QuantType.QInt8,
                                calibrate_method=method, reduce_range=settings.reduce_range,
                                extra_options={"CalibTensorRangeSymmetric": False})
        except OfaDeployError:
            raise
        except Exception as exc:
            raise QuantizeError(f"int8 quantization of {float_path.name} failed: "
                                f"{first_line(exc)}") from exc
        os.replace(staged, out_path)
    return {"quantization": settings.get_state(), "calibrated_on": len(samples),
            "op_types": _op_types(out_path), "float_islands": float_islands(out_path)}


def export_int8(model, input_shape, path: "str | os.PathLike", fmt: str,
                batches: Iterable[np.ndarray], settings: QuantSettings = QuantSettings()) -> dict:
    """Write ``model`` as an int8 ``fmt`` file (``onnx``: float export then :func:`quantize_onnx`
    QDQ; ``tflite``: full-integer :func:`~supernet.export_tflite.export_tflite_int8`),
    calibrated on ``batches``. The one int8 conversion behind the shipped artifacts
    (:func:`ofa_deploy.export.export_artifacts`) and the int8 latency tables' op models and
    subnets, so a table times what ships. Returns the converter's summary (op histogram, float
    islands, calibration count; ``quantization``: the settings as recorded)."""
    path = Path(path)
    if fmt == "onnx":
        from .export import export_onnx

        path.parent.mkdir(parents=True, exist_ok=True)
        float_path = path.with_name(f".{path.stem}.{os.getpid()}.fp32.onnx")
        try:
            export_onnx(model, input_shape, float_path)
            return quantize_onnx(float_path, path, batches, settings)
        finally:
            float_path.unlink(missing_ok=True)
    if fmt == "tflite":
        from .export_tflite import export_tflite_int8

        info = export_tflite_int8(model, input_shape, path, batches,
                                  calib_images=settings.calib_images,
                                  per_channel=settings.per_channel)
        # reduce_range is onnxruntime's (its AVX2 kernels); PT2E quantizes to the full range
        return {**info, "quantization": {**settings.get_state(), "format": "pt2e-full-integer",
                                         "activations": "int8", "reduce_range": False}}
    raise QuantizeError(f"no int8 conversion to artifact format {fmt!r}")


def check_fp16_format(fmt: str, what: str = "") -> None:
    """Raise the one-line :class:`QuantizeError` for an fp16 ``fmt`` that is not offered
    (``onnx``: see :data:`FP16_FORMATS`); ``what`` prefixes the message (e.g. a target)."""
    if fmt not in FP16_FORMATS:
        raise QuantizeError((f"{what}: " if what else "") + FP16_REFUSAL)


def export_fp16(model, input_shape, path: "str | os.PathLike", fmt: str) -> dict:
    """Write ``model`` as an fp16 ``fmt`` file: ``tflite`` only, fp16 weights
    (:func:`~supernet.export_tflite.export_tflite_fp16`); ``onnx`` is refused
    (:func:`check_fp16_format`). The one fp16 conversion behind the shipped artifacts and the
    fp16 latency tables' op models and subnets. Returns the converter's summary with
    ``quantization``, the settings as recorded."""
    check_fp16_format(fmt)
    from .export_tflite import export_tflite_fp16

    info = export_tflite_fp16(model, input_shape, path)
    return {**info, "quantization": fp16_settings()}


def fp16_settings() -> dict:
    """How fp16 artifacts are made, as recorded in model.json and fp16 latency tables."""
    from .export_tflite import fp16_tool_version

    return {"precision": "fp16", "format": "weight-only-float16", "weights": "float16",
            "activations": "float32", "tool": f"ai-edge-quantizer {fp16_tool_version()}"}


def random_calibration(input_shape, n: int, seed: int) -> List[np.ndarray]:
    """``n`` seeded standard-normal inputs of ``input_shape`` (batch 1 each), as calibration
    batches. Fit for latency only: the ranges they calibrate change the scales of an int8
    model, never which kernels it runs, so timing needs no real images (accuracy does)."""
    rng = np.random.default_rng(seed)
    shape = (1,) + tuple(int(s) for s in input_shape[1:])
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(int(n))]


def _op_types(path: Path) -> Dict[str, int]:
    import onnx

    return dict(Counter(n.op_type for n in onnx.load(str(path)).graph.node))


def float_islands(path: "str | os.PathLike") -> Dict[str, int]:
    """Op type -> count of the ops of a QDQ model that onnxruntime still runs in float.

    Read from the graph as onnxruntime optimizes it for the CPU (the fusions that turn
    ``DequantizeLinear -> op -> QuantizeLinear`` into integer kernels): an op that still reads a
    ``DequantizeLinear`` output there is a float island, with a dequantize/requantize round trip
    around it (HardSigmoid, for one, has no integer kernel in onnxruntime).
    """
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="ofa-int8-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # EXTENDED holds the QDQ fusions but not the CPU-specific layout rewrite (NCHWc)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(optimized)
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(optimized)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    islands: Counter = Counter()
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if any(i in dequantized for i in node.input):
            islands[node.op_type] += 1
    return dict(islands)


def global_pools(float_path: "str | os.PathLike", out_path: "str | os.PathLike") -> int:
    """Rewrite spatial means (``ReduceMean`` over H, W with keepdims) as ``GlobalAveragePool``.

    The same arithmetic, but onnxruntime has an integer kernel for the pool and none for the
    mean, so the squeeze-excite blocks and the head stay in int8 (about 8% of the int8 run
    time of ofa-mbv3-w1.0 at 160 px here). Returns how many nodes were rewritten.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(float_path))
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(a.t) for n in model.graph.node
                   if n.op_type == "Constant" for a in n.attribute if a.name == "value"})
    nodes, rewritten = [], 0
    for node in model.graph.node:
        if node.op_type == "ReduceMean":
            attrs = {a.name: a for a in node.attribute}
            if "axes" in attrs:
                axes = list(attrs["axes"].ints)
            elif len(node.input) > 1 and node.input[1] in consts:
                axes = [int(a) for a in np.ravel(consts[node.input[1]])]
            else:
                axes = None
            keepdims = attrs["keepdims"].i if "keepdims" in attrs else 1
            if axes is not None and sorted(a % 4 for a in axes) == [2, 3] and keepdims == 1:
                nodes.append(helper.make_node("GlobalAveragePool", [node.input[0]],
                                              list(node.output), name=node.name))
                rewritten += 1
                continue
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(out_path))
    return rewritten
