"""``adb:NAME``: times .tflite files on an Android phone with TFLite's ``benchmark_model``.

``NAME`` is looked up in the device registry (:mod:`profilers.devices`). Per artifact: push it to
a session directory under the registry's ``work_dir``, run ``benchmark_model`` ``batches`` times
(each: ``warmup`` warm-up runs, then ``ceil(runs / batches)`` timed runs, optionally pinned with
``taskset``), parse, and delete the file (also when timing fails). The ``benchmark_model``
binary is pushed once per phone and cached there under its content hash. Session directories
are named ``<host>-<pid>-<token>``; ones left by dead processes of this host (a phone that
vanished mid-build) are removed by the next session.

Statistics: ``benchmark_model`` prints a mean and std per invocation, not per-run times, so the
median/p10/p90 are over the batch means and the std is the pooled per-run std (see
:func:`profilers.benchmark_model.combine_batches`); ``describe()['stats_method']`` says so.
Batch means drifting beyond ``drift_tolerance`` from the earlier to the later batches (thermal
throttling) raise a :class:`~profilers.measure.DriftWarning`.

Transient failures (dropped connection, timeout, phone briefly offline) retry the whole
artifact ``retries`` times with exponential backoff; an unauthorized phone fails at once.
"""
from __future__ import annotations

import logging
import math
import os
import re
import secrets
import shlex
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, TypeVar

from .adb_transport import (AdbTransport, AdbTransportError, DeviceUnauthorized,
                            TransientAdbError, open_transport)
from .base import DeviceSpec, LatencyStats, Profiler, ProfilerError, register_profiler
from .benchmark_model import (BenchmarkParseError, build_command, combine_batches,
                              parse_benchmark_output)
from .devices import DeviceEntry, get_device
from .measure import DriftWarning
from supernet.fileio import sha256_file

__all__ = ["AdbProfiler"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True

@register_profiler("adb")
class AdbProfiler(Profiler):
    """``adb:NAME``. ``threads`` defaults to the registry's; ``registry`` overrides the registry
    file; ``device`` (a :class:`DeviceEntry`) bypasses the registry; ``batches`` overrides the
    registry's number of ``benchmark_model`` invocations per artifact."""

    artifact_format = "tflite"

    def __init__(self, spec: DeviceSpec, *, threads: int | None = None, runs: int = 50,
                 warmup: int = 10, registry: "str | os.PathLike | None" = None,
                 device: Optional[DeviceEntry] = None, batches: Optional[int] = None,
                 transport: Optional[AdbTransport] = None, sleep: Callable[[float], None] = time.sleep):
        spec = DeviceSpec.parse(spec)
        entry = device if device is not None else get_device(spec.target, registry)
        threads = spec.options.get("threads", threads)
        threads = entry.threads if threads is None else int(threads)
        if threads < 1:
            raise ProfilerError(f"threads must be >= 1, got {threads}")
        if runs < 1 or warmup < 0:
            raise ProfilerError(f"runs must be >= 1 and warmup >= 0, got {runs}, {warmup}")
        super().__init__(spec, threads=threads, runs=runs, warmup=warmup)
        self.entry = entry
        self.batches = max(1, min(int(batches or entry.batches), runs))
        self.runs_per_batch = math.ceil(runs / self.batches)
        binary = Path(entry.benchmark_model)
        if not binary.is_file():
            raise ProfilerError(
                f"device {entry.name}: benchmark_model not found at {binary}; download TFLite's "
                f"prebuilt android_aarch64_benchmark_model (or build it with bazel) and set "
                f"benchmark_model in {entry.source or 'the device registry'}")
        self._binary = binary
        self._binary_sha = sha256_file(binary)
        self._remote_bin = f"{entry.work_dir}/bin/benchmark_model-{self._binary_sha[:12]}"
        self._host_tag = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:32]
        self._session = (f"{entry.work_dir}/tmp/{self._host_tag}-{os.getpid()}-"
                         f"{secrets.token_hex(3)}")
        self._transport = transport if transport is not None else open_transport(entry)
        self._sleep = sleep
        self._bin_ready = False
        self._session_ready = False
        self._swept = False
        self._counter = 0
        self._props: Optional[Dict[str, str]] = None
        self.binary_pushes = 0
        self.last_meta: Dict[str, Any] = {}

    # -- retries ---------------------------------------------------------------------------
    def _with_retries(self, what: str, fn: Callable[[], T]) -> T:
        attempts = self.entry.retries + 1
        last: Optional[TransientAdbError] = None
        for attempt in range(attempts):
            try:
                return fn()
            except DeviceUnauthorized:
                raise
            except TransientAdbError as exc:
                last = exc
                self._reset()
                if attempt + 1 < attempts:
                    delay = self.entry.backoff_s * (2 ** attempt)
                    log.warning("%s (attempt %d/%d); retrying %s in %.1fs", exc, attempt + 1,
                                attempts, what, delay)
                    self._sleep(delay)
        assert last is not None
        raise type(last)(f"{last} (gave up on {what} after {attempts} attempt"
                         f"{'s' if attempts > 1 else ''})") from None

    def _reset(self) -> None:
        self._transport.close()
        self._bin_ready = False
        self._session_ready = False

    # -- device setup ----------------------------------------------------------------------
    def _shell_ok(self, command: str, timeout_s: Optional[float] = None) -> str:
        rc, out = self._transport.shell(command, timeout_s)
        if rc != 0:
            raise ProfilerError(f"device {self.entry.name}: `{command[:100]}` failed with exit "
                                f"status {rc}: {out.strip()[-300:]}")
        return out

    def _probe(self) -> Dict[str, str]:
        if self._props is None:
            keys = ("ro.product.model", "ro.product.cpu.abi", "ro.build.version.release")
            out = self._shell_ok("; ".join(f"getprop {k}" for k in keys), 30)
            vals = out.replace("\r", "").split("\n")
            self._props = {k: (vals[i].strip() if i < len(vals) else "")
                           for i, k in enumerate(keys)}
        return self._props

    def _ensure_binary(self) -> None:
        if self._bin_ready:
            return
        st = self._transport.stat(self._remote_bin)
        if st is None or st.size != self._binary.stat().st_size:
            part = f"{self._remote_bin}.part"
            self._shell_ok(f"mkdir -p {shlex.quote(self.entry.work_dir + '/bin')}")
            self._transport.push(self._binary, part, mode=0o755)
            # Renamed into place only once complete: an interrupted push never leaves a file
            # under the cached name.
            self._shell_ok(f"chmod 755 {shlex.quote(part)} && "
                           f"mv -f {shlex.quote(part)} {shlex.quote(self._remote_bin)}")
            self.binary_pushes += 1
            log.info("pushed %s to %s:%s", self._binary, self.entry.name, self._remote_bin)
        self._bin_ready = True

    def _ensure_session(self) -> None:
        if self._session_ready:
            return
        tmp = f"{self.entry.work_dir}/tmp"
        if not self._swept:
            # Sessions of this host whose process is gone (killed, crashed, or the phone was
            # unreachable when they ended) left files behind; nothing else will remove them.
            _, listing = self._transport.shell(f"ls {shlex.quote(tmp)}")
            pat = re.compile(re.escape(self._host_tag) + r"-(\d+)-[0-9a-f]+")
            stale = [n for n in listing.split()
                     if (m := pat.fullmatch(n)) and not _pid_alive(int(m.group(1)))]
            if stale:
                self._shell_ok("rm -rf " + " ".join(shlex.quote(f"{tmp}/{n}") for n in stale))
                log.info("device %s: removed %d stale session dir(s)", self.entry.name,
                         len(stale))
            self._swept = True
        self._shell_ok(f"mkdir -p {shlex.quote(self._session)}")
        self._session_ready = True

    # -- measuring -------------------------------------------------------------------------
    def measure(self, artifact: Any, input_shape: Sequence[int]) -> LatencyStats:
        """Time a .tflite file with benchmark_model on the phone: pushed into this session's
        directory, run in ``batches`` invocations, retried on a dropped connection; warns
        (DriftWarning) when later batches drift from earlier ones. Per-measurement facts land in
        ``last_meta``."""
        path = Path(artifact)
        if not path.is_file():
            raise ProfilerError(f"no such .tflite file: {path}")
        stats, meta = self._with_retries(f"timing {path.name}", lambda: self._measure_once(path))
        meta["input_shape"] = [int(x) for x in input_shape]
        self.last_meta = meta
        if meta["drifted"]:
            warnings.warn(f"device {self.entry.name}: latency of {path.name} drifted "
                          f"{meta['drift']:+.1%} from its earlier to its later batches (thermal "
                          f"throttling or background load?)", DriftWarning, stacklevel=2)
        return stats

    def _measure_once(self, path: Path):
        t = self._transport
        t.connect()
        self._probe()
        self._ensure_binary()
        self._ensure_session()
        self._counter += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", path.name)[-80:]
        remote = f"{self._session}/{self._counter:05d}-{safe}"
        outputs = []
        try:
            t.push(path, remote, mode=0o644)
            for _ in range(self.batches):
                cmd = build_command(self._remote_bin, remote, threads=self.threads,
                                    warmup=self.warmup, runs=self.runs_per_batch,
                                    affinity=self.entry.affinity,
                                    extra_args=self.entry.benchmark_args)
                rc, out = t.shell(cmd)
                try:
                    parsed = parse_benchmark_output(out)
                except BenchmarkParseError as exc:
                    status = f" (exit status {rc})" if rc else ""
                    raise BenchmarkParseError(f"device {self.entry.name}: {exc}{status}") from None
                if rc != 0:
                    raise ProfilerError(f"device {self.entry.name}: benchmark_model exited with "
                                        f"status {rc}: {out.strip()[-300:]}")
                outputs.append(parsed)
        finally:
            try:
                t.shell(f"rm -f {shlex.quote(remote)}", min(self.entry.timeout_s, 30.0))
            except AdbTransportError as exc:
                # The file sits in this session's directory, which close() removes.
                log.info("device %s: could not remove %s now: %s", self.entry.name, remote, exc)
        stats, meta = combine_batches(outputs, self.entry.drift_tolerance)
        meta.update(artifact=path.name, runs_per_batch=self.runs_per_batch,
                    warmup_per_batch=self.warmup)
        return stats, meta

    def describe(self) -> Dict[str, Any]:
        """The base metadata plus the phone's model, ABI and Android version, the transport, the
        benchmark_model binary (name and sha256) and how the statistics are formed."""
        props = self._with_retries("reading device properties", self._probe)
        return {**super().describe(),
                "device_name": self.entry.name,
                **self._transport.describe(),
                "model": props.get("ro.product.model"),
                "abi": props.get("ro.product.cpu.abi"),
                "android": props.get("ro.build.version.release"),
                "affinity": self.entry.affinity,
                "batches": self.batches,
                "runs_per_batch": self.runs_per_batch,
                "benchmark_model": self._binary.name,
                "benchmark_model_sha256": self._binary_sha,
                "benchmark_args": list(self.entry.benchmark_args),
                "stats_method": ("median/p10/p90 over benchmark_model invocations (batch means); "
                                 "std pooled over all timed runs"),
                "drift_tolerance": self.entry.drift_tolerance}

    def close(self) -> None:
        """Remove this session's directory on the phone (best effort: an unreachable phone is
        logged, not raised) and forget the connection."""
        try:
            if self._session_ready:
                self._transport.shell(f"rm -rf {shlex.quote(self._session)}",
                                      min(self.entry.timeout_s, 30))
        except AdbTransportError as exc:
            log.info("device %s: could not remove %s: %s", self.entry.name, self._session, exc)
        finally:
            self._reset()
