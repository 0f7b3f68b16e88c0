"""Interleaved A/B of search settings against the best known subnets (Note10 task).

Usage (from the repository root; one JSON object of variant name -> EvolutionConfig overrides):

    OMP_NUM_THREADS=1 python benchmarks/search_vs_reference/ab.py \\
        '{"default": {}, "halving": {"islands": 8, "population": 150, "prune_at": 20, "keep_islands": 2}}' \\
        --budgets 40 50 --seeds 0 1 2 3 4

Runs every variant on every (budget, seed), interleaved so that a change in machine load hits
all variants alike, checks each winner meets its budget, and prints per budget and variant the
mean and worst gap (points of predicted top-1) to the best known subnet of best_known.json,
and the median CPU seconds (all threads of the search), wall seconds (`search_seconds`) and
evaluations. Nothing is written.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPACE = "ofa-mbv3-w1.2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", help="JSON object: name -> EvolutionConfig overrides")
    ap.add_argument("--budgets", type=float, nargs="+", default=[40.0, 50.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = ap.parse_args()
    try:
        variants = json.loads(args.variants)
    except json.JSONDecodeError as e:
        raise SystemExit(f"variants must be a JSON object: {e}")
    if not isinstance(variants, dict) or not variants:
        raise SystemExit("variants must be a non-empty JSON object of name -> overrides")

    from luts.table import load_table
    from ofa_deploy.accuracy import bundled_predictor_path, load_predictor
    from ofa_deploy.search import Constraints, EvolutionConfig, evolution_search

    summary = json.loads((HERE / "best_known.json").read_text())["summary"]
    table = load_table("note10", space=SPACE)
    pred = load_predictor(bundled_predictor_path(SPACE), SPACE)
    runs: dict = {}
    for b in args.budgets:
        best = summary.get(str(b), {}).get("best_known")
        if best is None:
            raise SystemExit(f"no best known subnet for {b:g} ms in best_known.json")
        for seed in args.seeds:
            for name, over in variants.items():
                cfg = EvolutionConfig(seed=seed, **over)
                c0 = time.process_time()
                r = evolution_search(SPACE, pred, Constraints(max_latency_ms=b), cfg,
                                     latency_table=table)
                cpu = time.process_time() - c0
                if not r.latency_ms <= b:
                    raise SystemExit(f"{name} broke the {b:g} ms budget: {r.latency_ms} ms")
                gap = 100 * (r.predicted_accuracy - best)
                runs.setdefault((b, name), []).append((gap, cpu, r.evaluations, r.wall_seconds))
                print(f"{name} {b:g} ms seed {seed}: {100 * r.predicted_accuracy:.2f} "
                      f"({gap:+.2f}) cpu {cpu:.2f} s wall {r.wall_seconds:.2f} s", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print("| budget | variant | mean gap | worst gap | CPU s (median) | wall s (median) | evaluations |")
    print("|---|---|---|---|---|---|---|")
    for (b, name), v in runs.items():
        gaps = [x[0] for x in v]
        print(f"| {b:g} | {name} | {statistics.fmean(gaps):+.3f} | {min(gaps):+.3f} | "
              f"{statistics.median(x[1] for x in v):.2f} | "
              f"{statistics.median(x[3] for x in v):.2f} | "
              f"{int(statistics.median(x[2] for x in v))} |")


if __name__ == "__main__":
    main()
