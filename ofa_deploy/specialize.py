"""``specialize``: search -> extract -> BN-calibrate -> export -> measure -> report, for one or
several (target, budget) scenarios sharing one supernet and one accuracy predictor.

The budget is a promise about the *measured* latency of the shipped file, so the loop is
closed: the exported winner is timed on the target under the table's measurement protocol
(:mod:`profilers.protocol`, the same as the table, ``lut validate`` and ``bench``); if the
measured figure (median, or p90 with ``latency_quantile=90``) is over budget, the effective
budget the search uses is tightened by the observed ratio and the search runs again; if it is
under 0.9 x budget while slower (more accurate) subnets exist, the effective budget is loosened
the same way (and when the looser search picks the same subnet, none slower is predicted more
accurate: the loop stops and the round's note says so). At most ``max_rounds`` rounds; the
report lists each, and the winner is the
round with the best predicted accuracy among those measured within budget (else the fastest).

``precision="int8"`` scenarios search an int8 latency table with the int8 accuracy estimate
(:mod:`ofa_deploy.int8_accuracy`: the float predictor minus the fitted drop), ship int8
``model.onnx``/``model.tflite`` calibrated on training images, and measure the accuracy of
those files themselves; every report names the other precision's winner beside its own
(``by_precision``) when a run has both.

The module is a little over 500 lines because the loop's steps (scenario, search round,
extraction and calibration, export, measurement, report) share one scenario record and one
error-handling path; export, reports and measurement backends live in their own modules.
"""
from __future__ import annotations

import hashlib
import json
import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from luts.store import load_table
from luts.table import LatencyTable, LUTError
from profilers.base import DeviceSpec, get_profiler
from profilers.protocol import MeasurementProtocol, cv_of, measure_pooled, noise_warning, \
    require_comparable
from supernet import ArchConfig, Supernet, arch_cost, extract_subnet
from supernet.errors import BadValueError, OfaDeployError
from supernet.fileio import atomic_write_text, sha256_file

from .search import (Constraints, EvolutionConfig, SearchError, SearchResult, evolution_search,
                     pareto_search)

log = logging.getLogger(__name__)

__all__ = ["Scenario", "make_scenarios", "parse_precisions", "resolve_lut", "lut_id", "specialize",
           "runtime_versions", "subnet_metadata", "calibrate_subnet"]

LOCAL_BACKENDS = ("ort", "tflite", "cuda")


@dataclass(frozen=True)
class Scenario:
    target: str
    budget_ms: float
    mflops: Optional[float] = None
    precision: str = "fp32"

    @property
    def name(self) -> str:
        """Folder name of the scenario: device slug, budget, MACs cap and a non-fp32 precision,
        e.g. ``cpu-15ms``, ``cpu-15ms-int8``."""
        b = f"{self.budget_ms:g}ms"
        return (f"{DeviceSpec.parse(self.target).slug}-{b}"
                + (f"-{self.mflops:g}M" if self.mflops else "")
                + ("" if self.precision == "fp32" else f"-{self.precision}"))

    @property
    def problem(self) -> tuple:
        """(target, budget, MACs cap): the scenarios of one problem at each precision."""
        return (self.target, self.budget_ms, self.mflops)


def parse_precisions(text: "str | Sequence[str]") -> tuple:
    """``"fp32,int8"`` -> ("fp32", "int8"): the precisions to specialize for, in order; an
    unknown or empty list is a one-line error."""
    from supernet.quantize import parse_precision

    items = text.split(",") if isinstance(text, str) else list(text)
    out = tuple(dict.fromkeys(parse_precision(p) for p in items if str(p).strip()))
    if "fp16" in out:
        # fp16 would need its own accuracy estimate, a TFLite-only export on every target and
        # a closed loop that times fp16 files; what exists is the export and the tables
        raise BadValueError("specialize has no --precision fp16: specialize at fp32, then "
                            "`ofa-deploy export --arch runs/<scenario>/report.json --precision "
                            "fp16 --format tflite` (profile, lut and bench take --precision fp16)")
    if not out:
        raise BadValueError("--precision: give fp32, int8 or fp32,int8")
    return out


def make_scenarios(targets: Sequence[str], budgets: Sequence[float],
                   mflops: Optional[float] = None,
                   precisions: Sequence[str] = ("fp32",)) -> List[Scenario]:
    """Pair targets with budgets: one each, one target with many budgets, or one budget for
    many targets; each pair once per precision (next to each other)."""
    targets, budgets = list(targets), [float(b) for b in budgets]
    precisions = parse_precisions(precisions)
    if not targets:
        raise BadValueError("give at least one --target")
    if not budgets:
        raise BadValueError("give a latency budget with --ms")
    for b in budgets:
        if not np.isfinite(b) or b <= 0:
            raise BadValueError(f"--ms must be a positive number of milliseconds, got {b:g}")
    for t in targets:
        DeviceSpec.parse(t)
    if len(targets) == len(budgets):
        pairs = list(zip(targets, budgets))
    elif len(targets) == 1:
        pairs = [(targets[0], b) for b in budgets]
    elif len(budgets) == 1:
        pairs = [(t, budgets[0]) for t in targets]
    else:
        raise BadValueError(f"{len(targets)} targets and {len(budgets)} budgets: give one budget "
                             f"per target, one target with several budgets, or one budget")
    out, seen = [], set()
    for t, b in pairs:
        for p in precisions:
            s = Scenario(t, b, mflops, p)
            if s not in seen:
                seen.add(s)
                out.append(s)
    return out


def resolve_lut(target: str, space, *, lut_path: Optional[str] = None, build: bool = True,
                threads: Optional[int] = None, estimator: Optional[str] = None,
                progress: bool = True, echo: Callable[[str], None] = lambda s: None,
                precision: str = "fp32") -> LatencyTable:
    """The target's table of ``precision``: ``--lut``, a built-in, the profile cache; for a
    local target a missing table is built now (and cached; with ``threads`` and
    ``estimator`` where given), for a phone the error names the profile command. A table of
    another precision is a one-line LUTError."""
    what = f"--precision {precision}"
    if lut_path is not None:
        return load_table(lut_path, space=space, precision=precision, what=what)
    try:
        return load_table(target, space=space, precision=precision, what=what)
    except LUTError:
        spec = DeviceSpec.parse(target) if ":" in target or target == "cpu" else None
        if spec is None or spec.backend not in LOCAL_BACKENDS or not build:
            raise
    from luts.builder import build_lut

    # One thread unless asked: per-op timings of these small ops add up to whole-network
    # latency far more faithfully single-threaded (see benchmarks/lut_validation).
    threads = 1 if threads is None else threads
    echo(f"no {precision} latency table for {spec} / {space.name} yet: profiling it now with "
         f"{threads} thread(s) (cached for next time; --threads to change)")
    build_kw = dict(threads=threads, estimator=estimator, progress=progress,
                    precision=precision)
    table = build_lut(space, spec, **build_kw)
    from luts.calibrate import calibrate_or_remeasure

    echo("calibrating the new table on 20 whole subnets (the export path specialize ships)")
    return calibrate_or_remeasure(table, spec,
                                  lambda r: build_lut(space, spec, rounds=r, **build_kw),
                                  samples=20, progress=progress, echo=echo)


def lut_id(table: LatencyTable) -> str:
    """Content hash of a table: reports and exported models name the exact LUT they used."""
    return "lut-" + hashlib.sha256(table.to_json().encode()).hexdigest()[:12]


def runtime_versions() -> Dict[str, str]:
    """Versions of Python, torch, numpy, the runtimes and converters behind a report's
    numbers (recorded in report.json, so two reports can be told apart)."""
    vers = {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "platform": platform.platform()}
    for mod, name in (("onnxruntime", "onnxruntime"), ("onnx", "onnx"),
                      ("ai_edge_litert", "ai-edge-litert")):
        try:
            m = __import__(mod)
            vers[name] = getattr(m, "__version__", "unknown")
        except ImportError:
            pass
    try:
        from importlib.metadata import version

        vers["litert-torch"] = version("litert-torch")
        vers["ai-edge-litert"] = version("ai-edge-litert")
    except Exception:
        pass
    return vers


_INT8_KEYS = ("quantization", "calibrated_on", "top1_agreement", "op_types", "float_islands",
              "input", "output", "delegate_partitions", "fp16_weights")


def subnet_metadata(space, arch: ArchConfig, artifacts: Dict[str, dict], **extra) -> dict:
    """Metadata that travels with an exported subnet (a test recomputes every number)."""
    cost = arch_cost(space, arch)
    files = {}
    for fmt, a in artifacts.items():
        files[fmt] = {"path": Path(a["path"]).name, "bytes": Path(a["path"]).stat().st_size,
                      "sha256": sha256_file(Path(a["path"])), "max_abs_diff": a.get("max_abs_diff"),
                      "precision": a.get("precision", "fp32")}
        # int8 and fp16 files say how they were made (int8: also what runs in float)
        files[fmt].update({k: a[k] for k in _INT8_KEYS if k in a})
    return {"space": space.name, "arch": arch.to_dict(), "arch_string": arch.to_string(space),
            "input_shape": [1, 3, arch.r, arch.r], "params": cost["params"],
            "macs": cost["macs"], "files": files, **extra}


@dataclass
class DataContext:
    """Calibration / evaluation data for a specialization (optional). ``spec`` is the
    ``--data`` value it came from (recorded so ``export`` can load the same images)."""

    dataset: Any = None
    calib_images: int = 2000
    eval_images: Optional[int] = None
    batch_size: int = 200
    spec: Optional[str] = None
    # an int8 file choosing the float model's class on fewer calibration images is refused
    int8_min_agreement: Optional[float] = None
    # int8 calibration images (None: QuantSettings' default, the drop model's setting)
    quant_images: Optional[int] = None


def calibrate_subnet(sub: torch.nn.Module, dataset, r: int, images: int, batch_size: int = 200,
                     *, spec: Optional[str] = None) -> Dict[str, Any]:
    """Re-estimate ``sub``'s BN statistics on the first ``images`` held-out training images
    at resolution ``r`` (no augmentation, no randomness), in channels-last memory order.

    ``specialize`` and ``export`` both calibrate through here, so ``export --arch
    report.json`` rebuilds the shipped ``model.onnx`` bit for bit: the memory format changes
    which convolution kernels run, and so the last bits of the statistics. Returns the record
    of what was used (it goes into report.json as ``bn_calibration``); ``sub`` is modified in
    place and left in eval mode, contiguous.
    """
    from supernet.bn import calibrate_bn, calibration_batches
    from supernet.training.data import HOLDOUT_SEED

    sub = sub.to(memory_format=torch.channels_last)
    calibrate_bn(sub, calibration_batches(dataset.holdout, r, images, batch_size,
                                          channels_last=True))
    sub.to(memory_format=torch.contiguous_format).eval()
    return {"data": spec, "dataset": getattr(dataset, "name", None), "split": "holdout",
            "holdout_seed": HOLDOUT_SEED, "holdout_size": len(dataset.holdout),
            "images": min(images, len(dataset.holdout)), "order": "first images, in order",
            "batch_size": batch_size, "resolution": r, "memory_format": "channels_last",
            "seed": None}


def prepare_subnet(net: Supernet, arch: ArchConfig, data: DataContext, *,
                   finetune_epochs: int = 0, seed: int = 0, echo=lambda s: None):
    """Extract ``arch``, re-estimate its BN statistics (and optionally fine-tune); returns the
    subnet, its measured test accuracy and test images (None without data) and the record of
    the BN calibration (:func:`calibrate_subnet`; None without data)."""
    from .evaluate import accuracy_onnx

    sub = extract_subnet(net, arch).eval()
    if data.dataset is None:
        echo("no data: the subnet keeps the supernet's BN statistics (pass --data to calibrate)")
        return sub, None, None, None
    ds = data.dataset
    calib = calibrate_subnet(sub, ds, arch.r, data.calib_images, data.batch_size, spec=data.spec)
    if finetune_epochs > 0:
        _finetune(sub, ds, arch.r, finetune_epochs, seed=seed, batch_size=data.batch_size,
                  echo=echo)
    res = accuracy_onnx(sub, ds.test, arch.r, images=data.eval_images,
                        batch_size=data.batch_size)
    return sub, res["accuracy"], res["samples"], calib


def _finetune(sub: torch.nn.Module, ds, r: int, epochs: int, *, seed: int, batch_size: int,
              echo) -> None:
    """Plain SGD fine-tuning of the static subnet on the training split (cosine lr)."""
    rng = np.random.default_rng(seed)
    n = len(ds.train)
    steps = epochs * max(1, n // batch_size)
    opt = torch.optim.SGD(sub.parameters(), lr=0.01, momentum=0.9, weight_decay=3e-5, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    sub.train()
    step = 0
    for ep in range(epochs):
        perm = rng.permutation(n)
        for i in range(0, n - batch_size + 1, batch_size):
            x, y = ds.train.batch(perm[i:i + batch_size], r, train=True, rng=rng)
            loss = torch.nn.functional.cross_entropy(sub(x), y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        echo(f"fine-tune epoch {ep + 1}/{epochs}: loss {float(loss):.3f}")
    sub.eval()


def measure_artifact(target: str, artifacts: Dict[str, dict], subnet: torch.nn.Module,
                     input_shape: Sequence[int], *, protocol: MeasurementProtocol,
                     only_format: Optional[str] = None,
                     table: Optional[LatencyTable] = None) -> Optional[Dict[str, Any]]:
    """Time the exported ``artifacts`` (the torch ``subnet`` for a torch-format target) on
    ``target`` under ``protocol``; median/p10/p90/std/cv of the pooled runs. With
    ``only_format``, None when ``target``'s profiler runs another format.

    With a calibrated ``table`` the file is timed in a round-robin with the table's
    reference networks (:func:`luts.calibrate.measure_subnets` with ``lead``), so its rounds
    are spread over seconds: timed alone, its 15 rounds take well under a second, and one
    slow spell of the shared machine covered all of them (measured: 1.5-1.9x the same
    file's time a second later). ``references`` then says how fast the machine was
    meanwhile against the calibration (their median ratio now / then)."""
    spec = DeviceSpec.parse(target)
    prof = get_profiler(spec, **protocol.profiler_kwargs(spec.backend))
    try:
        fmt = prof.artifact_format
        if only_format is not None and fmt != only_format:
            return None
        if fmt == "torch":
            artifact = subnet
        elif fmt in artifacts:
            artifact = artifacts[fmt]["path"]
        else:
            raise OfaDeployError(f"target {target} runs {fmt} models: include {fmt} in --formats")
        from luts.drift import measure_with_references, reference_networks

        refs = None
        if table is not None and fmt != "torch" and reference_networks(table):
            got, d = measure_with_references(table, [], prof, protocol, apply=False,
                                             lead=[(artifact, tuple(input_shape))])
            stats = got[0]
            refs = {"speed_vs_calibration": d["scale"], "spread": d["spread"],
                    "networks": len(d["refs"])}
        else:
            stats = measure_pooled(prof, [(artifact, tuple(input_shape))],
                                   protocol.for_networks())[0]
        return {"median": stats.median_ms, "p10": stats.p10_ms, "p90": stats.p90_ms,
                "std": stats.std_ms, "runs": stats.runs,
                "cv": cv_of(stats) if stats.median_ms > 0 else None, "references": refs,
                "artifact": fmt, "protocol": protocol.get_state(), "profiler": prof.describe()}
    finally:
        prof.close()


# Aim this far inside the budget when re-targeting after a measurement: the next round's
# measurement has its own noise of a percent or two.
RETARGET_MARGIN = 0.98
# A winner measured below this share of the budget leaves speed unused: loosen and retry.
UNDERUSE = 0.9


def _retarget(eff: float, budget: float, figure: float) -> float:
    """The next effective budget: scaled by the observed budget / measured ratio."""
    return eff * RETARGET_MARGIN * budget / figure


def target_protocol(table: LatencyTable, threads: Optional[int] = None,
                    runs: Optional[int] = None, warmup: Optional[int] = None,
                    rounds: Optional[int] = None, estimator: Optional[str] = None
                    ) -> MeasurementProtocol:
    """The protocol ``specialize`` measures with: the table's, with the precision settings
    given; a thread count or estimator other than the table's is refused (it measures
    something else)."""
    from luts.calibrate import table_protocol

    base = table_protocol(table)
    p = base.with_(threads=threads, runs=runs, warmup=warmup, network_rounds=rounds,
                   estimator=estimator)
    require_comparable(base, p, "the latency table", "this measurement")
    return p


# the CPU profiler of each artifact format: on a host-CPU target every shipped file is timed
HOST_CPU_DEVICE = {"onnx": "ort:cpu", "tflite": "tflite:cpu"}


def measure_formats(target: str, artifacts: Dict[str, dict], measured: Optional[dict],
                    input_shape: Sequence[int], *, protocol: Optional[MeasurementProtocol]
                    ) -> Dict[str, Optional[dict]]:
    """Measured median/p10/p90 of every format in ``artifacts``: the target's own from
    ``measured``, the others, on a host-CPU target (ort, tflite), timed under the same
    ``protocol`` by that format's CPU runtime; None where the target cannot run it."""
    keys = ("median", "p10", "p90", "runs")
    out: Dict[str, Optional[dict]] = {f: None for f in artifacts}
    if measured is not None and measured.get("artifact") in out:
        out[measured["artifact"]] = {k: measured[k] for k in keys}
    if protocol is None or DeviceSpec.parse(target).backend not in ("ort", "tflite"):
        return out
    for fmt in artifacts:
        if out[fmt] is None and fmt in HOST_CPU_DEVICE:
            m = measure_artifact(HOST_CPU_DEVICE[fmt], {fmt: artifacts[fmt]}, None, input_shape,
                                 protocol=protocol, only_format=fmt)
            if m is not None:
                out[fmt] = {k: m[k] for k in keys}
    return out


def _int8_export_args(data: DataContext, r: int) -> Dict[str, Any]:
    """``export_artifacts`` arguments of an int8 export: calibrated on the first
    ``quant_images`` (default :class:`QuantSettings`' 256, the setting the bundled drop model
    was fitted with) held-out *training* images at resolution ``r`` (never the test split),
    as ``export --precision int8`` does, so ``export --arch report.json`` rebuilds it."""
    from supernet.bn import calibration_batches
    from supernet.quantize import QuantSettings

    from .export import MIN_INT8_AGREEMENT

    ds = data.dataset
    agree = MIN_INT8_AGREEMENT if data.int8_min_agreement is None else data.int8_min_agreement
    quant = QuantSettings() if data.quant_images is None else QuantSettings(
        calib_images=data.quant_images)
    return {"precision": "int8", "quant": quant, "min_agreement": agree,
            "calibration": lambda: (x.numpy() for x in calibration_batches(
                ds.holdout, r, quant.calib_images, data.batch_size, channels_last=False))}


def artifact_accuracy(artifacts: Dict[str, dict], data: DataContext, r: int
                      ) -> Dict[str, dict]:
    """Test accuracy of each shipped file in its own runtime (onnxruntime, LiteRT) on the
    whole test split (or the first ``eval_images``)."""
    from .evaluate import accuracy_file

    return {fmt: accuracy_file(a["path"], data.dataset.test, r, images=data.eval_images,
                               batch_size=data.batch_size)
            for fmt, a in artifacts.items()}


def _search(space, predictor, table: LatencyTable, scenarios: List[Scenario],
            config: EvolutionConfig, budgets: Optional[Sequence[float]] = None
            ) -> List[SearchResult]:
    """Search each scenario at its effective (predicted-median) budget (default: its own)."""
    budgets = [s.budget_ms for s in scenarios] if budgets is None else list(budgets)
    cons = [Constraints(max_latency_ms=b,
                        max_macs=None if s.mflops is None else s.mflops * 1e6)
            for s, b in zip(scenarios, budgets)]
    if len(cons) == 1:
        return [evolution_search(space, predictor, cons[0], config, latency_table=table)]
    res = pareto_search(space, predictor, cons, config, latency_table=table)
    # pareto_search returns tightest first; map back to the scenarios' order
    by_limits = {tuple(r.constraints.limits()): r for r in res}
    return [by_limits[tuple(c.limits())] for c in cons]


def specialize(net: Supernet, predictor, scenarios: List[Scenario], *, out_dir: "str | Path",
               search_config: EvolutionConfig, data: DataContext, formats: Sequence[str],
               lut_path: Optional[str] = None, threads: Optional[int] = None,
               runs: Optional[int] = None, warmup: Optional[int] = None,
               rounds: Optional[int] = None, estimator: Optional[str] = None,
               finetune_epochs: int = 0,
               supernet_name: str = "", command: str = "", echo: Callable[[str], None] = print,
               progress: bool = True, latency_quantile: int = 50, max_rounds: int = 3,
               drift: bool = True) -> List[Dict[str, Any]]:
    """Search, export and measure the best subnet of every scenario (see the module
    docstring for the closed loop). ``runs``/``warmup``/``rounds`` change the precision of
    the measurement protocol (default: the table's); ``estimator`` must be the table's (a
    missing local table is built with it); ``latency_quantile`` (50 or 90) says
    which measured figure must fit the budget; ``drift`` re-times the table's reference ops
    first and rescales it to today's speed. Returns one report dict per scenario."""
    from .export import export_artifacts
    from .report import (plot_pred_vs_measured, plot_search, precision_rows, round_floats,
                         write_report, write_summary)

    if latency_quantile not in (50, 90):
        raise OfaDeployError(f"--latency-quantile must be 50 or 90, got {latency_quantile}")
    if max_rounds < 1:
        raise OfaDeployError(f"max_rounds must be >= 1, got {max_rounds}")
    from .int8_accuracy import Int8Predictor, load_drop_model
    from supernet.quantize import QuantizeError

    space = net.space
    out = Path(out_dir)
    precisions = list(dict.fromkeys(s.precision for s in scenarios))
    if "int8" in precisions and data.dataset is None:
        raise QuantizeError("--precision int8 needs calibration images: give --data (training "
                            "images; the test split is never used)")
    for s_ in scenarios:
        if s_.precision == "int8" and DeviceSpec.parse(s_.target).backend == "cuda":
            # the CUDA profiler times the torch module, which has no int8 form here
            raise OfaDeployError(f"--precision int8 on {s_.target}: CUDA targets run torch "
                                 f"models, which have no int8 form here; use cpu or tflite:cpu")
    if lut_path is not None and len(precisions) > 1:
        raise OfaDeployError("--lut names one table of one precision: use it with a single "
                             "--precision")
    # (target, precision): one table, protocol and search per key
    keys = list(dict.fromkeys((s.target, s.precision) for s in scenarios))
    targets = list(dict.fromkeys(s.target for s in scenarios))
    if lut_path is not None and len(targets) > 1:
        raise OfaDeployError("--lut names one table: use it with a single --target")
    # every table is resolved (and every budget checked) before any slow work starts
    tables = {k: resolve_lut(k[0], space, lut_path=lut_path, threads=threads,
                             estimator=estimator, progress=progress, echo=echo,
                             precision=k[1]) for k in keys}
    predictors = {"fp32": predictor}
    drop_model = drop_warning = None
    if "int8" in precisions:
        drop_model = load_drop_model(space, supernet_name)
        if drop_model is None:
            drop_warning = (f"no int8 accuracy-drop model is fitted for supernet "
                            f"{supernet_name or '?'} ({space.name}): the int8 search ranks by "
                            f"the float predictor (drop 0); the int8 accuracy measured on the "
                            f"shipped files is the real figure")
            echo(f"warning: {drop_warning}")
        predictors["int8"] = Int8Predictor(predictor, drop_model, space)
    protocols: Dict[tuple, Optional[MeasurementProtocol]] = {}
    drifts: Dict[tuple, Any] = {}
    for key in keys:
        t = key[0]
        local = DeviceSpec.parse(t).backend in LOCAL_BACKENDS
        protocols[key] = target_protocol(tables[key], threads, runs, warmup, rounds,
                                         estimator)
        if local and drift:
            from luts.drift import check_drift

            spec = DeviceSpec.parse(t)
            prof = get_profiler(spec, **protocols[key].profiler_kwargs(spec.backend))
            try:
                drifts[key] = check_drift(tables[key], prof, protocols[key])
            finally:
                prof.close()
            d = drifts[key]
            if d is not None:
                echo(f"{t} ({key[1]}): reference ops re-timed, the table is rescaled by "
                     f"x{d['scale']:.3f} to today's speed")
                if d.get("warning"):
                    echo(f"warning: {d['warning']}")
    qf = {k: tables[k].quantile_factor(latency_quantile) for k in keys}
    for s in scenarios:
        k = (s.target, s.precision)
        lo, hi = tables[k].min_max()
        if s.budget_ms < lo * qf[k]:
            raise OfaDeployError(f"budget {s.budget_ms:g} ms is infeasible on {s.target} "
                                 f"({s.precision}): the fastest subnet of {space.name} takes "
                                 f"{lo * qf[k]:.3f} ms (p{latency_quantile}) by its LUT (range "
                                 f"{lo:.3f} .. {hi:.3f} ms)")
        if s.budget_ms >= hi * qf[k]:
            # the user may think the budget is shaping the result; say that it does not
            echo(f"note: a {s.budget_ms:g} ms budget admits every subnet on {s.target}: by its "
                 f"LUT the subnets of {space.name} take {lo:.3f} (fastest) to {hi:.3f} ms "
                 f"(slowest), so the search just picks the most accurate; a budget in that "
                 f"range trades accuracy for speed")
    results: Dict[Scenario, SearchResult] = {}
    for key in keys:
        t, prec = key
        group = [s for s in scenarios if (s.target, s.precision) == key]
        echo(f"searching {t} ({prec}): budgets {', '.join(f'{s.budget_ms:g} ms' for s in group)}")
        # the search prices predicted medians: a p90 budget becomes the median that keeps
        # the predicted p90 within it
        for s, r in zip(group, _search(space, predictors[prec], tables[key], group,
                                       search_config, [s.budget_ms / qf[key] for s in group])):
            results[s] = r
    reports = []
    single = len(scenarios) == 1
    versions = runtime_versions()
    for s in scenarios:
        tkey = (s.target, s.precision)
        int8 = s.precision == "int8"
        res, table, pred = results[s], tables[tkey], predictors[s.precision]
        protocol = protocols[tkey]
        sdir = out if single else out / s.name
        sdir.mkdir(parents=True, exist_ok=True)
        eff = s.budget_ms / qf[tkey]
        lo, hi = table.min_max()
        history: List[Dict[str, Any]] = []
        # arch string -> (result, sub, acc, n_eval, bn calibration, artifacts, measurement,
        # accuracy of each shipped file (int8) and of the float subnet)
        done: Dict[str, tuple] = {}
        loosened = False
        for k in range(1, max_rounds + 1):
            if k > 1:
                cons = Constraints(max_latency_ms=eff, max_macs=None if s.mflops is None
                                   else s.mflops * 1e6)
                try:
                    res = evolution_search(space, pred, cons, search_config,
                                           latency_table=table)
                except SearchError as exc:  # nothing fits the tightened budget
                    history[-1]["note"] = f"round {k} not run: {exc}"
                    break
            arch = res.arch
            key = arch.to_string(space)
            if k > 1 and loosened and key == history[-1]["arch_string"]:
                # a looser budget picks the same subnet: none slower is predicted more
                # accurate, so the unused share of the budget buys nothing
                history[-1]["note"] = (f"a looser effective budget ({eff:.3f} ms) picks the "
                                       f"same subnet: no slower subnet is predicted more "
                                       f"accurate")
                break
            echo(f"[{s.name}] round {k}: winner {key}: predicted {res.predicted_accuracy:.4f} "
                 f"acc, {res.latency_ms:.3f} ms (effective budget {eff:.3f} ms)")
            if key in done:
                sub, acc, n_eval, calib, artifacts, measured, accs = done[key][1:]
            else:
                sub, acc, n_eval, calib = prepare_subnet(net, arch, data,
                                                         finetune_epochs=finetune_epochs,
                                                         seed=search_config.seed, echo=echo)
                shape = (1, 3, arch.r, arch.r)
                qargs = _int8_export_args(data, arch.r) if int8 else {}
                artifacts = export_artifacts(sub, shape, sdir, formats, seed=search_config.seed,
                                             **qargs)
                accs = {"float": acc, "by_format": None}
                if int8:
                    # the accuracy of the int8 files themselves, not of the float subnet
                    by_fmt = artifact_accuracy(artifacts, data, arch.r)
                    first = "onnx" if "onnx" in by_fmt else next(iter(by_fmt))
                    acc, n_eval = by_fmt[first]["accuracy"], by_fmt[first]["samples"]
                    accs["by_format"] = {f: v["accuracy"] for f, v in by_fmt.items()}
                measured = (measure_artifact(s.target, artifacts, sub, shape,
                                             protocol=protocol, table=table)
                            if protocol is not None else None)
            done[key] = (res, sub, acc, n_eval, calib, artifacts, measured, accs)
            fig = None if measured is None else (
                measured["p90"] if latency_quantile == 90 else measured["median"])
            history.append({
                "round": k, "effective_budget_ms": eff, "arch_string": key,
                "predicted_latency_ms": res.latency_ms,
                "predicted_accuracy": res.predicted_accuracy,
                "measured_ms": fig,
                "measured_latency_ms": None if measured is None else {
                    q: measured[q] for q in ("median", "p10", "p90", "std", "cv", "runs")},
                "within_budget": None if fig is None else bool(fig <= s.budget_ms)})
            if fig is None:
                break  # nothing to close the loop with (a phone table without the phone)
            loosened = False
            if fig > s.budget_ms:
                eff = _retarget(eff, s.budget_ms, fig)
            elif fig < UNDERUSE * s.budget_ms and eff < hi:
                eff = min(hi, _retarget(eff, s.budget_ms, fig))
                loosened = True
            else:
                break
            if eff < lo:
                history[-1]["note"] = "no faster subnet exists"
                break
        # the winner: best predicted accuracy among rounds measured within budget
        ok = [h for h in history if h["within_budget"]]
        pick = (max(ok, key=lambda h: (h["predicted_accuracy"], -h["round"])) if ok else
                min(history, key=lambda h: (h["measured_ms"] if h["measured_ms"] is not None
                                            else h["predicted_latency_ms"])))
        res, sub, acc, n_eval, calib, artifacts, measured, accs = done[pick["arch_string"]]
        arch = res.arch
        shape = (1, 3, arch.r, arch.r)
        if pick is not history[-1] and history[-1]["arch_string"] != pick["arch_string"]:
            # a later round overwrote the files: write the winner's again (same subnet, same
            # exporter and calibration, so the measured numbers are of these files)
            artifacts = export_artifacts(sub, shape, sdir, formats, seed=search_config.seed,
                                         **(_int8_export_args(data, arch.r) if int8 else {}))
        lat_by_fmt = measure_formats(s.target, artifacts, measured, shape, protocol=protocol)
        for h in history:
            h["chosen"] = h is pick
        tid = lut_id(table)
        m = measured or {k: None for k in ("median", "p10", "p90", "std", "runs", "cv")}
        fig = pick["measured_ms"]
        noise = noise_warning([m.get("cv")], what="winner's runs") if measured else None
        rep: Dict[str, Any] = {
            "scenario": s.name,
            "target": s.target,
            "space": space.name,
            "supernet": supernet_name,
            "budget_ms": s.budget_ms,
            "budget_mmacs": s.mflops,
            "latency_quantile": latency_quantile,
            "arch": arch.to_dict(),
            "arch_string": arch.to_string(space),
            "predicted_latency_ms": res.latency_ms,
            "predicted_latency_p90_ms": res.latency_ms * table.quantile_factor(90),
            "measured_latency_ms": {k: m.get(k) for k in ("median", "p10", "p90", "std",
                                                          "runs", "cv")},
            "within_budget": None if fig is None else bool(fig <= s.budget_ms),
            "within_budget_refers_to": (f"measured p{latency_quantile}" if fig is not None
                                        else "nothing measured"),
            "latency_error_pct": (None if m.get("median") is None else
                                  100.0 * (m["median"] - res.latency_ms) / res.latency_ms),
            "rounds": history,
            "protocol": None if protocol is None else protocol.get_state(),
            "drift": drifts.get(tkey),
            "speed_scale": table.speed_scale,
            "calibration": None if table.calibration is None else {
                k: table.calibration.get(k) for k in ("model", "heldout_mape", "samples",
                                                      "p90_factor")},
            "warnings": [w for w in (noise, (drifts.get(tkey) or {}).get("warning"),
                                     drop_warning if int8 else None) if w],
            "precision": s.precision,
            "predicted_accuracy": res.predicted_accuracy,
            "predicted_accuracy_fp32": float(predictor.predict([arch])[0]),
            "int8_accuracy_drop": None if not int8 else (
                {"model": "none", "drop": 0.0, "source": None} if drop_model is None else
                {"model": drop_model["model"], "drop": drop_model.get("drop"),
                 "coef": drop_model.get("coef"), "source": Path(drop_model["path"]).name,
                 "leave_one_out_mae_points": drop_model.get("leave_one_out_mae_points"),
                 "fitted_from": drop_model.get("fitted_from")}),
            "measured_accuracy": acc,
            "measured_accuracy_samples": n_eval,
            "measured_accuracy_of": ("the shipped int8 files, each in its runtime" if int8
                                     else "the calibrated subnet exported to ONNX (fp32)"),
            "measured_accuracy_by_format": accs["by_format"],
            "float_accuracy_same_subnet": accs["float"],
            "measured_latency_by_format": lat_by_fmt,
            "bytes_by_format": {f: a["bytes"] for f, a in artifacts.items()},
            "params": res.params,
            "macs": res.macs,
            "lut_min_ms": lo,
            "lut_max_ms": hi,
            "budget_admits_every_subnet": bool(s.budget_ms >= hi),
            "lut_id": tid,
            "lut_path": str(table.path) if table.path else None,
            "lut_meta": {k: table.meta.get(k) for k in ("device", "backend", "threads", "host",
                                                        "date", "precision") if k in table.meta},
            "lut_precision": table.precision,
            "artifacts": artifacts,
            "measured_on": None if measured is None else measured["profiler"],
            "search": {"seconds": res.wall_seconds, "evaluations": res.evaluations,
                       "config": search_config.get_state(),
                       "resolutions": list(res.resolutions)},
            "finetune_epochs": finetune_epochs,
            # what `export --arch report.json` needs to rebuild model.onnx bit for bit
            "bn_calibration": calib,
            "runtime": versions,
            "command": command,
        }
        meta = subnet_metadata(space, arch, artifacts, lut_id=tid, target=s.target,
                               predicted_latency_ms=res.latency_ms,
                               predicted_accuracy=res.predicted_accuracy,
                               measured_accuracy=acc, supernet=supernet_name,
                               precision=s.precision)
        atomic_write_text(sdir / "model.json", json.dumps(round_floats(meta), indent=2))
        pop = res.population
        pop_lat = table.predict(pop)
        plots = {
            "search": plot_search(sdir / "search.png", pop_latency=pop_lat,
                                  pop_accuracy=res.population_scores, budget_ms=s.budget_ms,
                                  best=(res.latency_ms, res.predicted_accuracy),
                                  pareto=[(results[o].latency_ms, results[o].predicted_accuracy)
                                          for o in scenarios
                                          if (o.target, o.precision) == tkey],
                                  title=f"{s.target} @ {s.budget_ms:g} ms"
                                        + ("" if s.precision == "fp32" else f" ({s.precision})")),
            "latency": str(sdir / "latency.png"),  # drawn below, once all are measured
        }
        rep["plots"] = plots
        rep["report_files"] = {"json": str(sdir / "report.json"),
                               "markdown": str(sdir / "report.md")}
        for w in rep["warnings"]:
            echo(f"[{s.name}] warning: {w}")
        if rep["within_budget"] is False:
            echo(f"[{s.name}] WARNING: measured p{latency_quantile} {fig:.3f} ms exceeds the "
                 f"{s.budget_ms:g} ms budget after {len(history)} round(s) (predicted "
                 f"{res.latency_ms:.3f} ms)")
        reports.append(rep)
    # each report names every precision's winner of its (target, budget) side by side
    for r, s in zip(reports, scenarios):
        group = [(o, q) for o, q in zip(scenarios, reports) if o.problem == s.problem]
        if len(group) > 1 or s.precision != "fp32":
            r["by_precision"] = precision_rows(group)
    reports = [round_floats(r) for r in reports]  # what --json prints is what report.json holds
    # every scenario's latency.png shows all scenarios of the run (its own highlighted) with
    # its budget: one point alone says little about how far the LUT is off
    rows = [{"label": r["scenario"], "predicted_ms": r["predicted_latency_ms"],
             "measured_ms": r["measured_latency_ms"]["median"],
             "p10_ms": r["measured_latency_ms"]["p10"], "p90_ms": r["measured_latency_ms"]["p90"]}
            for r in reports]
    for r in reports:
        plot_pred_vs_measured(r["plots"]["latency"], rows, budgets=[r["budget_ms"]],
                              highlight=r["scenario"])
        write_report(r, Path(r["report_files"]["json"]).parent)
    if not single:
        write_summary(reports, out)
        plot_pred_vs_measured(out / "latency.png", rows,
                              budgets=sorted({r["budget_ms"] for r in reports}))
    return reports

