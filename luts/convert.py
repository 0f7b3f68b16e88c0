"""Op models converted to a backend's artifact format, cached on disk, in worker processes.

Converting an op model (ONNX export, litert-torch conversion) costs far more than timing it,
so converted files are cached on disk by format, converter version and op key under
``cache_dir()/ops/<format>/<converter>/``, shared by every device that runs that format. A
build converts in a separate worker *process* (``convert_workers`` of
:func:`~luts.builder.build_lut`) that runs ahead while the main process times the ops already
converted. A thread would not do: the exporters are
Python-heavy, and every timed call would wait for the GIL. The trade-off: on a machine with
few cores the converter competes with the timed thread for CPU, memory bandwidth and cache,
which inflates and spreads the times. Workers therefore run at a lower priority (nice 5) so
the timed process wins a contended core; time with ``threads`` below the core count (e.g. 1
on 2 cores), pin with ``cpus`` (workers then avoid those CPUs), or pass
``convert_workers=0`` to convert each op just before timing it (slowest, least disturbed;
or warm the cache first and build again). Once the cache is warm no worker is started.

Every op model and every validated subnet is converted by :func:`export_artifact`, so the
two are converted the same way.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from supernet.errors import OfaDeployError, first_line
from supernet.ops import OpKey

from .table import LUTError

__all__ = ["converter_tag", "export_artifact", "require_converter", "OpModelCache",
           "precision_profiler_kwargs", "check_profiler_precision",
           "METHOD_VERSION", "FORMAT_SUFFIX"]

# Bump when op models, the subtraction scheme or what the default protocol measures change (3:
# median of pooled runs under the shared measurement protocol): tables and caches of another
# method version are not mixed with new measurements. Choosing another estimator
# (--estimator) needs no bump: op model files do not depend on it (the cache stays shared),
# and the raw timings that do are refused on resume by the recorded estimator
# (builder._COMPAT_KEYS).
METHOD_VERSION = 3
FORMAT_SUFFIX = {"onnx": ".onnx", "tflite": ".tflite"}


# How int8 op models and subnets are quantized for timing: the shipped artifacts' settings
# (supernet.quantize.QuantSettings defaults) with fewer calibration inputs. The inputs are
# seeded random tensors: calibration picks the scales of an int8 model, never its kernels, so
# a latency needs neither real images nor many of them (and each costs a calibration run).
OP_CALIB_INPUTS = 8


def op_quant_settings():
    """The :class:`~supernet.quantize.QuantSettings` int8 op models and timed subnets use."""
    from supernet.quantize import QuantSettings

    return QuantSettings(calib_images=OP_CALIB_INPUTS)


def _quant_tag(fmt: str) -> str:
    q = op_quant_settings()
    tag = f"int8-{q.activations}-{'pc' if q.per_channel else 'pt'}-{q.calibration}" \
          f"{q.calib_images}"
    if fmt == "onnx":
        # onnxruntime's quantizer writes the QDQ graph: its version and the weight range
        # (7-bit with reduce_range) change the op models
        from importlib.metadata import version

        tag += f"{'-rr' if q.reduce_range else ''}-ort{version('onnxruntime')}"
    return tag


def converter_tag(fmt: str, precision: str = "fp32") -> str:
    """Identifies the converter that writes ``fmt`` files at ``precision`` (a cache-directory
    name: int8 op models, quantized, never share a directory with fp32 ones)."""
    import torch

    tv = torch.__version__.split("+")[0]
    if fmt == "onnx":
        tag = f"torch{tv}-ts-opset17"
    elif fmt == "tflite":
        from supernet.export_tflite import litert_torch_version

        tag = f"litert-torch{litert_torch_version() or 'none'}-torch{tv}"
    elif fmt == "torch":
        tag = f"torch{tv}"
    else:
        raise LUTError(f"unknown artifact format {fmt!r}")
    if precision == "fp16" and fmt == "torch":
        tag += "-fp16"  # a CUDA table: the profiler runs a .half() copy of each op model
    elif precision == "fp16":
        _check_fp16(fmt)
        from supernet.export_tflite import fp16_tool_version

        tag += f"-fp16w-aeq{fp16_tool_version() or 'none'}"
    elif precision != "fp32":
        if precision != "int8" or fmt == "torch":
            raise LUTError(f"no {precision} op models for artifact format {fmt!r}")
        tag += "-" + _quant_tag(fmt)
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", f"{tag}-m{METHOD_VERSION}")


def precision_profiler_kwargs(backend: str, precision: str) -> Dict[str, Any]:
    """Profiler constructor arguments a precision needs beyond the protocol's: a CUDA
    profiler times fp16 as a ``.half()`` copy of the torch module (``half=True``); every
    other backend runs files already converted at the precision (nothing to add)."""
    return {"half": True} if backend == "cuda" and precision == "fp16" else {}


def check_profiler_precision(profiler, precision: str) -> None:
    """One-line LUTError when ``profiler`` cannot time models at ``precision``: int8 needs a
    file format (ONNX, TFLite); fp16 needs TFLite, or a torch profiler that runs fp16
    (CUDA with ``half``)."""
    fmt = profiler.artifact_format
    if precision == "fp32":
        return
    if precision == "fp16":
        if fmt == "torch" and getattr(profiler, "half", False):
            return
        if fmt == "torch":
            raise LUTError(f"device {profiler.spec} times torch models in fp32; fp16 tables "
                           f"are for tflite:cpu, adb:* (TFLite, fp16 weights) and cuda:N "
                           f"(torch .half())")
        _check_fp16(fmt)
        return
    if fmt not in FORMAT_SUFFIX:
        raise LUTError(f"device {profiler.spec} runs {fmt} models, which have no {precision} "
                       f"form here; {precision} tables are for cpu (onnx), tflite:cpu and "
                       f"adb:* (tflite)")


def _check_fp16(fmt: str) -> None:
    from supernet.quantize import FP16_FORMATS, FP16_REFUSAL

    if fmt not in FP16_FORMATS:
        raise LUTError(f"no fp16 op models for artifact format {fmt!r}: {FP16_REFUSAL}")


def export_artifact(model, input_shape: Sequence[int], path: "str | os.PathLike",
                    fmt: str, *, precision: str = "fp32", seed: int = 0) -> Path:
    """Write ``model`` in ``fmt`` (``onnx``/``tflite``) at ``precision``, atomically. Op models
    and the subnets a table is validated against go through this one function, so they are
    converted the same way. int8 goes through :func:`supernet.quantize.export_int8`, the
    conversion the shipped int8 artifacts get, calibrated on seeded random inputs of
    ``input_shape`` (``seed``; see :data:`OP_CALIB_INPUTS`). fp16 (TFLite only) goes through
    :func:`supernet.quantize.export_fp16`, fp16 weights as shipped."""
    if precision == "fp16":
        from supernet.quantize import export_fp16

        _check_fp16(fmt)
        export_fp16(model, input_shape, path, fmt)  # atomic: renamed when complete
        return Path(path)
    if precision == "int8":
        from supernet.quantize import export_int8, random_calibration

        if fmt not in FORMAT_SUFFIX:
            raise LUTError(f"cannot export to artifact format {fmt!r}")
        q = op_quant_settings()
        path = Path(path)
        # a temporary name, renamed when complete: a killed conversion leaves no partial file
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
        try:
            export_int8(model, input_shape, tmp, fmt,
                        random_calibration(input_shape, q.calib_images, seed), q)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path
    if precision != "fp32":
        raise LUTError(f"unknown precision {precision!r}; choose from fp32, int8, fp16")
    if fmt == "onnx":
        from supernet.export import export_onnx

        return export_onnx(model, input_shape, path, opset=17, dynamo=False)
    if fmt == "tflite":
        from supernet.export_tflite import export_tflite

        return export_tflite(model, input_shape, path)
    raise LUTError(f"cannot export to artifact format {fmt!r}")


def require_converter(fmt: str) -> None:
    """Fail early, in one line, when the converter for ``fmt`` is not installed (the
    converter process would otherwise report it only after starting up)."""
    if fmt == "tflite":
        import importlib.util

        if importlib.util.find_spec("litert_torch") is None:
            from supernet.export_tflite import require_litert_torch

            require_litert_torch()


@dataclass(frozen=True)
class _Job:
    """One model to build: ``what`` is an OpKey string, ``ctx-...`` or ``overhead``."""

    what: str
    shape: Tuple[int, ...]
    space: str
    seed: int
    context: bool
    precision: str = "fp32"


def _build_model(job: _Job):
    from supernet.op_models import (OverheadModel, build_context_model, build_op_model)

    if job.what == "overhead":
        return OverheadModel().eval()
    if job.what.startswith("ctx-"):
        return build_context_model(job.shape, seed=job.seed)
    return build_op_model(OpKey.from_string(job.what), job.space, seed=job.seed,
                          context=job.context)


def _convert(job: _Job, fmt: str, path: str) -> str:
    """Worker entry point (module-level so a spawned process can import it)."""
    if os.path.exists(path):  # another build converted it meanwhile
        return path
    export_artifact(_build_model(job), job.shape, path, fmt, precision=job.precision,
                    seed=job.seed)
    return path


class OpModelCache:
    """Converted op models on disk: ``root/<format>/<converter tag>/<name><suffix>``; the tag
    names the precision (:func:`converter_tag`), so fp32, int8 and fp16 op models never mix."""

    def __init__(self, root: "str | os.PathLike", fmt: str, precision: str = "fp32"):
        self.fmt = fmt
        self.precision = precision
        self.dir = Path(root) / fmt / converter_tag(fmt, precision)

    def path(self, job: _Job) -> Path:
        """Where the converted model of ``job`` is (or will be) cached."""
        if job.precision != self.precision:
            raise LUTError(f"op model {job.what} is {job.precision}; this cache holds "
                           f"{self.precision} op models")
        name = job.what if job.what.startswith(("ctx-", "overhead")) else (
            job.what + ("-ctx" if job.context else ""))
        return self.dir / f"{name}-seed{job.seed}{FORMAT_SUFFIX[self.fmt]}"

    def has(self, job: _Job) -> bool:
        """Whether ``job`` has already been converted."""
        return self.path(job).is_file()


class _Workers:
    """Persistent converter subprocesses (``luts._convert_worker``), one job each at a time.

    Each worker gets its jobs from a shared queue through a feeder thread that only blocks on
    pipes, so the timing thread never waits for the GIL behind a conversion."""

    def __init__(self, n: int, cpus: Optional[List[int]], nice: int = 5):
        self.queue: "queue.Queue" = queue.Queue()
        self.procs: List[subprocess.Popen] = []
        self.threads: List[threading.Thread] = []
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        arg = json.dumps({"nice": nice, "cpus": cpus})
        self.logs: List[Any] = []
        for _ in range(n):
            # Startup errors (before the worker silences its stderr) land in this file and are
            # quoted if the worker dies.
            log = tempfile.TemporaryFile(mode="w+")
            p = subprocess.Popen([sys.executable, "-m", "luts._convert_worker", arg],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                 text=True, bufsize=1, env=env)
            t = threading.Thread(target=self._feed, args=(p, log), daemon=True)
            self.procs.append(p)
            self.threads.append(t)
            self.logs.append(log)
            t.start()

    def submit(self, payload: dict) -> cf.Future:
        fut: cf.Future = cf.Future()
        self.queue.put((fut, payload))
        return fut

    def _feed(self, p: subprocess.Popen, log) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            fut, payload = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                p.stdin.write(json.dumps(payload) + "\n")
                p.stdin.flush()
                line = p.stdout.readline()
            except (OSError, ValueError):
                line = ""
            if not line:
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
                why = "out of memory?"
                with contextlib.suppress(OSError, ValueError):
                    log.seek(0)
                    tail = [ln for ln in log.read().splitlines() if ln.strip()]
                    if tail:
                        why = first_line(tail[-1])  # the last thing it said
                fut.set_exception(LUTError(
                    f"the converter process died while converting {payload['what']} "
                    f"(exit status {p.poll()}: {why})"))
                self._fail_rest()
                return
            reply = json.loads(line)
            if reply.get("ok"):
                fut.set_result(reply["path"])
            else:
                fut.set_exception(LUTError(f"converting {payload['what']} to {payload['fmt']} "
                                           f"failed: {reply.get('error')}"))

    def _fail_rest(self) -> None:
        """A dead worker: hand its queued jobs back to the caller as failures only if no other
        worker is alive to take them."""
        if any(p.poll() is None for p in self.procs):
            return
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            if item is not None and item[0].set_running_or_notify_cancel():
                item[0].set_exception(LUTError("the converter processes died"))

    def shutdown(self) -> None:
        while True:  # drop what was never started
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in self.threads:
            self.queue.put(None)
        for p in self.procs:
            with contextlib.suppress(OSError, ValueError):
                p.stdin.close()
        # A worker still converting is stopped, not waited for: its output is written to a
        # temporary name and renamed when complete, so the cache never holds a partial file.
        deadline = time.monotonic() + 0.5
        for p in self.procs:
            try:
                p.wait(timeout=max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for t in self.threads:
            t.join(timeout=1)
        for log in self.logs:
            log.close()


class _Converter:
    """Hands out artifacts for jobs in order, converting ahead in worker processes."""

    def __init__(self, fmt: str, cache: Optional[OpModelCache], workers: int,
                 avoid_cpus: Optional[List[int]]):
        self.fmt, self.cache, self.workers = fmt, cache, workers
        self.avoid = avoid_cpus
        self.pool: Optional[_Workers] = None
        self.futures: Dict[_Job, cf.Future] = {}
        self.converted = 0
        self.reused = 0

    def prefetch(self, jobs: Iterable[_Job]) -> None:
        if self.fmt == "torch" or self.workers <= 0:
            return
        todo = [j for j in dict.fromkeys(jobs) if not self.cache.has(j) and j not in self.futures]
        if not todo:
            return
        if self.pool is None:
            cpus = None
            if self.avoid and hasattr(os, "sched_getaffinity"):
                cpus = sorted(os.sched_getaffinity(0) - set(self.avoid)) or None
            self.pool = _Workers(self.workers, cpus)
        for j in todo:
            self.futures[j] = self.pool.submit({
                "what": j.what, "shape": list(j.shape), "space": j.space, "seed": j.seed,
                "context": j.context, "precision": j.precision, "fmt": self.fmt,
                "path": str(self.cache.path(j))})

    def get(self, job: _Job):
        if self.fmt == "torch":
            return _build_model(job)
        path = self.cache.path(job)
        fut = self.futures.pop(job, None)
        if fut is not None:
            fut.result()
            self.converted += 1
        elif path.is_file():
            self.reused += 1
        else:
            try:
                _convert(job, self.fmt, str(path))
            except OfaDeployError as exc:
                raise LUTError(f"converting {job.what} to {self.fmt} failed: {exc}") from None
            self.converted += 1
        return path

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
