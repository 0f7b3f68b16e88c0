"""Benchmark: ofa-deploy's evolutionary search against the OFA reference's ``EvolutionFinder``.

Same accuracy predictor (the OFA ImageNet ``acc_predictor.pth``), same latency model (the
Note10 tables; ours is the built-in ``note10`` table, which predicts the reference's sums),
same budgets, population 100 x 500 generations, several seeds. For every (budget, seed) it runs
our search, a random-search baseline with the same number of evaluations, and the reference
(in its own interpreter, see setup_refvenv.sh and reference_runner.py), one after the other so
that load from other processes hits both alike. Results are appended to results.json after
every run (atomically), so an interrupted run resumes; results.md is rebuilt from it.

    nice -n 10 .venv/bin/python benchmarks/search_vs_reference/run.py \\
        --ref-python /work/refvenv-bench/bin/python --reference-dir /work/shared/reference
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

BUDGETS = (15, 20, 25, 30, 40, 50, 60)
SPACE = "ofa-mbv3-w1.2"


class Reference:
    """The reference runner as a long-lived subprocess answering one request per line."""

    def __init__(self, python: str, reference_dir: str):
        self.proc = subprocess.Popen(
            [python, str(HERE / "reference_runner.py"), "--reference-dir", reference_dir],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(HERE))
        hello = json.loads(self.proc.stdout.readline() or "{}")
        if not hello.get("ready"):
            raise SystemExit("reference runner failed to start (see its stderr above)")
        self.versions = {"torch": hello["torch"], "numpy": hello["numpy"]}

    def run(self, budget: float, seed: int, population: int, generations: int) -> dict:
        self.proc.stdin.write(json.dumps({"budget": budget, "seed": seed,
                                          "population": population,
                                          "generations": generations}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("reference runner died")
        return json.loads(line)

    def close(self) -> None:
        try:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=30)


def _stats(vals):
    vals = list(vals)
    if not vals:
        return None
    return {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals),
            "min": min(vals), "max": max(vals), "median": statistics.median(vals),
            "n": len(vals)}


def improvements(history, seconds) -> list:
    """``[generation, best, seconds]`` at the start and wherever the best improved."""
    out = []
    for g, (h, t) in enumerate(zip(history, seconds)):
        if not out or h > out[-1][1]:
            out.append([g, h, round(t, 5)])
    return out


def time_to_reach(rec: dict, target: float):
    """(generation, seconds) at which an ``ours`` run first had a best >= ``target``."""
    for g, h, t in rec.get("improvements", []):
        if h >= target - 1e-12:
            return g, t
    return None


def summarize(records: list, budgets) -> dict:
    out = {}
    for b in budgets:
        row = {}
        for method in ("ours", "reference", "random", "ours_short"):
            rs = [r for r in records if r["method"] == method and r["budget"] == b]
            if not rs:
                continue
            row[method] = {
                "predicted_accuracy": _stats(r["predicted_accuracy"] for r in rs),
                "latency_ms": _stats(r["latency_ms"] for r in rs),
                "wall_seconds": _stats(r["wall_seconds"] for r in rs),
                "cpu_seconds": _stats(r["cpu_seconds"] for r in rs),
                "seeds": sorted(r["seed"] for r in rs),
            }
        if "ours" in row and "reference" in row:
            ours = {r["seed"]: r for r in records if r["method"] == "ours" and r["budget"] == b}
            ref = {r["seed"]: r for r in records if r["method"] == "reference"
                   and r["budget"] == b}
            common = sorted(set(ours) & set(ref))
            row["accuracy_delta_points"] = 100 * (row["ours"]["predicted_accuracy"]["mean"]
                                                  - row["reference"]["predicted_accuracy"]["mean"])
            row["ours_at_least_reference"] = sum(
                ours[s]["predicted_accuracy"] >= ref[s]["predicted_accuracy"] - 1e-9
                for s in common)
            row["paired_seeds"] = len(common)
            row["speedup_wall_median"] = (row["reference"]["wall_seconds"]["median"]
                                          / row["ours"]["wall_seconds"]["median"])
            row["speedup_cpu_median"] = (row["reference"]["cpu_seconds"]["median"]
                                         / row["ours"]["cpu_seconds"]["median"])
            if "ours_short" in row:
                row["short_delta_points"] = 100 * (
                    row["ours_short"]["predicted_accuracy"]["mean"]
                    - row["reference"]["predicted_accuracy"]["mean"])
                row["speedup_short_wall_median"] = (
                    row["reference"]["wall_seconds"]["median"]
                    / row["ours_short"]["wall_seconds"]["median"])
            # how soon our runs reach the accuracy the reference ends its 500 generations with
            target = row["reference"]["predicted_accuracy"]["mean"]
            hits = [time_to_reach(r, target) for r in ours.values()]
            got = [h for h in hits if h is not None]
            if got and all("improvements" in r for r in ours.values()):
                row["time_to_reference_quality"] = {
                    "target": target, "reached": len(got), "runs": len(hits),
                    "generations_median": statistics.median(g for g, _ in got),
                    "seconds_median": statistics.median(t for _, t in got),
                }
                row["speedup_to_reference_quality"] = (
                    row["reference"]["wall_seconds"]["median"]
                    / max(statistics.median(t for _, t in got), 1e-9))
        out[str(b)] = row
    return out


def markdown(doc: dict) -> str:
    m = doc["meta"]
    lines = [
        "# ofa-deploy search vs the OFA reference EvolutionFinder",
        "",
        f"Machine: {m['machine']}. **Timing was taken on a shared machine** (other jobs ran "
        f"alongside; the benchmark ran under `nice`), so absolute seconds are noisy; ours and "
        f"the reference ran alternately for every (budget, seed), and the table gives medians.",
        "Both sides score with one torch thread. Command(s): "
        + "; then ".join(f"`{c}`" for c in m.get("commands", [m["command"]])) + ".",
        f"Settings: space {SPACE}, Note10 latency table, OFA ImageNet accuracy predictor, "
        f"population {m['population']} x {m['generations']} generations, seeds "
        f"{m['seeds']}. Random search scores {m['random_evaluations']:,} random feasible archs "
        f"(as many as the reference scores).",
        f"Versions: ours python {m['python']}, torch {m['torch']}, numpy {m['numpy']}; "
        f"reference `ofa` {m['ofa_version']} (tutorial EvolutionFinder) with torch "
        f"{m.get('reference_versions', {}).get('torch', '?')}.",
        "",
        "Accuracy = predicted top-1 (%) of the best arch, mean ± std over seeds [min..max]. "
        "Wall/CPU = median seconds of one search (ours: the whole `evolution_search` call).",
        "",
        "| budget | ours acc | reference acc | Δ (pts) | ours ≥ ref | random acc | ours lat | "
        "ref lat | ours wall | ref wall | speed-up wall | speed-up CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def acc(s):
        if not s:
            return "-"
        a = s["predicted_accuracy"]
        return (f"{100 * a['mean']:.2f} ± {100 * a['std']:.2f} "
                f"[{100 * a['min']:.2f}..{100 * a['max']:.2f}]")

    for b, row in doc["summary"].items():
        o, r, rnd = row.get("ours"), row.get("reference"), row.get("random")
        lines.append("| " + " | ".join([
            f"{b} ms", acc(o), acc(r),
            f"{row['accuracy_delta_points']:+.2f}" if "accuracy_delta_points" in row else "-",
            f"{row['ours_at_least_reference']}/{row['paired_seeds']}" if "paired_seeds" in row
            else "-",
            acc(rnd).split(" [")[0] if rnd else "-",
            f"{o['latency_ms']['mean']:.2f}" if o else "-",
            f"{r['latency_ms']['mean']:.2f}" if r else "-",
            f"{o['wall_seconds']['median']:.2f} s" if o else "-",
            f"{r['wall_seconds']['median']:.1f} s" if r else "-",
            f"{row['speedup_wall_median']:.0f}x" if "speedup_wall_median" in row else "-",
            f"{row['speedup_cpu_median']:.0f}x" if "speedup_cpu_median" in row else "-",
        ]) + " |")
    short = {b: row for b, row in doc["summary"].items() if "speedup_short_wall_median" in row}
    if short:
        g = doc["meta"].get("short_generations")
        lines += ["", f"Fewer generations: our search with population {m['population']} x {g} "
                      f"generations (same seeds) against the reference's {m['generations']}.",
                  "", "| budget | ours acc | reference acc | Δ (pts) | ours wall | ref wall | "
                      "speed-up wall |", "|---|---|---|---|---|---|---|"]
        for b, row in short.items():
            lines.append(f"| {b} ms | {acc(row['ours_short'])} | {acc(row['reference'])} | "
                         f"{row['short_delta_points']:+.2f} | "
                         f"{row['ours_short']['wall_seconds']['median']:.3f} s | "
                         f"{row['reference']['wall_seconds']['median']:.1f} s | "
                         f"{row['speedup_short_wall_median']:.0f}x |")
    ttq = {b: row["time_to_reference_quality"] for b, row in doc["summary"].items()
           if "time_to_reference_quality" in row}
    if ttq:
        lines += ["", "Time to the reference's quality: how soon our 500-generation runs first "
                      "hold an arch at least as accurate (predicted) as the reference's mean "
                      "final result, against the reference's full run (generations and seconds: "
                      "median over the runs that reached it).",
                  "", "| budget | reference final acc (mean) | ours reached it | generations "
                      "(median) | ours seconds (median) | ref wall | speed-up |",
                  "|---|---|---|---|---|---|---|"]
        for b, t in ttq.items():
            row = doc["summary"][b]
            lines.append(f"| {b} ms | {100 * t['target']:.2f} | {t['reached']}/{t['runs']} | "
                         f"{t['generations_median']:g} | {t['seconds_median']:.3f} s | "
                         f"{row['reference']['wall_seconds']['median']:.1f} s | "
                         f"{row['speedup_to_reference_quality']:.0f}x |")
    tot = doc.get("totals", {})
    if tot:
        lines += ["", f"All budgets together: ours {tot['ours_wall']:.1f} s wall "
                      f"({tot['ours_cpu']:.1f} s CPU), reference {tot['reference_wall']:.1f} s "
                      f"wall ({tot['reference_cpu']:.1f} s CPU) over the same runs: "
                      f"{tot['reference_wall'] / tot['ours_wall']:.0f}x wall, "
                      f"{tot['reference_cpu'] / tot['ours_cpu']:.0f}x CPU."]
    par = [r for r in doc["records"] if r["method"] == "pareto"]
    if par:
        nb = len(doc["meta"]["budgets"])
        ref_front = []  # the reference's runs for the same seed, summed over the budgets
        for r in par:
            rs = [x for x in doc["records"] if x["method"] == "reference"
                  and x["seed"] == r["seed"]]
            if len(rs) == nb:
                ref_front.append((sum(x["wall_seconds"] for x in rs),
                                  sum(x["cpu_seconds"] for x in rs), r))
        lines += ["", f"Whole front: `pareto_search` evolves all {nb} budgets in lock-step in "
                      f"one call (same population and generations per budget): median "
                      f"{statistics.median(r['wall_seconds'] for r in par):.2f} s wall "
                      f"({statistics.median(r['cpu_seconds'] for r in par):.2f} s CPU); "
                      "mean accuracy per budget: " +
                  "; ".join(f"{b:g} ms {100 * statistics.fmean(r['accuracies'][i] for r in par):.2f}"
                            for i, b in enumerate(doc["meta"]["budgets"])) + "."]
        if ref_front:
            rw = statistics.median(w / r["wall_seconds"] for w, _, r in ref_front)
            rc = statistics.median(c / r["cpu_seconds"] for _, c, r in ref_front)
            lines.append(f"The reference needs one run per budget: summed over the {nb} "
                         f"budgets of a seed, median {rw:.0f}x the wall time and {rc:.0f}x "
                         f"the CPU time of the lock-step front.")
    checks = doc.get("consistency")
    if checks:
        lines += ["", f"Consistency: the reference's best archs re-scored with our predictor "
                      f"and latency table differ from its own numbers by at most "
                      f"{checks['max_acc_diff']:.2e} (accuracy) and "
                      f"{checks['max_latency_diff_ms']:.2e} ms (latency)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--population", type=int, default=100)
    ap.add_argument("--generations", type=int, default=500)
    ap.add_argument("--ref-python", default="/work/refvenv-bench/bin/python")
    ap.add_argument("--reference-dir", default=str(ROOT.parent / "shared" / "reference"))
    ap.add_argument("--out-dir", default=str(HERE))
    ap.add_argument("--short-generations", type=int, default=100,
                    help="also run ours with this many generations (0: skip)")
    ap.add_argument("--no-reference", action="store_true", help="only our side")
    ap.add_argument("--fresh", action="store_true", help="ignore earlier results.json")
    args = ap.parse_args()

    import numpy as np
    import torch

    from luts.store import load_table
    from supernet.fileio import atomic_write_text
    from ofa_deploy.accuracy import load_predictor
    from ofa_deploy.search import (Constraints, EvolutionConfig, evolution_search,
                                   pareto_search, random_search)
    from supernet.arch import ArchConfig

    ref_dir = Path(args.reference_dir)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res_path = out_dir / "results.json"
    budgets = [float(b) for b in args.budgets]

    table = load_table("note10", space=SPACE)
    pred = load_predictor(ref_dir / "ofa-imagenet-predictor" / "acc_predictor.pth", SPACE)
    evals = args.population * (args.generations + 1)

    doc = {"records": []}
    if res_path.exists() and not args.fresh:
        doc = json.loads(res_path.read_text())
    done = {(r["method"], r["budget"], r["seed"]) for r in doc["records"]}
    old_meta = doc.get("meta", {}) if not args.fresh else {}
    ofa_version = "?"
    try:
        ofa_version = subprocess.run(
            [args.ref_python, "-c", "import importlib.metadata as m; print(m.version('ofa'))"],
            capture_output=True, text=True, timeout=60).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        pass
    doc["meta"] = {
        "machine": f"{os.cpu_count()}-core VM ({platform.processor() or platform.machine()}), "
                   f"{platform.system()}",
        "command": "nice -n 10 " + " ".join([".venv/bin/python",
                                             "benchmarks/search_vs_reference/run.py",
                                             *sys.argv[1:]]),
        "population": args.population, "generations": args.generations,
        "short_generations": args.short_generations,
        "budgets": budgets, "seeds": args.seeds, "random_evaluations": evals,
        "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "ofa_version": ofa_version,
        "date": time.strftime("%Y-%m-%d"),
        **({k: v for k, v in doc.get("meta", {}).items() if k == "reference_versions"}),
    }
    # a resumed benchmark lists every command that added records to it
    cmds = list(old_meta.get("commands") or ([old_meta["command"]] if "command" in old_meta
                                             else []))
    if doc["meta"]["command"] not in cmds:
        cmds.append(doc["meta"]["command"])
    doc["meta"]["commands"] = cmds

    def save():
        doc["summary"] = summarize(doc["records"], budgets)
        rs = doc["records"]
        pairs = {(r["budget"], r["seed"]) for r in rs if r["method"] == "reference"} & \
                {(r["budget"], r["seed"]) for r in rs if r["method"] == "ours"}
        if pairs:
            pick = lambda m, key: sum(r[key] for r in rs if r["method"] == m
                                      and (r["budget"], r["seed"]) in pairs)
            doc["totals"] = {"ours_wall": pick("ours", "wall_seconds"),
                             "ours_cpu": pick("ours", "cpu_seconds"),
                             "reference_wall": pick("reference", "wall_seconds"),
                             "reference_cpu": pick("reference", "cpu_seconds")}
        refs = [r for r in rs if r["method"] == "reference" and "rescored_accuracy" in r]
        if refs:
            doc["consistency"] = {
                "max_acc_diff": max(abs(r["rescored_accuracy"] - r["predicted_accuracy"])
                                    for r in refs),
                "max_latency_diff_ms": max(abs(r["rescored_latency_ms"] - r["latency_ms"])
                                           for r in refs)}
        atomic_write_text(res_path, json.dumps(doc, indent=1) + "\n")
        atomic_write_text(out_dir / "results.md", markdown(doc))

    reference = None
    if not args.no_reference:
        reference = Reference(args.ref_python, str(ref_dir))
        doc["meta"]["reference_versions"] = reference.versions
    def run_ours(method, b, cons, cfg):
        """One timed ``evolution_search``; its record is appended (the caller saves)."""
        t0, c0 = time.perf_counter(), time.process_time()
        r = evolution_search(SPACE, pred, cons, cfg, latency_table=table)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rec = {"method": method, "budget": b, "seed": cfg.seed,
               "predicted_accuracy": r.predicted_accuracy, "latency_ms": r.latency_ms,
               "macs": r.macs, "arch": r.arch.to_dict(), "wall_seconds": wall,
               "cpu_seconds": cpu, "evaluations": r.evaluations}
        doc["records"].append(rec)
        return r, rec

    try:
        for seed in args.seeds:
            cfg = EvolutionConfig(population=args.population, generations=args.generations,
                                  seed=seed)
            for b in budgets:
                cons = Constraints(max_latency_ms=b)
                if ("ours", b, seed) not in done:
                    r, rec = run_ours("ours", b, cons, cfg)
                    rec["improvements"] = improvements(r.history, r.history_seconds)
                    save()
                    print(f"ours      {b:5.1f} ms seed {seed}: {100 * r.predicted_accuracy:.2f}% "
                          f"{r.latency_ms:.2f} ms  {rec['wall_seconds']:.2f} s", flush=True)
                if args.short_generations and ("ours_short", b, seed) not in done:
                    _, rec = run_ours("ours_short", b, cons, EvolutionConfig(
                        population=args.population, generations=args.short_generations,
                        seed=seed))
                    rec["generations"] = args.short_generations
                    save()
                if reference is not None and ("reference", b, seed) not in done:
                    rr = reference.run(b, seed, args.population, args.generations)
                    arch = ArchConfig.from_dict(rr["arch"], SPACE)
                    rr.update({"method": "reference",
                               "rescored_accuracy": float(pred.predict([arch])[0]),
                               "rescored_latency_ms": table.predict_one(arch)})
                    doc["records"].append(rr)
                    save()
                    print(f"reference {b:5.1f} ms seed {seed}: "
                          f"{100 * rr['predicted_accuracy']:.2f}% {rr['latency_ms']:.2f} ms  "
                          f"{rr['wall_seconds']:.1f} s", flush=True)
                if ("random", b, seed) not in done:
                    t0, c0 = time.perf_counter(), time.process_time()
                    r = random_search(SPACE, pred, cons, evals, seed=seed, latency_table=table)
                    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                    doc["records"].append({
                        "method": "random", "budget": b, "seed": seed,
                        "predicted_accuracy": r.predicted_accuracy, "latency_ms": r.latency_ms,
                        "arch": r.arch.to_dict(), "wall_seconds": wall, "cpu_seconds": cpu,
                        "evaluations": r.evaluations})
                    save()
            if ("pareto", -1.0, seed) not in done:
                t0, c0 = time.perf_counter(), time.process_time()
                rs = pareto_search(SPACE, pred, budgets, cfg, latency_table=table)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                doc["records"].append({
                    "method": "pareto", "budget": -1.0, "seed": seed,
                    "accuracies": [x.predicted_accuracy for x in rs],
                    "latencies_ms": [x.latency_ms for x in rs],
                    "wall_seconds": wall, "cpu_seconds": cpu})
                save()
    finally:
        if reference is not None:
            reference.close()
    save()
    print((out_dir / "results.md").read_text())


if __name__ == "__main__":
    main()
