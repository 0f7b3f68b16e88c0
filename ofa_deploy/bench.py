"""Benchmark exported artifacts on the devices attached here, compare with a baseline, report.

``bench`` measures every artifact (a ``.onnx`` or ``.tflite`` file, or a ``specialize`` output
directory holding ``model.onnx``/``model.tflite`` and ``report.json``) on every requested device
with the profilers' own measurement discipline (warm-up, repeated runs, median with p10/p90).

Artifact identity
    An artifact is identified by its path relative to the root it was found under (for a file
    given directly, its file name; for a directory, the path below that directory) together with
    the sha256 of its bytes. Baseline results are matched per device, in this order:

    1. same relative name and same sha256 (the same file, perhaps in a renamed root directory);
    2. same sha256 under another name (the file was moved or renamed);
    3. same relative name, different sha256 (the model was re-exported), only where that name is
       unambiguous on both sides.

    How each result matched is recorded in ``baseline.match`` (``exact``/``sha256``/``name``).

Scheduling
    Devices run in parallel, one measurement at a time per device. Backends that execute on this
    host's CPU (``ort:cpu``, ``tflite:cpu``) share one lane so they never time each other's load.

Failures
    A measurement that raises becomes an ``error`` result (never silently dropped). If the device
    is then found gone (an ADB device no longer ``online``), its remaining jobs are recorded as
    errors without being attempted. Results already measured are kept: the JSON file is rewritten
    atomically after every result, with ``meta.complete`` false until the run ends.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from profilers.base import (DeviceSpec, LatencyStats, Profiler, ProfilerError,
                            get_profiler)
from profilers.protocol import MeasurementProtocol, cv_of, measure_pooled, require_comparable
from supernet.errors import OfaDeployError
from supernet.fileio import atomic_write_text, sha256_file

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "ARTIFACT_SUFFIXES",
    "BenchError",
    "Artifact",
    "BenchResult",
    "BenchReport",
    "collect_artifacts",
    "read_input_shape",
    "resolve_devices",
    "lane_of",
    "load_baseline",
    "match_baseline",
    "compare_latency",
    "run_bench",
    "write_json",
    "write_junit",
    "write_markdown",
]

FORMAT_NAME = "ofa-deploy-bench"
FORMAT_VERSION = 1
ARTIFACT_SUFFIXES = {".onnx": "onnx", ".tflite": "tflite"}
REPORT_NAME = "report.json"
STATUSES = ("ok", "regressed", "error", "skipped")
IDENTITY_DOC = ("artifact = path relative to the given root + sha256; baseline matched per "
                "device by (name, sha256), else sha256 alone (moved/renamed), else name alone "
                "(re-exported)")


class BenchError(OfaDeployError, ValueError):
    """Bad artifacts, devices or baseline given to ``bench``."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _one_line(exc: BaseException, limit: int = 400) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else ""
    if not isinstance(exc, OfaDeployError):
        msg = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


# -- artifacts ---------------------------------------------------------------------------------
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

    @property
    def identity(self) -> Tuple[str, str]:
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
        raise BenchError(f"{path}: not a readable ONNX model ({_one_line(exc)})") from None
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
        raise BenchError(f"{path}: not a readable TFLite model ({_one_line(exc)})") from None
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


def _load_artifact(path: Path, root: Path) -> Artifact:
    fmt = ARTIFACT_SUFFIXES[path.suffix.lower()]
    return Artifact(path=path, root=root, name=path.relative_to(root).as_posix(),
                    sha256=sha256_file(path), format=fmt, input_shape=read_input_shape(path),
                    report=_read_report(path))


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


# -- devices -----------------------------------------------------------------------------------
def _profiler_class(spec: DeviceSpec) -> type:
    """The registered profiler class for ``spec`` (importing its backend module)."""
    from profilers.base import ProfilerError, profiler_class

    try:
        return profiler_class(spec.backend)
    except ProfilerError as exc:
        raise BenchError(f"device {spec}: {_one_line(exc)}") from None


def _check_device_exists(spec: DeviceSpec) -> None:
    """Unknown devices are a usage error, reported before anything is measured."""
    if spec.backend == "adb":
        from profilers import discovery

        discovery.check_adb_name(spec.target)
    elif spec.backend == "cuda":
        from profilers import discovery

        idx = spec.target
        gpus = discovery.cuda_devices()
        if not any(str(g["index"]) == idx for g in gpus):
            have = ", ".join(g["spec"] for g in gpus) or "none"
            raise BenchError(f"unknown device {spec}: no CUDA GPU {idx} here (GPUs: {have})")


def _check_constructible(spec: DeviceSpec) -> None:
    """Build (and drop) the device's profiler once, so a bad target or setting (``ort:gpu``, a
    phone whose benchmark_model binary is missing) is one clear error up front. Profilers
    connect lazily, so this measures nothing and touches no phone."""
    try:
        prof = get_profiler(spec)
    except OfaDeployError as exc:
        raise BenchError(f"device {spec}: {exc}") from None
    try:
        prof.close()
    except Exception:
        pass


def _online_specs() -> List[DeviceSpec]:
    from profilers import discovery

    return [DeviceSpec.parse(s) for d in discovery.discover() if d["state"] == "online"
            for s in d["specs"]]


def resolve_devices(specs: Iterable[str]) -> List[DeviceSpec]:
    """Parse ``SPEC,SPEC`` strings (``all``: every online device); reject unknown backends,
    unregistered phones and missing GPUs before anything is measured."""
    out: List[DeviceSpec] = []
    for text in specs:
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            if part == "all":
                for spec in _online_specs():
                    if spec not in out:
                        out.append(spec)
                continue
            spec = DeviceSpec.parse(part)
            if spec in out:
                continue
            _check_device_exists(spec)
            _profiler_class(spec)
            _check_constructible(spec)
            out.append(spec)
    if not out:
        raise BenchError("no devices given: pass --devices SPEC[,SPEC...] "
                         "(see `ofa-deploy devices`)")
    return out


def lane_of(spec: DeviceSpec) -> str:
    """Which physical resource a device measures on; one job at a time runs per lane."""
    if spec.backend in ("ort", "tflite") and spec.target == "cpu":
        return "host-cpu"
    return str(spec)


def _device_gone(spec: DeviceSpec) -> Optional[str]:
    """After a failure: why the device is no longer usable, or None if it still looks fine."""
    if spec.backend != "adb":
        return None
    from profilers import discovery

    try:
        state = discovery.adb_state(spec.target)
    except Exception as exc:  # a probe that itself fails means the device cannot be reached
        return f"device state unknown ({_one_line(exc)})"
    return None if state == "online" else f"device is {state}"


# -- results -----------------------------------------------------------------------------------
@dataclass
class BenchResult:
    artifact: Artifact
    device: str
    status: str
    stats: Optional[LatencyStats] = None
    reason: Optional[str] = None
    profiler: Optional[Dict[str, Any]] = None
    elapsed_s: Optional[float] = None
    measured_at: Optional[str] = None
    baseline: Optional[Dict[str, Any]] = None
    resumed: bool = False

    @property
    def key(self) -> Tuple[str, str, str]:
        return (self.artifact.name, self.artifact.sha256, self.device)

    def to_dict(self) -> Dict[str, Any]:
        a, s = self.artifact, self.stats
        d: Dict[str, Any] = {
            "artifact": a.name,
            "sha256": a.sha256,
            "device": self.device,
            "status": self.status,
            "median_ms": s.median_ms if s else None,
            "p10_ms": s.p10_ms if s else None,
            "p90_ms": s.p90_ms if s else None,
            "std_ms": s.std_ms if s else None,
            "runs": s.runs if s else None,
            # run-to-run variation of this measurement (robust CV, profilers.protocol.cv_of)
            "cv": cv_of(s) if s and s.median_ms > 0 else None,
            "format": a.format,
            "input_shape": list(a.input_shape),
            "path": str(a.path),
            "root": str(a.root),
        }
        if self.reason is not None:
            d["reason"] = self.reason
        if self.baseline is not None:
            d["baseline"] = self.baseline
        if self.profiler is not None:
            d["profiler"] = self.profiler
        if self.elapsed_s is not None:
            d["elapsed_s"] = round(self.elapsed_s, 3)
        if self.measured_at is not None:
            d["measured_at"] = self.measured_at
        if self.resumed:
            d["resumed"] = True
        if a.report:
            d["report"] = a.report
        return d


@dataclass
class BenchReport:
    results: List[BenchResult]
    meta: Dict[str, Any]
    unmatched_baseline: List[Dict[str, Any]] = field(default_factory=list)

    def by_status(self, status: str) -> List[BenchResult]:
        return [r for r in self.results if r.status == status]

    @property
    def counts(self) -> Dict[str, int]:
        return {s: len(self.by_status(s)) for s in STATUSES}

    @property
    def failed(self) -> bool:
        return bool(self.by_status("regressed") or self.by_status("error"))

    def to_dict(self) -> Dict[str, Any]:
        meta = dict(self.meta)
        meta["counts"] = self.counts
        if self.unmatched_baseline:
            meta["unmatched_baseline"] = self.unmatched_baseline
        return {"results": [r.to_dict() for r in self.results], "meta": meta}


# -- baseline ----------------------------------------------------------------------------------
def load_baseline(path: "str | os.PathLike") -> List[Dict[str, Any]]:
    """Measured results of an earlier ``bench --json`` file (the same format)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"baseline {path} does not exist") from None
    except OSError as exc:
        raise BenchError(f"cannot read baseline {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise BenchError(f"baseline {path} is not valid JSON: {exc}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("results"), list):
        raise BenchError(f"baseline {path} is not an ofa-deploy bench file (no \"results\" list)")
    out = []
    for i, r in enumerate(data["results"]):
        if not isinstance(r, Mapping) or "artifact" not in r or "device" not in r:
            raise BenchError(f"baseline {path}: result {i} lacks \"artifact\"/\"device\"")
        if r.get("status", "ok") not in ("ok", "regressed") or r.get("median_ms") is None:
            continue
        try:
            med = float(r["median_ms"])
        except (TypeError, ValueError):
            raise BenchError(f"baseline {path}: result {i} has a bad median_ms "
                             f"{r['median_ms']!r}") from None
        if not med > 0:
            raise BenchError(f"baseline {path}: result {i} has a non-positive median_ms {med}")
        try:
            device = str(DeviceSpec.parse(str(r["device"])))
        except OfaDeployError:
            device = str(r["device"])
        out.append({**r, "median_ms": med, "device": device, "sha256": r.get("sha256")})
    return out


def _check_baseline_protocol(path: "str | os.PathLike", protocol: MeasurementProtocol) -> None:
    """Refuse a baseline measured under another protocol (files without one predate
    protocols and are compared as before)."""
    try:
        meta = json.loads(Path(path).read_text(encoding="utf-8")).get("meta") or {}
    except (OSError, ValueError, AttributeError):
        return
    old = MeasurementProtocol.of(meta) if isinstance(meta, Mapping) else None
    if old is not None:
        require_comparable(old, protocol, f"baseline {path}", "this run")


def match_baseline(artifacts: Sequence[Artifact], devices: Sequence[DeviceSpec],
                   baseline: Sequence[Mapping[str, Any]]
                   ) -> Tuple[Dict[Tuple[str, str, str], Tuple[Mapping[str, Any], str]],
                              List[Mapping[str, Any]]]:
    """``{(name, sha256, device): (baseline entry, how)}`` and the baseline entries left over."""
    matched: Dict[Tuple[str, str, str], Tuple[Mapping[str, Any], str]] = {}
    claimed: set = set()
    keys = [(a.name, a.sha256, str(d)) for a in artifacts for d in devices]
    name_count: Dict[Tuple[str, str], int] = {}
    for n, _, d in keys:
        name_count[(n, d)] = name_count.get((n, d), 0) + 1

    def take(key, how, pred):
        cands = [i for i, b in enumerate(baseline) if i not in claimed and b["device"] == key[2]
                 and pred(b)]
        if not cands:
            return
        if how == "name" and len(cands) != 1:
            return  # ambiguous: several baseline entries under this name
        # prefer the same file name for a moved file, then the first listed
        cands.sort(key=lambda i: (Path(str(baseline[i]["artifact"])).name
                                  != Path(key[0]).name, i))
        claimed.add(cands[0])
        matched[key] = (baseline[cands[0]], how)

    for key in keys:
        take(key, "exact", lambda b, k=key: b["artifact"] == k[0] and b.get("sha256") == k[1])
    for key in keys:
        if key not in matched:
            take(key, "sha256", lambda b, k=key: b.get("sha256") == k[1])
    for key in keys:
        if key not in matched and name_count[(key[0], key[2])] == 1:
            take(key, "name", lambda b, k=key: b["artifact"] == k[0])
    left = [b for i, b in enumerate(baseline) if i not in claimed
            and b["device"] in {str(d) for d in devices}]
    return matched, left


def compare_latency(median_ms: float, baseline_ms: float, tolerance_pct: float,
                    min_delta_ms: float = 0.0) -> Tuple[float, bool]:
    """``(delta_pct, regressed)``: regressed when slower than the baseline by more than
    ``tolerance_pct`` percent and, in absolute terms, by more than ``min_delta_ms``."""
    delta = median_ms - baseline_ms
    pct = 100.0 * delta / baseline_ms
    # the epsilon keeps a result exactly at the tolerance (1.1 ms vs 1.0 ms at 10%) passing
    return pct, bool(pct > tolerance_pct + 1e-9 and delta > min_delta_ms)


# -- writers -----------------------------------------------------------------------------------
def write_json(path: "str | os.PathLike", report: BenchReport) -> None:
    atomic_write_text(Path(path), json.dumps(report.to_dict(), indent=2) + "\n")


def _fmt_ms(v: Optional[float]) -> str:
    return "-" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 100 else f"{v:.1f}")


def _fmt_pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:+.1f}%"


def regression_message(r: BenchResult, tolerance_pct: float) -> str:
    b = r.baseline or {}
    return (f"median {_fmt_ms(r.stats.median_ms if r.stats else None)} ms is "
            f"{_fmt_pct(b.get('delta_pct'))} vs baseline {_fmt_ms(b.get('median_ms'))} ms "
            f"(tolerance {tolerance_pct:g}%)")


def write_junit(path: "str | os.PathLike", report: BenchReport) -> None:
    """JUnit XML: a testsuite per device, a testcase per artifact; regressions are
    ``<failure>``, device/measurement errors ``<error>``, unrunnable pairs ``<skipped>``."""
    tol = float(report.meta.get("tolerance_pct", 0.0))
    root = ET.Element("testsuites", name="ofa-deploy bench")
    devices = list(dict.fromkeys(r.device for r in report.results))
    tot = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    for dev in devices:
        rs = [r for r in report.results if r.device == dev]
        n = {"tests": len(rs), "failures": sum(r.status == "regressed" for r in rs),
             "errors": sum(r.status == "error" for r in rs),
             "skipped": sum(r.status == "skipped" for r in rs),
             "time": sum(r.elapsed_s or 0.0 for r in rs)}
        for k in tot:
            tot[k] += n[k]
        suite = ET.SubElement(root, "testsuite", name=dev, tests=str(n["tests"]),
                              failures=str(n["failures"]), errors=str(n["errors"]),
                              skipped=str(n["skipped"]), time=f"{n['time']:.3f}",
                              timestamp=str(report.meta.get("started_at", "")),
                              hostname=str(report.meta.get("host", {}).get("hostname", "")))
        props = ET.SubElement(suite, "properties")
        for k in ("runs", "warmup", "threads", "tolerance_pct", "min_delta_ms", "baseline"):
            if report.meta.get(k) is not None:
                ET.SubElement(props, "property", name=k, value=str(report.meta[k]))
        for r in rs:
            case = ET.SubElement(suite, "testcase", classname=dev, name=r.artifact.name,
                                 time=f"{r.elapsed_s or 0.0:.3f}")
            if r.status == "regressed":
                f = ET.SubElement(case, "failure", type="LatencyRegression",
                                  message=regression_message(r, tol))
                f.text = json.dumps({"sha256": r.artifact.sha256, "baseline": r.baseline,
                                     "stats": r.stats.to_dict() if r.stats else None})
            elif r.status == "error":
                ET.SubElement(case, "error", type="DeviceError",
                              message=r.reason or "error").text = r.reason
            elif r.status == "skipped":
                ET.SubElement(case, "skipped", message=r.reason or "skipped")
            if r.stats is not None:
                s = r.stats
                ET.SubElement(case, "system-out").text = (
                    f"median {s.median_ms:.4f} ms, p10 {s.p10_ms:.4f} ms, p90 {s.p90_ms:.4f} ms, "
                    f"runs {s.runs}, sha256 {r.artifact.sha256}")
    for k, v in tot.items():
        root.set(k, f"{v:.3f}" if k == "time" else str(v))
    ET.indent(root)
    atomic_write_text(Path(path), '<?xml version="1.0" encoding="utf-8"?>\n'
                  + ET.tostring(root, encoding="unicode") + "\n")


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def markdown_summary(report: BenchReport) -> str:
    m, c = report.meta, report.counts
    tol = float(m.get("tolerance_pct", 0.0))
    verdict = "FAILED" if report.failed else "passed"
    lines = [f"## ofa-deploy bench: {verdict}", "",
             f"{c['ok']} ok, {c['regressed']} regressed, {c['error']} errors, "
             f"{c['skipped']} skipped; {m.get('protocol_text') or str(m.get('runs')) + ' runs'}"
             f" per measurement"
             + (f"; baseline `{m['baseline']}`, tolerance {tol:g}%" if m.get("baseline") else ""),
             ""]

    def tbl(headers, rows):
        out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        out += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
        return out + [""]

    reg = report.by_status("regressed")
    if reg:
        lines += ["### Regressions", ""]
        lines += tbl(["artifact", "device", "median ms", "baseline ms", "change"],
                     [[f"`{r.artifact.name}`", r.device, _fmt_ms(r.stats.median_ms),
                       _fmt_ms(r.baseline["median_ms"]), _fmt_pct(r.baseline["delta_pct"])]
                      for r in reg])
    err = report.by_status("error")
    if err:
        lines += ["### Errors", ""]
        lines += tbl(["artifact", "device", "error"],
                     [[f"`{r.artifact.name}`", r.device, r.reason or ""] for r in err])
    lines += ["### Results", ""]
    lines += tbl(["artifact", "device", "median ms", "p10–p90 ms", "baseline ms", "change",
                  "status"], [_row(r) for r in report.results])
    if report.unmatched_baseline:
        lines += ["Baseline entries with no result this run: "
                  + ", ".join(f"`{b['artifact']}` on {b['device']}"
                              for b in report.unmatched_baseline), ""]
    return "\n".join(lines)


def _row(r: BenchResult) -> List[str]:
    s, b = r.stats, r.baseline or {}
    status = r.status if r.status in ("ok", "regressed") else f"{r.status}: {r.reason}"
    if b.get("match") in ("sha256", "name"):
        status += f" (baseline by {b['match']})"
    return [r.artifact.name, r.device, _fmt_ms(s.median_ms if s else None),
            f"{_fmt_ms(s.p10_ms)}–{_fmt_ms(s.p90_ms)}" if s else "-",
            _fmt_ms(b.get("median_ms")), _fmt_pct(b.get("delta_pct")), status]


def result_rows(report: BenchReport) -> List[List[str]]:
    return [_row(r) for r in report.results]


RESULT_HEADERS = ("artifact", "device", "median ms", "p10–p90 ms", "baseline ms", "change",
                  "status")


def write_markdown(path: "str | os.PathLike", report: BenchReport) -> None:
    atomic_write_text(Path(path), markdown_summary(report) + "\n")


# -- running -----------------------------------------------------------------------------------
def _host_meta() -> Dict[str, Any]:
    from profilers import discovery

    cpu = discovery.cpu_info()
    return {"hostname": socket.gethostname(), "platform": platform.platform(),
            "python": sys.version.split()[0], "cpu": cpu.get("model"),
            "cpu_cores": cpu.get("cores")}


def _resumable(path: Optional[Path], settings: Mapping[str, Any]
               ) -> Dict[Tuple[str, str, str], Dict[str, Any]]:
    """Measured results of an earlier run into ``path`` taken with the same settings."""
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows, meta = data["results"], data["meta"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(meta, Mapping) or any(meta.get(k) != v for k, v in settings.items()):
        return {}
    out = {}
    for r in rows:
        if (isinstance(r, Mapping) and r.get("status") in ("ok", "regressed")
                and r.get("median_ms") is not None):
            out[(r.get("artifact"), r.get("sha256"), r.get("device"))] = r
    return out


class _Run:
    """State of one ``bench`` run shared by the per-lane worker threads."""

    def __init__(self, artifacts, devices, *, protocol, baseline_path, baseline,
                 tolerance_pct, min_delta_ms, json_path, resume, on_result, profiler_factory,
                 roots):
        self.artifacts = list(artifacts)
        self.devices = list(devices)
        self.protocol = protocol
        runs, warmup, threads = protocol.runs, protocol.warmup, protocol.threads
        self.runs, self.warmup, self.threads = runs, warmup, threads
        self.tolerance_pct, self.min_delta_ms = float(tolerance_pct), float(min_delta_ms)
        self.json_path = Path(json_path) if json_path else None
        self.on_result = on_result
        self.factory = profiler_factory
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.order = {(a.name, a.sha256, str(d)): i for i, (a, d) in
                      enumerate((a, d) for a in self.artifacts for d in self.devices)}
        self.results: Dict[Tuple[str, str, str], BenchResult] = {}
        self.matches, self.unmatched = match_baseline(self.artifacts, self.devices, baseline or [])
        settings = {"runs": runs, "warmup": warmup, "threads": threads,
                    "protocol": protocol.get_state()}
        self.resume = _resumable(self.json_path, settings) if resume else {}
        self.meta: Dict[str, Any] = {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "tool": "ofa-deploy", "version": _version(),
            "started_at": _now(), "finished_at": None, "complete": False,
            "runs": runs, "warmup": warmup, "threads": threads,
            "protocol": protocol.get_state(), "protocol_text": protocol.describe(),
            "tolerance_pct": self.tolerance_pct, "min_delta_ms": self.min_delta_ms,
            "baseline": str(baseline_path) if baseline_path else None,
            "devices": [{"device": str(d), "lane": lane_of(d)} for d in self.devices],
            "artifact_roots": roots, "identity": IDENTITY_DOC, "host": _host_meta(),
        }

    # results
    def report(self) -> BenchReport:
        rs = sorted(self.results.values(), key=lambda r: self.order[r.key])
        return BenchReport(rs, dict(self.meta), [dict(b) for b in self.unmatched])

    def record(self, result: BenchResult) -> None:
        if result.stats is not None and result.status == "ok":
            m = self.matches.get(result.key)
            if m is not None:
                entry, how = m
                pct, bad = compare_latency(result.stats.median_ms, entry["median_ms"],
                                           self.tolerance_pct, self.min_delta_ms)
                result.baseline = {"median_ms": entry["median_ms"], "delta_pct": round(pct, 3),
                                   "match": how, "artifact": entry["artifact"],
                                   "sha256": entry.get("sha256")}
                if bad:
                    result.status = "regressed"
        with self.lock:
            self.results[result.key] = result
            done = len(self.results)
            if self.json_path is not None:
                write_json(self.json_path, self.report())
        if self.on_result is not None:
            self.on_result(result, done, len(self.order))

    # lanes
    def lane_worker(self, jobs: List[Tuple[Artifact, DeviceSpec]]) -> None:
        profs: Dict[str, Profiler] = {}
        gone: Dict[str, str] = {}
        try:
            for art, spec in jobs:
                if self.stop.is_set():
                    return
                dev = str(spec)
                if dev in gone:
                    self.record(BenchResult(art, dev, "error", reason=f"not measured: {dev} "
                                            f"failed earlier ({gone[dev]})"))
                    continue
                t0 = time.perf_counter()
                try:
                    if dev not in profs:
                        kw: Dict[str, Any] = self.protocol.profiler_kwargs(spec.backend)
                        # phones take their thread count from the device registry
                        if lane_of(spec) != "host-cpu":
                            kw.pop("threads", None)
                        profs[dev] = self.factory(spec, **kw)
                    prof = profs[dev]
                    # the shared protocol: the same estimator as tables, validation and
                    # specialize (median of pooled runs over interleaved-in-time rounds)
                    stats = measure_pooled(prof, [(art.path, art.input_shape)],
                                           self.protocol)[0]
                    if not isinstance(stats, LatencyStats):
                        raise ProfilerError(f"profiler for {dev} returned {type(stats).__name__}")
                    desc = _safe_describe(prof)
                    extra = getattr(prof, "last_meta", None)  # per-measurement facts (adb)
                    if desc is not None and isinstance(extra, Mapping) and extra:
                        desc = {**desc, "measurement": _jsonable(extra)}
                    self.record(BenchResult(art, dev, "ok", stats=stats, profiler=desc,
                                            elapsed_s=time.perf_counter() - t0,
                                            measured_at=_now()))
                except Exception as exc:  # any failure is recorded as an error case, never lost
                    msg = _one_line(exc)
                    self.record(BenchResult(art, dev, "error", reason=msg,
                                            elapsed_s=time.perf_counter() - t0,
                                            measured_at=_now()))
                    why = _device_gone(spec) if dev in profs else "profiler could not start"
                    if why is not None:
                        gone[dev] = f"{why}: {msg}" if dev not in profs else why
        finally:
            for p in profs.values():
                try:
                    p.close()
                except Exception:
                    pass

    def execute(self, formats: Mapping[str, str]) -> BenchReport:
        lanes: Dict[str, List[Tuple[Artifact, DeviceSpec]]] = {}
        for d in self.devices:  # device-major inside a lane: one profiler session at a time
            for a in self.artifacts:
                key = (a.name, a.sha256, str(d))
                fmt = formats[str(d)]
                if a.format != fmt:
                    runs_what = (f".{fmt} models" if fmt in ARTIFACT_SUFFIXES.values()
                                 else f"{fmt} modules, not exported files")
                    self.record(BenchResult(a, str(d), "skipped", reason=(
                        f"{d} runs {runs_what}; this is a .{a.format} artifact")))
                elif key in self.resume:
                    r = self.resume[key]
                    self.record(BenchResult(a, str(d), "ok", stats=LatencyStats.from_dict(r),
                                            profiler=r.get("profiler"),
                                            elapsed_s=r.get("elapsed_s"),
                                            measured_at=r.get("measured_at"), resumed=True))
                else:
                    lanes.setdefault(lane_of(d), []).append((a, d))
        workers = [threading.Thread(target=self.lane_worker, args=(jobs,), daemon=True,
                                    name=f"bench-{lane}") for lane, jobs in lanes.items()]
        for w in workers:
            w.start()
        try:
            for w in workers:
                while w.is_alive():
                    w.join(0.2)
        except BaseException:
            self.stop.set()  # workers finish their current measurement and exit
            raise
        self.meta["finished_at"] = _now()
        self.meta["complete"] = True
        rep = self.report()
        if self.json_path is not None:
            with self.lock:
                write_json(self.json_path, rep)
        return rep


def _safe_describe(prof: Profiler) -> Optional[Dict[str, Any]]:
    try:
        d = prof.describe()
        json.dumps(d)
        return d
    except Exception:
        return None


def _jsonable(d: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(json.dumps(d, default=str))
    except (TypeError, ValueError):
        return None


def _version() -> str:
    from . import __version__

    return __version__


def run_bench(artifacts: Sequence[Artifact], devices: Sequence[DeviceSpec], *,
              runs: Optional[int] = None, warmup: Optional[int] = None,
              threads: Optional[int] = None, rounds: Optional[int] = None,
              cache: Optional[str] = None, protocol: Optional[MeasurementProtocol] = None,
              baseline: "str | os.PathLike | None" = None, tolerance_pct: float = 10.0,
              min_delta_ms: float = 0.0, json_path: "str | os.PathLike | None" = None,
              resume: bool = False,
              on_result: Optional[Callable[[BenchResult, int, int], None]] = None,
              profiler_factory: Callable[..., Profiler] = get_profiler) -> BenchReport:
    """Measure every artifact on every device; compare with ``baseline`` if given.

    Every measurement follows ``protocol`` (default: the shared
    :class:`~profilers.protocol.MeasurementProtocol` with ``runs``, ``warmup``, ``threads``,
    ``rounds`` and ``cache`` where given), so bench numbers compare with a table's,
    ``lut validate``'s and ``specialize``'s; a baseline measured under another protocol is
    refused. ``json_path`` is rewritten atomically after each result. ``resume`` reuses
    measured results already in ``json_path`` for the same (artifact name, sha256, device)
    and protocol.
    """
    if runs is not None and runs < 1:
        raise BenchError(f"runs must be at least 1, got {runs}")
    if warmup is not None and warmup < 0:
        raise BenchError(f"warmup must be >= 0, got {warmup}")
    protocol = (protocol or MeasurementProtocol()).with_(runs=runs, warmup=warmup,
                                                         threads=threads, rounds=rounds,
                                                         cache=cache)
    if tolerance_pct < 0:
        raise BenchError(f"tolerance must be >= 0 percent, got {tolerance_pct}")
    base = load_baseline(baseline) if baseline is not None else None
    if baseline is not None:
        _check_baseline_protocol(baseline, protocol)
    formats = {str(d): getattr(_profiler_class(d), "artifact_format", "onnx") for d in devices}
    roots = sorted({str(a.root) for a in artifacts})
    run = _Run(artifacts, devices, protocol=protocol,
               baseline_path=baseline, baseline=base, tolerance_pct=tolerance_pct,
               min_delta_ms=min_delta_ms, json_path=json_path, resume=resume,
               on_result=on_result, profiler_factory=profiler_factory, roots=roots)
    return run.execute(formats)
