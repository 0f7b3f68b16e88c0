"""Build a latency table by timing every op a space can run on one device.

Method
    Every distinct op (its family's ``enumerate_ops``) becomes a small standalone model
    (:mod:`supernet.op_models`), is converted to the backend's format and timed. By default an
    op is timed behind a *context* producer (a depthwise 1x1 conv on its input) and the
    producer alone is timed too; the entry is the difference. That difference is the op as it
    runs inside a network: the runtime's layout conversions at graph edges telescope along a
    chain of ops, fusions with the producer happen as they do in a network, and the fixed cost
    of one inference call cancels. The fixed cost is timed once on an empty model and stored as the
    table's ``overhead_ms``, which the predictor adds once per network. With ``context=False``
    the op is timed alone and ``overhead_ms`` is subtracted from it instead.

Rounds and protocol
    Models are timed under one :class:`~profilers.protocol.MeasurementProtocol`, the same that
    ``lut validate``, ``lut calibrate``, ``specialize`` and ``bench`` use: ``rounds`` passes
    over every model (so a neighbour's burst is spread over many ops rather than landing on
    one), all runs of a model kept, its entry the protocol's estimate of them (the median of
    the pool by default; ``best-round-median``: the lowest round median). The protocol is stored
    in the table's meta, with the run-to-run variation (CV) of every entry's op model
    (``meta["noise"]``) and a few reference ops (``meta["reference_ops"]``) that
    :mod:`luts.drift` re-times before the table is used, to rescale it to the machine's speed
    of the day.

Resume
    The table is saved atomically after every op, with a sidecar (``<table>.raw``) holding the
    raw timings and rounds done, so a killed build loses at most the op it was timing and the
    same command run again skips what is done. More rounds or more resolutions extend a table.

Conversion
    Op models are converted ahead of timing, in worker processes, and cached on disk:
    see :mod:`luts.convert` (``convert_workers``, ``cpus`` and ``cache_dir`` below).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from profilers.base import DeviceSpec, LatencyStats, Profiler, get_profiler
from profilers.measure import DriftMonitor, loadavg
from profilers.protocol import DEFAULT_ESTIMATOR, MeasurementProtocol, cv_of, estimate, \
    noise_warning
from supernet.fileio import utc_now
from supernet.op_families import resolve_space
from supernet.ops import OpKey
from supernet.space import Space

from .convert import (FORMAT_SUFFIX, METHOD_VERSION, OpModelCache, _Converter, _Job,
                      check_profiler_precision, converter_tag, export_artifact,
                      op_quant_settings, precision_profiler_kwargs, require_converter)
from .store import cache_dir as default_cache_dir, default_lut_path
from .table import LatencyTable, LUTError, _parse_precision

# converter_tag, export_artifact, require_converter, OpModelCache, METHOD_VERSION and
# FORMAT_SUFFIX live in luts.convert; they stay importable from here for existing callers.
__all__ = ["build_lut", "export_artifact", "require_converter", "raw_path",
           "network_bytes", "converter_tag", "OpModelCache", "check_resolutions",
           "METHOD_VERSION", "FORMAT_SUFFIX"]


def check_resolutions(space: Space, resolutions: Optional[Sequence[int]]) -> List[int]:
    """The resolutions to build, sorted and deduplicated (the space's own when None); any not in the
    space is a LUTError listing the valid ones."""
    if resolutions is None:
        return list(space.resolutions)
    res = sorted({int(r) for r in resolutions})
    bad = [r for r in res if r not in space.resolutions]
    if not res:
        raise LUTError("no resolutions given")
    if bad:
        raise LUTError(f"resolution(s) {bad} not in space {space.name} "
                       f"(resolutions: {', '.join(map(str, space.resolutions))})")
    return res


def _diff_stats(s: LatencyStats, base_ms: float, base_std: float = 0.0) -> LatencyStats:
    """``s`` minus a constant baseline, clamped at zero (a cheap op's difference can dip below
    zero by timing noise; a negative latency would only add noise to every prediction)."""
    med = max(0.0, s.median_ms - base_ms)
    p10 = min(med, max(0.0, s.p10_ms - base_ms))
    p90 = max(med, s.p90_ms - base_ms)
    return LatencyStats(med, p10, p90, float(np.hypot(s.std_ms, base_std)), s.runs)


# Settings a resumed build must share with the table/progress file it extends. The estimator is
# one: an entry is estimated from every round's runs at once, so rounds timed for one estimator
# cannot be finished under another (the op models themselves do not depend on it, so the
# op-model cache is shared and METHOD_VERSION stays).
_COMPAT_KEYS = ("device", "method", "method_version", "threads", "artifact_format", "seed",
                "runs", "warmup", "flush_bytes", "cache", "precision", "estimator")
# what a key means when a table written before it existed lacks it
_COMPAT_DEFAULTS = {"precision": "fp32", "estimator": "median-pooled"}

# Backends that time on this host's CPU, where cache flushing between runs applies.
HOST_BACKENDS = ("ort", "tflite")


def _activation_elems(op: OpKey) -> int:
    """Elements of the tensors ``op`` reads and writes (input, output, expanded middles)."""
    hi, ho = op.h * op.h, op.out_h * op.out_h
    n = hi * op.cin + ho * op.cout
    if op.kind in ("block", "bottleneck"):
        n += hi * op.mid + ho * op.mid
    elif op.kind == "first_block":
        n += ho * op.cin
    elif op.kind == "resnet_stem":  # the convs' outputs at half the input size
        n += (op.h // 2) ** 2 * (op.mid * (2 if op.skip else 1) + op.cout)
    return n


def network_bytes(space: Space, resolutions: Sequence[int], samples: int = 256,
                  elem_bytes: int = 4) -> int:
    """Bytes a typical subnet of ``space`` moves per inference (weights plus the activations
    its ops read and write, ``elem_bytes`` each: 4 for float32, 1 for int8; mean over seeded
    random subnets), clamped to between
    twice the L2 and twice the L3 cache. That is what passes through the caches between two
    runs of one op inside a network, so what an op model's timed runs are preceded by (see
    :class:`~profilers.measure.CacheFlusher`): a small network leaves an op's weights in L3, a
    large one sends them back to memory, and the op models then pay the same."""
    from profilers.measure import cache_size

    fam, space = resolve_space(space)
    rng = np.random.default_rng(0)
    total = []
    for _ in range(samples):
        ops = fam.arch_ops(space, fam.sample_arch(space, rng, resolutions))
        total.append(elem_bytes * sum(op.params + _activation_elems(op) for op in ops))
    lo = 2 * (cache_size(2) or 1024 ** 2)
    hi = max(lo, 2 * (cache_size(3) or 32 * 1024 ** 2))
    return int(min(max(float(np.mean(total)), lo), hi))


def _check_resume(old_meta: dict, meta: dict, path: Path) -> None:
    for k in _COMPAT_KEYS:
        old, new = (m.get(k, _COMPAT_DEFAULTS.get(k)) for m in (old_meta, meta))
        if old != new:
            raise LUTError(f"{path} was built with {k}={old!r}, this build has "
                           f"{k}={new!r}; pass --fresh to rebuild it, or another --out")


def _existing_estimator(out: Path) -> Optional[str]:
    """The estimator of the table (or its progress file) at ``out``; None when there is
    neither or it cannot be read (the build then reports what is wrong with it)."""
    for path in (out, raw_path(out)):
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        meta = state.get("meta") if isinstance(state, dict) else None
        if isinstance(meta, dict) and meta:
            return meta.get("estimator", _COMPAT_DEFAULTS["estimator"])
    return None


RAW_SCHEMA = "ofa-deploy-lut-raw"


def raw_path(out: "str | os.PathLike") -> Path:
    """Sidecar of a table being built: raw timings of every model and rounds done, for resume."""
    out = Path(out)
    return out.with_name(out.name + ".raw")


def sample_once(profiler: Profiler, artifact: Any, shape: Sequence[int]) -> List[float]:
    """One round of the protocol for one model: every timed run (ms), or the median alone for
    a backend that reports summary statistics only."""
    fn = getattr(profiler, "measure_samples", None)
    if fn is not None:
        return [float(v) for v in fn(artifact, shape)]
    return [float(profiler.measure(artifact, shape).median_ms)]


class _Raw:
    """Raw per-model timings (every run of every round, pooled, and how many runs each round
    added, for estimators that look at rounds) and rounds done per model; ``stats`` are
    :func:`~profilers.protocol.estimate` of them under ``estimator``."""

    def __init__(self, path: Path, estimator: str = DEFAULT_ESTIMATOR):
        self.path = path
        self.estimator = estimator
        self.samples: Dict[str, List[float]] = {}
        self.round_sizes: Dict[str, List[int]] = {}
        self.stats: Dict[str, LatencyStats] = {}
        self.rounds: Dict[str, int] = {}
        self.meta: dict = {}

    def _groups(self, name: str) -> List[List[float]]:
        pool, sizes = self.samples[name], self.round_sizes.get(name)
        if not sizes or sum(sizes) != len(pool):
            return [pool]  # written before rounds were kept: one pooled group
        out, i = [], 0
        for n in sizes:
            out.append(pool[i:i + n])
            i += n
        return out

    @classmethod
    def load(cls, path: Path, estimator: str = DEFAULT_ESTIMATOR) -> "_Raw":
        raw = cls(path, estimator)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            if state.get("schema") != RAW_SCHEMA:
                raise ValueError("schema")
            raw.samples = {k: [float(x) for x in v] for k, v in state["samples"].items()}
            raw.round_sizes = {k: [int(n) for n in v]
                               for k, v in state.get("round_sizes", {}).items()}
            raw.stats = {k: estimate(raw._groups(k), estimator)
                         for k, v in raw.samples.items() if v}
            raw.rounds = {k: int(v) for k, v in state["rounds"].items()}
            raw.meta = dict(state.get("meta", {}))
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LUTError(f"build progress file {path} is corrupt ({exc}); delete it or pass "
                           f"--fresh") from None
        return raw

    def record(self, name: str, samples: Sequence[float], rnd: int) -> LatencyStats:
        """Add one round's runs of model ``name`` to its pool; its stats are the pool's
        estimate."""
        pool = self.samples.setdefault(name, [])
        sizes = self.round_sizes.setdefault(name, [] if len(pool) == 0 else [len(pool)])
        pool.extend(float(v) for v in samples)
        sizes.append(len(samples))
        self.stats[name] = estimate(self._groups(name), self.estimator)
        self.rounds[name] = max(self.rounds.get(name, 0), rnd)
        return self.stats[name]

    def cv(self, name: str) -> Optional[float]:
        """Run-to-run variation (robust CV, :func:`~profilers.protocol.cv_of`) of model
        ``name``'s pooled runs."""
        s = self.stats.get(name)
        return None if s is None or s.median_ms <= 0 else cv_of(s)

    def save(self) -> None:
        state = {"schema": RAW_SCHEMA, "meta": self.meta,
                 "samples": {k: list(v) for k, v in sorted(self.samples.items())},
                 "round_sizes": {k: list(v) for k, v in sorted(self.round_sizes.items())},
                 "stats": {k: v.to_dict() for k, v in sorted(self.stats.items())},
                 "rounds": dict(sorted(self.rounds.items()))}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)


def _fp16_state(fmt: str) -> dict:
    """What an fp16 table's op models are: fp16-weight TFLite files, or (CUDA) torch
    modules run as a ``.half()`` copy."""
    if fmt == "torch":
        return {"precision": "fp16", "format": "torch-half", "weights": "float16",
                "activations": "float16"}
    from supernet.quantize import fp16_settings

    return fp16_settings()


def build_lut(space: "Space | str", device: "str | DeviceSpec", *,
              resolutions: Optional[Sequence[int]] = None,
              out: "str | os.PathLike | None" = None, runs: Optional[int] = None,
              warmup: Optional[int] = None, rounds: Optional[int] = None,
              threads: Optional[int] = None, cache: Optional[str] = None,
              estimator: Optional[str] = None, protocol: Optional[MeasurementProtocol] = None,
              cache_dir: "str | os.PathLike | None" = None, progress: bool = True,
              context: bool = True, convert_workers: int = 1,
              cpus: "str | Sequence[int] | None" = None, fresh: bool = False, seed: int = 0,
              drift_every_s: float = 30.0, drift_tolerance: float = 0.05,
              flush_bytes: "int | str | None" = "auto", profiler: Optional[Profiler] = None,
              precision: str = "fp32", recheck: bool = True,
              on_op: Optional[Callable[[OpKey, LatencyStats], None]] = None,
              on_warn: Optional[Callable[[str], None]] = None) -> LatencyTable:
    """Time every op of ``space`` at ``resolutions`` on ``device`` and write the table to
    ``out`` (default :func:`~luts.store.default_lut_path`), resuming a partial table there.

    ``protocol`` (default :class:`~profilers.protocol.MeasurementProtocol` with ``runs``,
    ``warmup``, ``rounds``, ``threads``, ``cpus``, ``cache`` and ``estimator`` where given):
    how every model is timed; ``rounds`` passes over all ops, every run kept (the estimator
    makes an entry of them; resuming under another estimator is refused). Rerunning a
    complete build with more rounds refines it. ``cache_dir``: root of the op-model cache (default
    ``cache_dir()/ops``). ``profiler``: an already-made profiler (tests); otherwise one is made
    from ``device`` and the protocol. ``flush_bytes`` (host CPU backends, ``cache="cold"``
    only): bytes written to evict caches before each timed run; ``"auto"`` is
    :func:`network_bytes`, the bytes a typical subnet moves, so a model sees the caches as
    the rest of a network leaves them. ``precision`` (``"fp32"``/``"int8"``/``"fp16"``): int8 times
    every op model quantized the way the shipped int8 artifacts are
    (:func:`supernet.quantize.export_int8`: ONNX static QDQ, full-integer TFLite; calibrated on
    seeded random inputs of the op's shape), cached apart from fp32 op models; the table
    records it as ``meta["precision"]`` and its default file is
    ``default_lut_path(device, space, precision)``. ``recheck``: after the rounds, entries
    that sit far above the same op shape at the other resolutions
    (:func:`luts.outliers.suspect_entries`) are timed for ``rounds`` more rounds, once per
    build (``meta["recheck"]`` lists them before and after). fp16 (TFLite devices: fp16-weight op
    models, :func:`supernet.quantize.export_fp16`; CUDA: a ``.half()`` copy) likewise; ONNX
    (cpu) devices refuse it. ``on_op(op, entry)`` is
    called after each op is saved; ``on_warn(message)`` receives drift warnings (default: the
    progress bar, else a :class:`~profilers.measure.DriftWarning`). Returns the complete
    table; its ``path`` is ``out``.
    """
    t_start = time.monotonic()
    fam, space = resolve_space(space)
    res = check_resolutions(space, resolutions)
    spec = DeviceSpec.parse(device)
    precision = _parse_precision(precision)
    for name, v, lo in (("runs", runs, 1), ("warmup", warmup, 0), ("rounds", rounds, 1)):
        if v is not None and v < lo:
            raise LUTError(f"need runs >= 1, warmup >= 0 and rounds >= 1 (got {name}={v})")
    out = Path(out) if out is not None else default_lut_path(spec, space.name, precision)
    if out.is_dir():
        raise LUTError(f"--out {out} is a directory; give a .json file path")
    if protocol is None and estimator is None and not fresh:
        # resuming or extending a table: its estimator, not the default (the default
        # changed once; a build started under the old one finishes under it)
        estimator = _existing_estimator(out)
    if protocol is None:
        from profilers.measure import parse_cpus

        protocol = MeasurementProtocol()
        if profiler is not None:  # an injected profiler decides its own settings
            threads, runs, warmup = profiler.threads, profiler.runs, profiler.warmup
        pc = parse_cpus(cpus)
        protocol = protocol.with_(runs=runs, warmup=warmup, rounds=rounds, threads=threads,
                                  cache=cache, estimator=estimator,
                                  cpus=tuple(pc) if pc else None)
        if threads is None and spec.backend not in HOST_BACKENDS:
            # phones and GPUs: the device's own thread setting (the registry's), not 1
            protocol = dataclasses.replace(protocol, threads=None)
        if protocol.cache == "cold" and spec.backend in HOST_BACKENDS:
            fb = (network_bytes(space, res, elem_bytes=1 if precision == "int8" else 4)
                  if flush_bytes in ("auto", None) else int(flush_bytes))
            protocol = protocol.with_(flush_bytes=fb)
    rounds = protocol.rounds
    if precision == "fp16" and spec.backend == "ort":  # before a profiler is made
        from supernet.quantize import FP16_REFUSAL

        raise LUTError(f"--precision fp16 on {spec}: {FP16_REFUSAL}")
    if profiler is None:
        profiler = get_profiler(spec, **protocol.profiler_kwargs(spec.backend),
                                **precision_profiler_kwargs(spec.backend, precision))
    fmt = profiler.artifact_format
    check_profiler_precision(profiler, precision)
    require_converter(fmt)
    cache = OpModelCache(Path(cache_dir) if cache_dir is not None
                         else default_cache_dir() / "ops", fmt, precision) \
        if fmt != "torch" else None
    desc = profiler.describe()
    meta = {
        "device": str(spec), "backend": spec.backend, "artifact_format": fmt,
        "method": "context-difference" if context else "isolated-minus-overhead",
        "method_version": METHOD_VERSION, "threads": profiler.threads, "runs": profiler.runs,
        "warmup": profiler.warmup, "seed": seed, "precision": precision,
        "converter": converter_tag(fmt, precision),
        "flush_bytes": desc.get("flush_cache_bytes"), "cache": protocol.cache,
        "estimator": protocol.estimator,
        # where the op models live: the drift check re-times the reference ops from there
        "op_cache_root": str(Path(cache_dir) if cache_dir is not None
                             else default_cache_dir() / "ops"),
        "protocol": protocol.get_state(),
        **({"quantization": op_quant_settings().get_state()} if precision == "int8" else {}),
        **({"quantization": _fp16_state(fmt)} if precision == "fp16" else {}),
        "profiler": desc, "stats_note": (
            f"{_median_note(protocol.estimator)}; entries are "
            "the op inside a network (context model + op minus context model), so they exclude "
            "the per-inference overhead, stored once as overhead_ms" if context else
            f"{_median_note(protocol.estimator)}; entries are "
            "the op timed alone minus overhead_ms"),
    }

    rawp = raw_path(out)
    raw = _Raw(rawp, protocol.estimator)
    prior_seconds = 0.0
    old_meta: dict = {}
    keep: Dict[OpKey, LatencyStats] = {}
    keep_overhead = 0.0
    if not fresh and out.exists():
        old = LatencyTable.load(out)
        if old.space.name != space.name:
            raise LUTError(f"{out} holds a table for space {old.space.name}, not {space.name}; "
                           f"pass --fresh to overwrite it, or another --out")
        _check_resume(old.meta, meta, out)
        old_meta = old.meta
        raw = _Raw.load(rawp, protocol.estimator)
        if not raw.stats:
            # A table whose progress file is gone: its entries are final (nothing to refine
            # them with); only ops it lacks get timed.
            keep = dict(old.entries)
            keep_overhead = old.overhead_ms
        prior_seconds = float(old.meta.get("build_seconds", 0.0) or 0.0)
    elif not fresh and rawp.exists():
        raw = _Raw.load(rawp, protocol.estimator)
        if raw.meta:
            _check_resume(raw.meta, meta, rawp)
    raw.meta.update({k: meta[k] for k in _COMPAT_KEYS})

    from supernet.op_models import context_name, op_input_shape, overhead_input_shape

    ops = fam.enumerate_ops(space, res)
    op_job = {op: _Job(op.to_string(), op_input_shape(op), space.name, seed, context, precision)
              for op in ops}
    ctx_job = {}
    if context:
        for j in op_job.values():
            ctx_job.setdefault(j.shape, _Job(context_name(j.shape), j.shape, space.name, seed,
                                             False, precision))
    over_job = _Job("overhead", overhead_input_shape(), space.name, seed, False, precision)

    table = LatencyTable(space, res, meta={**old_meta, **meta})

    def entry_of(op: OpKey) -> Optional[LatencyStats]:
        if op in keep:
            return keep[op]
        s = raw.stats.get(op.to_string())
        if s is None:
            return None
        if context:
            c = raw.stats.get(ctx_job[op_job[op].shape].what)
            return None if c is None else _diff_stats(s, c.median_ms, c.std_ms)
        o = raw.stats.get("overhead")
        return None if o is None else _diff_stats(s, o.median_ms)

    def refresh() -> None:
        table.entries = {}
        for op in ops:
            e = entry_of(op)
            if e is not None:
                table.entries[op] = e
        table._grids.clear()
        o = raw.stats.get("overhead")
        if o is not None:
            table.overhead_ms = o.median_ms
            table.meta["overhead_stats"] = o.to_dict()
        else:
            table.overhead_ms = keep_overhead

    def rounds_done(op: OpKey) -> int:
        return rounds if op in keep else raw.rounds.get(op.to_string(), 0)

    total = len(ops) * rounds
    done0 = sum(min(rounds_done(op), rounds) for op in ops)
    table.meta.update({"complete": False, "resolutions": res, "rounds": rounds,
                       "loadavg_start": loadavg(), "host_cpu": desc.get("cpu_model"),
                       "started": old_meta.get("started") or utc_now()})
    refresh()

    # Everything still to convert, in the order it will be timed.
    jobs: List[_Job] = [over_job]
    for op in ops:
        if rounds_done(op) < rounds:
            j = op_job[op]
            if context:
                jobs.append(ctx_job[j.shape])
            jobs.append(j)
    avoid = getattr(profiler, "cpus", None)
    conv = _Converter(fmt, cache, convert_workers, avoid)
    bar = None
    monitor: Optional[DriftMonitor] = None
    measured = 0
    try:
        conv.prefetch(jobs)
        if progress:
            from supernet.progress import progress_bar

            if done0:
                print(f"resuming {out}: {done0} of {total} timings done", file=sys.stderr)
            # the bar counts timings: every op once per round (the numbers then add up)
            bar = progress_bar(total, initial=done0, unit="timing",
                               desc=f"profile {spec} {space.name}: {len(ops)} ops x "
                                    f"{rounds} rounds")
        pending = [op.macs for op in ops if rounds_done(op) < rounds]
        ref_macs = float(np.percentile(pending, 75)) if pending else 0.0
        for rnd in range(1, rounds + 1):
            todo = [op for op in ops if rounds_done(op) < rnd]
            if not todo:
                continue
            if raw.rounds.get("overhead", 0) < rnd:
                raw.record("overhead", sample_once(profiler, conv.get(over_job), over_job.shape),
                           rnd)
            for op in todo:
                j = op_job[op]
                if context and raw.rounds.get(ctx_job[j.shape].what, 0) < rnd:
                    # once per round, before its first op (a resumed round does not pool a
                    # context model twice)
                    cj = ctx_job[j.shape]
                    raw.record(cj.what, sample_once(profiler, conv.get(cj), cj.shape), rnd)
                art = conv.get(j)
                raw.record(j.what, sample_once(profiler, art, j.shape), rnd)
                measured += 1
                if monitor is None and op.macs >= ref_macs:
                    # The drift reference: a costly op (a cheap one is too noisy for a 5%
                    # test), timed again now and then; it must keep its time unless the
                    # machine's speed changed.
                    monitor = DriftMonitor(
                        lambda a=art, sh=j.shape: profiler.measure(a, sh).median_ms,
                        every_s=drift_every_s, tolerance=drift_tolerance,
                        on_warn=on_warn or ((lambda m: bar.write(f"warning: {m}"))
                                            if bar is not None else None))
                elif monitor is not None:
                    monitor.check()
                refresh()
                table.meta["build_seconds"] = round(prior_seconds + time.monotonic() - t_start, 3)
                if monitor is not None:
                    table.meta["drift"] = monitor.summary()
                raw.save()
                table.save(out)
                if bar is not None:
                    bar.update(1)
                if on_op is not None and op in table.entries:
                    on_op(op, table.entries[op])
        if monitor is not None:
            monitor.check(force=True)
            table.meta["drift"] = monitor.summary()
        refresh()
        if recheck and raw.meta.get("recheck_rounds_of") != rounds:
            def entry_jobs(op: OpKey) -> List[_Job]:
                return ([ctx_job[op_job[op].shape]] if context else []) + [op_job[op]]

            measured += _recheck(raw, table, entry_jobs, keep, rounds, profiler, conv,
                                 save=lambda: (refresh(), raw.save(), table.save(out)),
                                 say=(bar.write if bar is not None else None))
            raw.meta["recheck_rounds_of"] = rounds
            refresh()
        table.meta["noise"] = _noise_summary(raw, ops, op_job)
        table.meta["reference_ops"] = _reference_ops(raw, ops, op_job)
        missing = table.missing_ops()
        if missing:  # cannot happen unless enumerate_ops and the table disagree
            raise LUTError(f"table incomplete after build: {len(missing)} ops missing, e.g. "
                           f"{missing[0].to_string()}")
        table.meta.update({
            "complete": True, "finished": utc_now(), "loadavg_end": loadavg(), "ops": len(ops),
            "op_timings_this_run": measured, "models_converted": conv.converted,
            "models_from_cache": conv.reused,
            "build_seconds": round(prior_seconds + time.monotonic() - t_start, 3),
        })
        raw.save()
        table.save(out)
        table.path = out
        return table
    finally:
        if bar is not None:
            bar.close()
        conv.close()


def _recheck(raw: "_Raw", table: LatencyTable, jobs_of: Callable[[OpKey], List[_Job]],
             keep: Dict[OpKey, LatencyStats], rounds: int,
             profiler: Profiler, conv: "_Converter", *, save: Callable[[], Any],
             say: Optional[Callable[[str], None]] = None) -> int:
    """Time the suspect entries (:func:`luts.outliers.suspect_entries`) for ``rounds`` more
    rounds, interleaved, saving after each timing (a killed recheck resumes: an op's rounds
    done are in ``raw``). ``jobs_of(op)``: the models an entry is made of, timed in that
    order (its context model, then the op: a spell that slowed the op slowed its context
    model too, and the entry is their difference). Why: an entry that a slow spell of the
    machine covered in every round stays high under any estimator; rounds timed minutes
    later, at another moment of the machine, bring it down, and the lowest-round-median
    estimator keeps the quieter rounds. Records ``table.meta["recheck"]`` and returns the
    op timings made."""
    from .outliers import DEFAULT_THRESHOLD, suspect_entries

    suspects = suspect_entries({op: s.median_ms for op, s in table.entries.items()
                                if op not in keep})
    before = {op: table.entries[op].median_ms for op in suspects}
    if suspects and say is not None:
        say(f"re-timing {len(suspects)} entr{'y' if len(suspects) == 1 else 'ies'} far above "
            f"the same op at other resolutions ({rounds} more rounds)")
    timed = 0
    for rnd in range(rounds + 1, 2 * rounds + 1):
        for op in suspects:
            for j in jobs_of(op):
                if raw.rounds.get(j.what, 0) >= rnd:
                    continue  # done before a kill, or a context model shared with another
                raw.record(j.what, sample_once(profiler, conv.get(j), j.shape), rnd)
                timed += j.what == op.to_string()
            save()
    table.meta["recheck"] = {
        "rule": f"more than {DEFAULT_THRESHOLD:.0%} above a + b*h^2 fitted on the same op "
                f"shape at the other resolutions",
        "rounds": rounds, "suspects": len(suspects),
        "entries": {op.to_string(): {"before_ms": round(before[op], 6),
                                     "after_ms": round(table.entries[op].median_ms, 6),
                                     "excess": round(x, 4)}
                    for op, x in suspects.items()}}
    return timed


def _median_note(estimator: str) -> str:
    if estimator == "best-round-median":
        return ("median = the lowest of `rounds` interleaved rounds' medians, p10/p90 of every "
                "run pooled")
    return "median/p10/p90 of every run of `rounds` interleaved rounds, pooled"


def _noise_summary(raw: "_Raw", ops: Sequence[OpKey], op_job: Dict[OpKey, _Job]) -> dict:
    """Run-to-run variation of every entry's op model, and its median / p90 over the table."""
    per = {op.to_string(): raw.cv(op_job[op].what) for op in ops}
    vals = [v for v in per.values() if v is not None]
    return {"per_entry_cv": {k: (None if v is None else round(v, 5)) for k, v in per.items()},
            "median_cv": float(np.median(vals)) if vals else None,
            "p90_cv": float(np.percentile(vals, 90)) if vals else None,
            "warning": noise_warning(vals, what="op timings") if vals else None}


def _reference_ops(raw: "_Raw", ops: Sequence[OpKey], op_job: Dict[OpKey, _Job],
                   n: int = 3) -> List[dict]:
    """``n`` op models spread over the costly half of the table (a cheap op is too noisy to
    tell a 5% change), with their pooled medians: re-timed before the table is used
    (:func:`luts.drift.check_drift`) to measure how fast the machine is today."""
    cand = sorted((op for op in ops if op_job[op].what in raw.stats),
                  key=lambda o: (raw.stats[op_job[o].what].median_ms, o.to_string()))
    if not cand:
        return []
    picks = sorted({int(round(q * (len(cand) - 1))) for q in np.linspace(0.5, 0.95, n)})
    out = []
    for i in picks:
        j = op_job[cand[i]]
        out.append({"what": j.what, "shape": list(j.shape), "space": j.space, "seed": j.seed,
                    "context": j.context, "precision": j.precision,
                    "median_ms": raw.stats[j.what].median_ms})
    return out

