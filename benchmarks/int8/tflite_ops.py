"""Benchmark (issue 13): where the time goes in the float32 and int8 TFLite graphs on LiteRT.

The LiteRT wheel has no per-op profiler (its ``litert-benchmark`` is a Python script timing
whole invokes, without ``--enable_op_profiling``), so each operator is timed on its own: every
op of the graph is cut out into a one-op model (its constant inputs kept, the rest made
graph inputs fed with the values the whole graph computes for them) and timed under the same
settings as ``tflite:cpu`` (LiteRT, default XNNPACK delegate, 1 thread). An op whose one-op
model gets a DELEGATE node runs on XNNPACK, otherwise on LiteRT's reference (builtin) kernels.
Per op type: total ms, share, count, and how many ran on XNNPACK. The whole graph is timed in
the same rounds, so "sum of ops" vs "whole graph" shows what partitioning costs or saves (a
one-op time includes one invoke's fixed overhead, a few microseconds).

Subnets: the bundled default's largest (Fashion-MNIST weights, int8 calibrated on held-out
training images, as run.py) and, with ``--cases default,w1.0``, ``ofa-mbv3-w1.0`` largest at
160 px (random weights). Exported by the product's ``export_artifacts``.

    nice -n 10 .venv/bin/python benchmarks/int8/tflite_ops.py [--cases default,w1.0]

Writes tflite_ops.json (atomically) and tflite_ops.md beside this file.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import numpy as np  # noqa: E402

from ofa_deploy.export import export_artifacts  # noqa: E402
from profilers.base import DeviceSpec  # noqa: E402
from profilers.litert import LiteRTProfiler  # noqa: E402
from profilers.litert import _version as prof_version  # noqa: E402
from profilers.measure import loadavg, time_callable  # noqa: E402
from profilers.protocol import MeasurementProtocol  # noqa: E402
from supernet.quantize import QuantSettings  # noqa: E402
from supernet.fileio import atomic_write_text  # noqa: E402


def _is_const(model, tensor):
    buf = model.buffers[tensor.buffer] if tensor.buffer is not None else None
    return buf is not None and buf.data is not None and len(buf.data) > 0


def single_op_models(path):
    """For each operator of subgraph 0 of the .tflite at ``path``: (op type, serialized one-op
    model, the original tensor indices of its graph inputs). Constant inputs stay constants."""
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fu

    model = fu.read_model(str(path))
    sg = model.subgraphs[0]
    out = []
    for op in sg.operators:
        used = []
        for t in list(op.inputs) + list(op.outputs) + list(op.intermediates or []):
            if t >= 0 and t not in used:
                used.append(t)
        empty = fb.BufferT()
        buffers, tensors, tmap, inputs = [empty], [], {}, []
        for t in used:
            ten = copy.copy(sg.tensors[t])
            if _is_const(model, sg.tensors[t]):
                buffers.append(model.buffers[sg.tensors[t].buffer])
                ten.buffer = len(buffers) - 1
            else:
                ten.buffer = 0
                if t in op.inputs:
                    inputs.append(t)
            tmap[t] = len(tensors)
            tensors.append(ten)
        new_op = copy.copy(op)
        new_op.inputs = [tmap[t] if t >= 0 else -1 for t in op.inputs]
        new_op.outputs = [tmap[t] for t in op.outputs]
        if op.intermediates is not None and len(op.intermediates):
            new_op.intermediates = [tmap[t] for t in op.intermediates]
        sub = fb.SubGraphT()
        sub.tensors, sub.operators = tensors, [new_op]
        sub.inputs, sub.outputs = [tmap[t] for t in inputs], list(new_op.outputs)
        m = copy.copy(model)
        m.subgraphs, m.buffers, m.signatureDefs, m.metadata = [sub], buffers, [], []
        out.append((fu.opcode_to_name(model, op.opcodeIndex),
                    bytes(fu.convert_object_to_bytearray(m)), inputs))
    return out


def _graph_values(path, seed):
    """Every tensor the whole graph computes on one seeded random input (reference kernels,
    all intermediates preserved), so each one-op model is fed realistic values."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path), num_threads=1, experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(tuple(d["shape"])).astype(np.float32)
    if np.dtype(d["dtype"]) != np.float32:
        scale, zero = d["quantization"]
        info = np.iinfo(d["dtype"])
        x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(d["dtype"])
    it.set_tensor(d["index"], x)
    it.invoke()
    values = {}
    for t in it.get_tensor_details():
        try:
            values[t["index"]] = it.get_tensor(t["index"])
        except ValueError:  # tensors without data (e.g. optional, unused)
            pass
    return values


def _prepared(prof, content, feeds):
    """An interpreter for ``content`` with its inputs set, and whether XNNPACK took its op."""
    it = prof.interpreter(content)
    for d, v in zip(it.get_input_details(), feeds):
        it.set_tensor(d["index"], np.asarray(v, dtype=d["dtype"]).reshape(d["shape"]))
    on_xnnpack = any(o["op_name"] == "DELEGATE" for o in it._get_ops_details())
    return it, on_xnnpack


def profile_ops(path, protocol, seed=0):
    """Per-op and whole-graph timings (ms, pooled medians over ``protocol.rounds`` round-robin
    rounds of ``warmup`` + ``runs`` invokes) of the .tflite at ``path`` under ``tflite:cpu``."""
    prof = LiteRTProfiler(DeviceSpec.parse("tflite:cpu"), threads=protocol.threads,
                          runs=protocol.runs, warmup=protocol.warmup)
    values = _graph_values(path, seed)
    whole = prof.interpreter(str(path))
    wd = whole.get_input_details()[0]
    whole.set_tensor(wd["index"], values[wd["index"]])
    ops = []
    for name, content, inputs in single_op_models(path):
        it, on_x = _prepared(prof, content, [values[t] for t in inputs])
        ops.append({"op": name, "xnnpack": on_x, "it": it, "samples": []})
    whole_samples = []
    try:
        for _ in range(protocol.rounds):
            whole_samples += time_callable(whole.invoke, runs=protocol.runs,
                                           warmup=protocol.warmup)
            for o in ops:
                o["samples"] += time_callable(o["it"].invoke, runs=protocol.runs,
                                              warmup=protocol.warmup)
    finally:
        prof.close()
    per_op = [{"op": o["op"], "xnnpack": o["xnnpack"],
               "median_ms": statistics.median(o["samples"])} for o in ops]
    return {"whole_graph_ms": round(statistics.median(whole_samples), 4), "ops": per_op}


def by_type(per_op):
    """Per op type: count, XNNPACK count, total ms and share of the sum over all ops."""
    total = sum(o["median_ms"] for o in per_op)
    agg = defaultdict(lambda: {"count": 0, "on_xnnpack": 0, "ms": 0.0})
    for o in per_op:
        a = agg[o["op"]]
        a["count"] += 1
        a["on_xnnpack"] += int(o["xnnpack"])
        a["ms"] += o["median_ms"]
    rows = [{"op": k, **v, "ms": round(v["ms"], 4), "share": round(v["ms"] / total, 4)}
            for k, v in agg.items()]
    return sorted(rows, key=lambda r: -r["ms"]), total


def _cases(which, calib_images):
    from run import _default_cases, _w10_cases

    if "default" in which:
        for name, sub, r, calib, _ in _default_cases(calib_images):
            if name == "default largest":
                yield name, sub, r, calib
    if "w1.0" in which:
        for name, sub, r, calib, _ in _w10_cases(calib_images):
            if name == "ofa-mbv3-w1.0 largest @160":
                yield name, sub, r, calib


def main(argv=None):
    """Export each case fp32 and int8 .tflite, time every op; write tflite_ops.json/.md."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="default", help="default, w1.0, or both (comma)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--calib-images", type=int, default=256)
    ap.add_argument("--out-dir", type=Path, default=HERE)
    a = ap.parse_args(argv)
    from accuracy_drop import machine_info

    protocol = MeasurementProtocol(runs=a.runs, warmup=a.warmup, rounds=a.rounds, threads=1)
    machine = {**machine_info(), "ai_edge_litert": prof_version()}
    results = []
    with tempfile.TemporaryDirectory(prefix="ofa-int8-ops-") as tmp:
        for i, (name, sub, r, calib) in enumerate(_cases(a.cases.split(","), a.calib_images)):
            shape = (1, 3, r, r)
            f32 = export_artifacts(sub, shape, Path(tmp) / f"{i}-fp32", ("tflite",))
            i8 = export_artifacts(sub, shape, Path(tmp) / f"{i}-int8", ("tflite",),
                                  precision="int8", calibration=calib,
                                  quant=QuantSettings(calib_images=a.calib_images),
                                  min_agreement=0.0 if name.startswith("ofa-mbv3-w1.0") else 0.5)
            case = {"subnet": name, "resolution": r}
            for p, art in (("fp32", f32), ("int8", i8)):
                from supernet.export_tflite import tflite_graph_summary

                res = profile_ops(art["tflite"]["path"], protocol)
                types, total = by_type(res["ops"])
                case[p] = {"whole_graph_ms": res["whole_graph_ms"],
                           "sum_of_ops_ms": round(total, 4), "ops": len(res["ops"]),
                           "ops_on_xnnpack": sum(o["xnnpack"] for o in res["ops"]),
                           "delegate_partitions": tflite_graph_summary(
                               art["tflite"]["path"])["delegate_partitions"],
                           "by_type": types}
                print(json.dumps({"subnet": name, "precision": p,
                                  **{k: v for k, v in case[p].items() if k != "by_type"}}),
                      flush=True)
            results.append(case)
    machine["loadavg_after"] = loadavg()
    doc = {"benchmark": "int8 tflite per-op", "machine": machine,
           "protocol": {**protocol.get_state(), "runtime": "LiteRT, default XNNPACK delegate "
                        "(tflite:cpu), each op as a one-op model; pooled median over rounds"},
           "cases": results}
    a.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out_dir / "tflite_ops.json", json.dumps(doc, indent=2) + "\n")
    atomic_write_text(a.out_dir / "tflite_ops.md", render_md(doc))
    print(render_md(doc))


def render_md(doc, top=10):
    """The markdown report of a tflite_ops.json document."""
    m = doc["machine"]
    litert = f", ai-edge-litert {m['ai_edge_litert']}" if "ai_edge_litert" in m else ""
    out = ["# TFLite per-op time, fp32 vs int8 (LiteRT + XNNPACK, 1 thread)\n",
           f"{m['cpu']} ({', '.join(m['cpu_flags_avx'])}), {m['cores']} cores{litert}, load "
           f"{(m.get('loadavg') or ['?'])[0]} -> {(m.get('loadavg_after') or ['?'])[0]}; "
           f"{doc['protocol']['rounds']} rounds x {doc['protocol']['runs']} runs, pooled median. "
           "Each op timed as a one-op model; `xnnpack` = how many of that type XNNPACK took.\n"]
    for c in doc["cases"]:
        out.append(f"## {c['subnet']} ({c['resolution']} px)\n")
        for p in ("fp32", "int8"):
            d = c[p]
            out.append(f"**{p}**: whole graph {d['whole_graph_ms']:.3f} ms, sum of "
                       f"{d['ops']} one-op times {d['sum_of_ops_ms']:.3f} ms; "
                       f"{d['ops_on_xnnpack']}/{d['ops']} ops on XNNPACK, "
                       f"{d['delegate_partitions']} delegate partition(s) in the whole graph.\n")
            out.append("| op type | count | xnnpack | ms | % |\n|---|---|---|---|---|")
            for r in d["by_type"][:top]:
                out.append(f"| {r['op']} | {r['count']} | {r['on_xnnpack']} | {r['ms']:.3f} | "
                           f"{100 * r['share']:.1f} |")
            rest = d["by_type"][top:]
            if rest:
                out.append(f"| ({len(rest)} other types) | {sum(r['count'] for r in rest)} | "
                           f"{sum(r['on_xnnpack'] for r in rest)} | "
                           f"{sum(r['ms'] for r in rest):.3f} | "
                           f"{100 * sum(r['share'] for r in rest):.1f} |")
            out.append("")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
