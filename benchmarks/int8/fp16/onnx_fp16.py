"""Why `--precision fp16` refuses ONNX: an fp16 ONNX file on onnxruntime's CPU provider.

Exports the bundled default's largest and smallest subnet to ONNX (fp32, the product's
exporter), converts each to fp16 with onnxruntime's own converter
(``onnxruntime.transformers.float16``, float32 input and output kept), and times the pair
interleaved on ``cpu`` (onnxruntime, 1 thread) under the shared MeasurementProtocol. Not a
product path: the evidence for the refusal. Writes onnx_fp16.json beside this file.

    python benchmarks/int8/fp16/onnx_fp16.py [--rounds 5 --runs 20]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from profilers.base import DeviceSpec  # noqa: E402
from profilers.measure import cpu_model, loadavg  # noqa: E402
from profilers.ort import OrtProfiler  # noqa: E402
from profilers.protocol import MeasurementProtocol, measure_pooled  # noqa: E402
from supernet import ArchConfig, extract_subnet  # noqa: E402
from supernet.checkpoint import load_supernet  # noqa: E402
from supernet.export import export_onnx  # noqa: E402
from supernet.fileio import atomic_write_text  # noqa: E402


def _casts_as_run(path: Path, tmp: Path) -> int:
    """Cast nodes of the graph onnxruntime's CPU provider runs (its optimizer wraps every op
    that has no fp16 kernel in casts to and from fp32)."""
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(tmp / f"{path.stem}.opt.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sum(n.op_type == "Cast" for n in onnx.load(opts.optimized_model_filepath).graph.node)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    protocol = MeasurementProtocol().with_(rounds=args.rounds, runs=args.runs, threads=1)
    prof = OrtProfiler(DeviceSpec.parse("cpu"), **protocol.profiler_kwargs("ort"))
    net = load_supernet("default").eval()
    rows, load0 = [], loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        for which in ("max", "min"):
            a = ArchConfig.parse(which, net.space)
            sub = extract_subnet(net, a).eval()
            shape = (1, 3, a.r, a.r)
            f32 = Path(tmp) / f"{which}-fp32.onnx"
            f16 = Path(tmp) / f"{which}-fp16.onnx"
            export_onnx(sub, shape, f32)
            onnx.save(convert_float_to_float16(onnx.load(str(f32)), keep_io_types=True), str(f16))
            s32, s16 = measure_pooled(prof, [(str(f32), shape), (str(f16), shape)], protocol)
            rows.append({"subnet": f"default {which}", "arch": a.to_string(net.space),
                         "fp32_ms": s32.median_ms, "fp16_ms": s16.median_ms,
                         "fp32_p10_p90": [s32.p10_ms, s32.p90_ms],
                         "fp16_p10_p90": [s16.p10_ms, s16.p90_ms],
                         "fp32_bytes": f32.stat().st_size, "fp16_bytes": f16.stat().st_size,
                         "fp16_cast_nodes": sum(n.op_type == "Cast"
                                                for n in onnx.load(str(f16)).graph.node),
                         "fp16_cast_nodes_as_run": _casts_as_run(f16, Path(tmp))})
    import onnxruntime

    doc = {"device": "cpu (onnxruntime CPUExecutionProvider)", "cpu": cpu_model(),
           "onnxruntime": onnxruntime.__version__,
           "protocol": protocol.get_state(), "protocol_text": protocol.describe(),
           "loadavg_start": load0, "loadavg_end": loadavg(), "rows": rows}
    atomic_write_text(HERE / "onnx_fp16.json", json.dumps(doc, indent=2))
    for r in rows:
        print(f"{r['subnet']}: fp32 {r['fp32_ms']:.3f} ms, fp16 {r['fp16_ms']:.3f} ms "
              f"({r['fp16_cast_nodes']} Cast nodes in the file, "
              f"{r['fp16_cast_nodes_as_run']} as onnxruntime runs it)")


if __name__ == "__main__":
    main()
