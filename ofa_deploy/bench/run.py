"""Running a benchmark: one worker thread per lane measures its (artifact, device) jobs in
turn, each result is compared with the baseline and the JSON file rewritten as it arrives."""
from __future__ import annotations

import json
import os
import platform
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from profilers.base import DeviceSpec, LatencyStats, Profiler, ProfilerError, get_profiler
from profilers.protocol import MeasurementProtocol, measure_pooled, require_comparable
from supernet.errors import first_line
from supernet.fileio import utc_now

from .artifacts import ARTIFACT_SUFFIXES, Artifact
from .compare import compare_latency, load_baseline, match_baseline
from .devices import device_gone, lane_of, profiler_class_of
from .errors import BenchError
from .report import write_json
from .results import FORMAT_NAME, FORMAT_VERSION, IDENTITY_DOC, BenchReport, BenchResult

__all__ = ["run_bench"]


def _host_meta() -> Dict[str, Any]:
    from profilers import discovery

    cpu = discovery.cpu_info()
    return {"hostname": socket.gethostname(), "platform": platform.platform(),
            "python": sys.version.split()[0], "cpu": cpu.get("model"),
            "cpu_cores": cpu.get("cores")}


def _baseline_protocol(path: "str | os.PathLike") -> Optional[MeasurementProtocol]:
    """The protocol a baseline file records (None: files without one predate protocols and
    are compared as before; unreadable files are reported by the baseline loader)."""
    try:
        meta = json.loads(Path(path).read_text(encoding="utf-8")).get("meta") or {}
    except (OSError, ValueError, AttributeError):
        return None
    return MeasurementProtocol.of(meta) if isinstance(meta, Mapping) else None


def _resumable(path: Optional[Path], settings: Mapping[str, Any]
               ) -> Dict[Tuple[str, str, str], Dict[str, Any]]:
    """Measured results of an earlier run into ``path`` taken with the same settings.

    A file that cannot be resumed from (not JSON, not a bench file, other settings) is an
    error: this run would otherwise overwrite it, losing results the user asked to keep.
    """
    if path is None or not path.is_file():
        return {}
    keep = "it was left as it is: move it away, or run without --resume to replace it"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"--resume: cannot read {path} ({first_line(exc, 120)}); {keep}") from None
    meta = data.get("meta") if isinstance(data, Mapping) else None
    rows = data.get("results") if isinstance(data, Mapping) else None
    if not isinstance(meta, Mapping) or not isinstance(rows, list) or \
            meta.get("format") not in (None, FORMAT_NAME):
        raise BenchError(f"--resume: {path} is not an ofa-deploy bench results file; {keep}")
    differ = [f"{k}={meta.get(k)!r} there, {v!r} now" for k, v in settings.items()
              if meta.get(k) != v]
    if differ:
        raise BenchError(f"--resume: {path} was measured with other settings "
                         f"({'; '.join(differ)}), so none of it can be reused; {keep}")
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
            "started_at": utc_now(), "finished_at": None, "complete": False,
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
                                           self.protocol.for_networks())[0]
                    if not isinstance(stats, LatencyStats):
                        raise ProfilerError(f"profiler for {dev} returned {type(stats).__name__}")
                    desc = _safe_describe(prof)
                    extra = getattr(prof, "last_meta", None)  # per-measurement facts (adb)
                    if desc is not None and isinstance(extra, Mapping) and extra:
                        desc = {**desc, "measurement": _jsonable(extra)}
                    self.record(BenchResult(art, dev, "ok", stats=stats, profiler=desc,
                                            elapsed_s=time.perf_counter() - t0,
                                            measured_at=utc_now()))
                except Exception as exc:  # any failure is recorded as an error case, never lost
                    msg = first_line(exc, 400, with_type=True)
                    self.record(BenchResult(art, dev, "error", reason=msg,
                                            elapsed_s=time.perf_counter() - t0,
                                            measured_at=utc_now()))
                    why = device_gone(spec) if dev in profs else "profiler could not start"
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
        self.meta["finished_at"] = utc_now()
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
    from .. import __version__

    return __version__


def run_bench(artifacts: Sequence[Artifact], devices: Sequence[DeviceSpec], *,
              runs: Optional[int] = None, warmup: Optional[int] = None,
              threads: Optional[int] = None, rounds: Optional[int] = None,
              cache: Optional[str] = None, estimator: Optional[str] = None,
              protocol: Optional[MeasurementProtocol] = None,
              baseline: "str | os.PathLike | None" = None, tolerance_pct: float = 10.0,
              min_delta_ms: float = 0.0, json_path: "str | os.PathLike | None" = None,
              resume: bool = False,
              on_result: Optional[Callable[[BenchResult, int, int], None]] = None,
              profiler_factory: Callable[..., Profiler] = get_profiler) -> BenchReport:
    """Measure every artifact on every device; compare with ``baseline`` if given.

    Every measurement follows ``protocol`` (default: the shared
    :class:`~profilers.protocol.MeasurementProtocol` with ``runs``, ``warmup``, ``threads``,
    ``rounds``, ``cache`` and ``estimator`` where given; without an estimator, a baseline's),
    so bench numbers compare with a
    table's, ``lut validate``'s and ``specialize``'s; a baseline measured under another protocol is
    refused. ``json_path`` is rewritten atomically after each result. ``resume`` reuses
    measured results already in ``json_path`` for the same (artifact name, sha256, device)
    and protocol.
    """
    if runs is not None and runs < 1:
        raise BenchError(f"runs must be at least 1, got {runs}")
    if warmup is not None and warmup < 0:
        raise BenchError(f"warmup must be >= 0, got {warmup}")
    old = _baseline_protocol(baseline) if baseline is not None else None
    if protocol is None and estimator is None and old is not None:
        # a baseline's estimator unless told otherwise: a CI job whose baseline predates a
        # change of the default estimator keeps comparing like with like
        estimator = old.estimator
    protocol = (protocol or MeasurementProtocol()).with_(runs=runs, warmup=warmup,
                                                         threads=threads,
                                                         network_rounds=rounds,
                                                         cache=cache, estimator=estimator)
    if tolerance_pct < 0:
        raise BenchError(f"tolerance must be >= 0 percent, got {tolerance_pct}")
    base = load_baseline(baseline) if baseline is not None else None
    if old is not None:
        # a baseline measured under another protocol is refused
        require_comparable(old, protocol, f"baseline {baseline}", "this run")
    formats = {str(d): getattr(profiler_class_of(d), "artifact_format", "onnx") for d in devices}
    roots = sorted({str(a.root) for a in artifacts})
    run = _Run(artifacts, devices, protocol=protocol,
               baseline_path=baseline, baseline=base, tolerance_pct=tolerance_pct,
               min_delta_ms=min_delta_ms, json_path=json_path, resume=resume,
               on_result=on_result, profiler_factory=profiler_factory, roots=roots)
    return run.execute(formats)
