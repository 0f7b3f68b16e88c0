"""Benchmark (issue 13): int8 vs float32 artifacts (ONNX and TFLite): latency, size, accuracy.

Subnets: the bundled default (largest, middle, smallest; Fashion-MNIST weights, BN
re-calibrated, int8 calibrated on held-out *training* images) and ``ofa-mbv3-w1.0`` (largest
and smallest at 160 and 224 px; random weights and random calibration images: latency and size
only, which do not depend on the weights' values).

Every artifact is made by the product's own path (``export_artifacts``, with
``precision="int8"`` for the int8 one). Latency: one thread through the project's profilers,
``cpu`` (onnxruntime) for .onnx and ``tflite:cpu`` (LiteRT + XNNPACK) for .tflite; float32 and
int8 of the same subnet and format are timed interleaved
(fp32, int8, fp32, int8, ...) under the shared measurement protocol (``profilers.protocol``:
the lowest round median of 15 rounds x 10 runs after 5 warm-up runs, warm cache, as tables,
``lut validate``, ``specialize`` and ``bench`` time), with p10-p90 of every run and the
load average.
Accuracy: the Fashion-MNIST test split through each shipped file: all 10,000 images for ONNX,
the first 2,000 for TFLite (``--acc-images``, ``--tflite-acc-images``).

    .venv/bin/python benchmarks/int8/run.py [--rounds 15 --runs 10]

Writes results.json (atomically) and results.md beside this file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ofa_deploy.evaluate import accuracy_file  # noqa: E402
from ofa_deploy.export import export_artifacts  # noqa: E402
from profilers.base import DeviceSpec  # noqa: E402
from profilers.measure import cpu_model  # noqa: E402
from profilers.litert import LiteRTProfiler  # noqa: E402
from profilers.ort import OrtProfiler  # noqa: E402
from supernet import ArchConfig, build_supernet, extract_subnet, get_space  # noqa: E402
from supernet.assets.package_default import subnets as default_subnets  # noqa: E402
from supernet.bn import calibrate_bn, calibration_batches  # noqa: E402
from supernet.checkpoint import load_supernet  # noqa: E402
from supernet.fileio import atomic_write_text  # noqa: E402
from supernet.quantize import QuantSettings  # noqa: E402
from supernet.training.data import DataError, load_dataset  # noqa: E402


def _cases(calib_images, which):
    """(name, subnet module, resolution, calibration function, accuracy source or None);
    without an accuracy source the weights are random."""
    if "default" in which:
        yield from _default_cases(calib_images)
    if "w1.0" in which:
        yield from _w10_cases(calib_images)


def _default_cases(calib_images):
    try:
        ds = load_dataset("fashion-mnist")
    except DataError:
        ds = None
    net = load_supernet("default").eval()
    for label, arch in default_subnets().items():
        sub = extract_subnet(net, arch).eval()
        if ds is not None:
            calibrate_bn(sub, calibration_batches(ds.holdout, arch.r, 2000, 200,
                                                  channels_last=False))
            calib = (lambda r=arch.r: (x.numpy() for x in calibration_batches(
                ds.holdout, r, calib_images, 200, channels_last=False)))
        else:
            calib = _random_calibration(arch.r, calib_images)
        yield f"default {label}", sub, arch.r, calib, (ds.test if ds is not None else None)


def _w10_cases(calib_images):
    space = get_space("ofa-mbv3-w1.0")
    torch.manual_seed(0)
    big = build_supernet(space).eval()
    for r in (160, 224):
        for label, arch in (("largest", ArchConfig.max(space)), ("smallest", ArchConfig.min(space))):
            arch = arch.with_resolution(r)
            yield (f"ofa-mbv3-w1.0 {label} @{r}", extract_subnet(big, arch).eval(), r,
                   _random_calibration(r, calib_images), None)


def _random_calibration(r, n):
    def batches():
        rng = np.random.default_rng(0)
        for _ in range(0, n, 32):
            yield rng.standard_normal((32, 3, r, r)).astype(np.float32)
    return batches


def _partitions(path, fmt):
    if fmt != "tflite":
        return {}
    from supernet.export_tflite import tflite_graph_summary

    return {"delegate_partitions": tflite_graph_summary(path)["delegate_partitions"]}


def _interleaved(fmt, paths, shape, protocol):
    """fp32 and int8 of one subnet timed in one round-robin under the shared measurement
    protocol (``profilers.protocol``: what tables, ``lut validate``, ``specialize`` and
    ``bench`` use)."""
    from profilers.base import get_profiler
    from profilers.protocol import measure_pooled

    spec = DeviceSpec.parse("cpu" if fmt == "onnx" else "tflite:cpu")
    prof = get_profiler(spec, **protocol.profiler_kwargs(spec.backend))
    try:
        stats = measure_pooled(prof, [(str(p), shape) for p in paths.values()],
                               protocol.for_networks())
    finally:
        prof.close()
    return {k: {"median_ms": round(s.median_ms, 4), "p10_ms": round(s.p10_ms, 4),
                "p90_ms": round(s.p90_ms, 4), "runs": s.runs}
            for k, s in zip(paths, stats)}


def main(argv=None):
    """Export, time and evaluate every case; write results.json and results.md."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds over fp32 and int8 (default: the protocol's network rounds)")
    ap.add_argument("--runs", type=int, default=None, help="runs per round (protocol's)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up runs (protocol's)")
    ap.add_argument("--calib-images", type=int, default=256)
    ap.add_argument("--acc-images", type=int, default=None,
                    help="test images for the ONNX accuracy (default: all 10,000)")
    ap.add_argument("--tflite-acc-images", type=int, default=2000,
                    help="test images for the TFLite accuracy (LiteRT runs image by image and is "
                         "several times slower than onnxruntime on x86)")
    ap.add_argument("--formats", default="onnx,tflite")
    ap.add_argument("--cases", default="default,w1.0",
                    help="which subnets: default (the bundled default's three), w1.0, or both")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of results.json for the cases not run this time")
    ap.add_argument("--out-dir", type=Path, default=HERE)
    a = ap.parse_args(argv)
    a.formats = tuple(a.formats.split(","))
    from profilers.protocol import MeasurementProtocol

    protocol = MeasurementProtocol().with_(runs=a.runs, warmup=a.warmup,
                                           network_rounds=a.rounds)
    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ofa-int8-bench-") as tmp:
        for i, (name, sub, r, calib, test) in enumerate(_cases(a.calib_images, a.cases.split(","))):
            shape = (1, 3, r, r)
            d32, d8 = Path(tmp) / f"{i}-fp32", Path(tmp) / f"{i}-int8"
            f32 = export_artifacts(sub, shape, d32, a.formats)
            i8 = export_artifacts(sub, shape, d8, a.formats, precision="int8", calibration=calib,
                                  quant=QuantSettings(calib_images=a.calib_images),
                                  # random weights: the class is a coin toss, latency is what counts
                                  min_agreement=0.0 if test is None else 0.5)
            for fmt in a.formats:
                lat = _interleaved(fmt, {"fp32": f32[fmt]["path"], "int8": i8[fmt]["path"]},
                                   shape, protocol)
                row = {"subnet": name, "format": fmt, "resolution": r,
                       "fp32": {"bytes": f32[fmt]["bytes"], **lat["fp32"],
                                **_partitions(f32[fmt]["path"], fmt)},
                       "int8": {"bytes": i8[fmt]["bytes"], **lat["int8"],
                                "top1_agreement": i8[fmt]["top1_agreement"],
                                "float_islands": i8[fmt]["float_islands"],
                                **_partitions(i8[fmt]["path"], fmt)},
                       "speedup": round(lat["fp32"]["median_ms"] / lat["int8"]["median_ms"], 3)}
                if test is not None:
                    for p in ("fp32", "int8"):
                        src = (f32 if p == "fp32" else i8)[fmt]["path"]
                        n = a.acc_images if fmt == "onnx" else a.tflite_acc_images
                        res = accuracy_file(src, test, r, images=n, threads=1)
                        row[p]["test_accuracy"] = res["accuracy"]
                        row[p]["test_images"] = res["samples"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    doc = {"benchmark": "int8",
           "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                       "python": platform.python_version(),
                       "loadavg_before": [round(x, 2) for x in load_before],
                       "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
           "protocol": {**protocol.get_state(),
                        "runtime": "onnx: onnxruntime CPU (cpu profiler); tflite: LiteRT with "
                                   "XNNPACK (tflite:cpu profiler); 1 thread each",
                        "order": "fp32/int8 interleaved per round",
                        "describe": protocol.describe()},
           "quantization": QuantSettings(calib_images=a.calib_images).get_state(),
           "rows": rows}
    old = a.out_dir / "results.json"
    if a.merge and old.exists():
        ran = {r["subnet"] for r in rows}
        kept = [r for r in json.loads(old.read_text())["rows"] if r["subnet"] not in ran]
        doc["rows"] = rows = kept + rows
    a.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out_dir / "results.json", json.dumps(doc, indent=2) + "\n")
    lines = ["| subnet | format | fp32 ms | int8 ms | speed-up | fp32 KB | int8 KB | fp32 acc | "
             "int8 acc | int8 float islands | XNNPACK partitions fp32/int8 |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        f, q = row["fp32"], row["int8"]
        acc = lambda d: f"{100 * d['test_accuracy']:.2f}" if "test_accuracy" in d else "-"
        islands = ", ".join(f"{k} {v}" for k, v in q["float_islands"].items()) or "none"
        lines.append(f"| {row['subnet']} | {row['format']} | {f['median_ms']:.3f} ({f['p10_ms']:.3f}-{f['p90_ms']:.3f}) "
                     f"| {q['median_ms']:.3f} ({q['p10_ms']:.3f}-{q['p90_ms']:.3f}) | "
                     f"{row['speedup']:.2f}x | {f['bytes'] // 1024:,} | {q['bytes'] // 1024:,} | "
                     f"{acc(f)} | {acc(q)} | {islands} | "
                     f"{f.get('delegate_partitions', '-')}/{q.get('delegate_partitions', '-')} |")
    m = doc["machine"]
    md = (f"# int8 vs float32 (1 thread)\n\n{m['cpu']}, {m['cores']} cores, "
          f"load {m['loadavg_before'][0]} -> {m['loadavg_after'][0]}; fp32 and int8 "
          f"interleaved, {protocol.describe()}; ms = that estimate (p10-p90 of every "
          f"run).\n\n"
          + "\n".join(lines) + "\n")
    atomic_write_text(a.out_dir / "results.md", md)
    print(md)


if __name__ == "__main__":
    main()
