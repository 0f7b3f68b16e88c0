"""Finding the artifacts to measure, identifying them (relative name + sha256), and reading
their input shapes from the model files."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from supernet.errors import first_line
from supernet.fileio import sha256_file

from .errors import BenchError

__all__ = ["ARTIFACT_SUFFIXES", "REPORT_NAME", "Artifact", "read_input_shape", "read_precision",
           "collect_artifacts"]

ARTIFACT_SUFFIXES = {".onnx": "onnx", ".tflite": "tflite"}
REPORT_NAME = "report.json"


@dataclass(frozen=True)
class Artifact:
    """One model file to measure. ``name`` + ``sha256`` identify it across runs."""

    path: Path
    root: Path
    name: str
    sha256: str
    format: str
    input_shape: Tuple[int, ...]
    report: Optional[Dict[str, Any]] = field(default=None, compare=False, hash=False)
    # "fp32", "int8" or "fp16": from the sibling model.json when it describes the file, else read
    # from the graph (quantize nodes / int8 tensors)
    precision: str = field(default="fp32", compare=False, hash=False)
    # a human name for tables: the sibling model.json's "name" (export of a reference
    # net.config records the config's), when that model.json lists this file; never identity
    label: Optional[str] = field(default=None, compare=False, hash=False)

    @property
    def identity(self) -> Tuple[str, str]:
        """``(name, sha256)``: what matches this artifact to its results across runs."""
        return (self.name, self.sha256)


def _static_shape(path: Path, name: str, dims: Sequence[Any]) -> Tuple[int, ...]:
    """Concrete input shape: a free leading (batch) dimension becomes 1, any other is an error."""
    shape = []
    for i, d in enumerate(dims):
        if isinstance(d, (int,)) and not isinstance(d, bool) and d > 0:
            shape.append(int(d))
        elif i == 0:
            shape.append(1)
        else:
            raise BenchError(f"{path}: input {name!r} has a dynamic dimension {d!r} at axis {i}; "
                             f"export the model with a fixed input size")
    if not shape:
        raise BenchError(f"{path}: input {name!r} is a scalar; expected an image tensor")
    return tuple(shape)


def _onnx_input_shape(path: Path) -> Tuple[int, ...]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError; any failure means unreadable
        raise BenchError(f"{path}: not a readable ONNX model "
                         f"({first_line(exc, 400, with_type=True)})") from None
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise BenchError(f"{path}: expected one graph input, found {len(inputs)} "
                         f"({', '.join(i.name for i in inputs) or 'none'})")
    inp = inputs[0]
    if not inp.type.HasField("tensor_type"):
        raise BenchError(f"{path}: input {inp.name!r} is not a tensor")
    dims = []
    for d in inp.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
    return _static_shape(path, inp.name, dims)


def _tflite_interpreter_cls():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the older standalone runtime has the same API
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore
        except ImportError:
            raise BenchError("reading .tflite artifacts needs ai-edge-litert "
                             "(pip install ai-edge-litert)") from None
    return Interpreter


def _tflite_input_shape(path: Path) -> Tuple[int, ...]:
    Interpreter = _tflite_interpreter_cls()
    try:
        details = Interpreter(model_path=str(path)).get_input_details()
    except Exception as exc:
        raise BenchError(f"{path}: not a readable TFLite model "
                         f"({first_line(exc, 400, with_type=True)})") from None
    if len(details) != 1:
        raise BenchError(f"{path}: expected one model input, found {len(details)}")
    d = details[0]
    sig = d.get("shape_signature")
    dims = [int(x) for x in (sig if sig is not None and len(sig) else d["shape"])]
    return _static_shape(path, d.get("name", "input"), [x if x > 0 else "?" for x in dims])


def read_input_shape(path: "str | os.PathLike") -> Tuple[int, ...]:
    """The model's input shape, read from the file (ONNX graph input / TFLite input details)."""
    path = Path(path)
    fmt = ARTIFACT_SUFFIXES.get(path.suffix.lower())
    if fmt == "onnx":
        return _onnx_input_shape(path)
    if fmt == "tflite":
        return _tflite_input_shape(path)
    raise BenchError(f"{path}: not a model artifact (expected .onnx or .tflite)")


def _read_report(model_path: Path) -> Optional[Dict[str, Any]]:
    """Scalar fields of a sibling ``report.json`` (a specialize output), recorded with results."""
    rp = model_path.with_name(REPORT_NAME)
    if not rp.is_file():
        return None
    try:
        data = json.loads(rp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"error": f"unreadable {REPORT_NAME}"}
    if not isinstance(data, Mapping):
        return None
    return {str(k): v for k, v in data.items()
            if isinstance(v, (str, int, float, bool)) or v is None}


def _model_record(model_path: Path, sha256: str) -> Tuple[Optional[str], Optional[str]]:
    """``(precision, name)`` the sibling ``model.json`` (written by ``export``/``specialize``)
    records for this very file (listed under ``files`` with the same name and hash); each
    None if it does not."""
    mp = model_path.with_name("model.json")
    try:
        doc = json.loads(mp.read_text(encoding="utf-8"))
        files = doc.get("files") or {}
    except (OSError, ValueError, AttributeError):
        return None, None
    for rec in files.values() if isinstance(files, Mapping) else ():
        if (isinstance(rec, Mapping) and rec.get("path") == model_path.name
                and rec.get("sha256") in (None, sha256)):
            name = doc.get("name")
            return (str(rec["precision"]) if rec.get("precision") else None,
                    name if isinstance(name, str) and name else None)
    return None, None


def read_precision(path: "str | os.PathLike") -> str:
    """``"int8"`` for a quantized model (ONNX with QuantizeLinear/DequantizeLinear or QLinear*
    nodes; TFLite with int8/uint8 activations or weights), ``"fp16"`` for a float16 one (ONNX
    with float16 initializers; TFLite with float16 tensors: fp16 weights), else ``"fp32"``."""
    path = Path(path)
    fmt = ARTIFACT_SUFFIXES.get(path.suffix.lower())
    try:
        if fmt == "onnx":
            import onnx

            graph = onnx.load(str(path), load_external_data=False).graph
            ops = {n.op_type for n in graph.node}
            quant = bool(ops & {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}) \
                or any(o.startswith("QLinear") for o in ops)
            half = any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
        elif fmt == "tflite":
            import numpy as np

            dtypes = {np.dtype(d["dtype"]) for d in
                      _tflite_interpreter_cls()(model_path=str(path)).get_tensor_details()}
            quant = bool(dtypes & {np.dtype(np.int8), np.dtype(np.uint8)})
            half = np.dtype(np.float16) in dtypes
        else:
            return "fp32"
    except BenchError:
        raise
    except Exception:  # read_input_shape already reported an unreadable file
        return "fp32"
    return "int8" if quant else "fp16" if half else "fp32"


def _load_artifact(path: Path, root: Path) -> Artifact:
    fmt = ARTIFACT_SUFFIXES[path.suffix.lower()]
    sha = sha256_file(path)
    shape = read_input_shape(path)
    precision, label = _model_record(path, sha)
    return Artifact(path=path, root=root, name=path.relative_to(root).as_posix(),
                    sha256=sha, format=fmt, input_shape=shape, report=_read_report(path),
                    precision=precision or read_precision(path), label=label)


def _scan_dir(root: Path) -> List[Path]:
    found = []
    for p in root.rglob("*"):
        rel = p.relative_to(root).parts
        # temp files of atomic writers and hidden folders are never artifacts
        if any(part.startswith(".") for part in rel):
            continue
        if p.suffix.lower() in ARTIFACT_SUFFIXES and p.is_file():
            found.append(p)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def collect_artifacts(paths: Iterable["str | os.PathLike"]) -> List[Artifact]:
    """Artifacts under ``paths`` (files or directories, searched recursively), in a stable order."""
    paths = list(paths)
    if not paths:
        raise BenchError("no artifacts given: pass --artifacts PATH (a .onnx or .tflite file, or a "
                         "directory holding them, such as a specialize output)")
    out: List[Artifact] = []
    seen = set()
    for given in paths:
        p = Path(given)
        if not p.exists():
            raise BenchError(f"artifact path {given} does not exist")
        if p.is_dir():
            files = _scan_dir(p)
            if not files:
                raise BenchError(f"{given}: no .onnx or .tflite artifacts in this directory")
            root = p
        elif p.suffix.lower() in ARTIFACT_SUFFIXES:
            files, root = [p], p.parent
        else:
            raise BenchError(f"{given}: not a model artifact (expected a .onnx or .tflite file, or "
                             f"a directory holding them)")
        for f in files:
            real = f.resolve()
            if real in seen:
                continue
            seen.add(real)
            out.append(_load_artifact(f, root))
    return out
