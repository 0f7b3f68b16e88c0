"""Per-seed runs of search settings on the Note10 task, and what independent runs of them
together would reach (issue 15, round 7).

    # record runs (resumable: a (budget, seed) already in the file is skipped)
    OMP_NUM_THREADS=1 python benchmarks/search_vs_reference/portfolio.py run A540 \\
        '{"islands": 0, "aging_islands": 1, "aging_generations": 540}' --seeds 0-19
    # estimate combinations: the best of one independent run of each named setting
    python benchmarks/search_vs_reference/portfolio.py combine D75+A540 D75+A540+A540

``run`` appends one line per (budget, seed) to ``portfolio_runs.jsonl`` (name, budget, seed,
gap to ``best_known.json``'s best known in points, CPU seconds, evaluations). ``combine``
prints per setting and budget the mean / worst gap and the seeds within 0.05 of the best
known, then for each combination the expected gap of the best of independent runs, one of
each setting (over every pairing of their recorded seeds: the seeds of different settings
are independent draws), the chance that such a search ends more than 0.15 below the best
known, and the chance that it ends within 0.05. The estimate ignores what relinking between
the runs' bests adds, so it is a lower bound for a search that runs them together.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

SPACE = "ofa-mbv3-w1.2"
BUDGETS = (15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0)
RUNS = HERE / "portfolio_runs.jsonl"


def _seeds(text: str) -> list:
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def load_runs(path: Path = RUNS) -> dict:
    """``{name: {budget: {seed: record}}}`` of every recorded run."""
    runs: dict = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            runs.setdefault(r["name"], {}).setdefault(r["budget"], {})[r["seed"]] = r
    return runs


def run(name: str, overrides: dict, budgets, seeds) -> None:
    from luts.table import load_table
    from ofa_deploy.accuracy import bundled_predictor_path, load_predictor
    from ofa_deploy.search import Constraints, EvolutionConfig, evolution_search

    best = json.loads((HERE / "best_known.json").read_text())["summary"]
    table = load_table("note10", space=SPACE)
    pred = load_predictor(bundled_predictor_path(SPACE), SPACE)
    done = load_runs().get(name, {})
    for b in budgets:
        for s in seeds:
            if s in done.get(b, {}):
                continue
            c0 = time.process_time()
            r = evolution_search(SPACE, pred, Constraints(max_latency_ms=b),
                                 EvolutionConfig(seed=s, **overrides), latency_table=table)
            rec = {"name": name, "config": overrides, "budget": b, "seed": s,
                   "gap": 100 * (r.predicted_accuracy - best[str(b)]["best_known"]),
                   "cpu_seconds": time.process_time() - c0, "evaluations": r.evaluations}
            with RUNS.open("a") as f:  # one line per run: an interrupted run resumes
                f.write(json.dumps(rec) + "\n")
            print(f"{name} {b:g} ms seed {s}: {rec['gap']:+.3f}", flush=True)


def combine(names: list) -> dict:
    """Expected gap, P(gap < -0.15) and P(gap > -0.05) per budget of the best of one
    independent run of each setting in ``names``."""
    runs = load_runs()
    out = {}
    for b in BUDGETS:
        lists = [[r["gap"] for r in runs[n].get(b, {}).values()] for n in names]
        if any(not x for x in lists):
            continue
        vals = [max(c) for c in itertools.product(*lists)]
        out[b] = (statistics.fmean(vals), sum(v < -0.15 for v in vals) / len(vals),
                  sum(v > -0.05 for v in vals) / len(vals))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("name")
    r.add_argument("overrides", help="JSON object of EvolutionConfig overrides")
    r.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS))
    r.add_argument("--seeds", default="0-19", help="e.g. 0-19 or 0,1,2")
    c = sub.add_parser("combine")
    c.add_argument("combos", nargs="*", help="NAME+NAME+... (names recorded by run)")
    a = ap.parse_args()
    if a.cmd == "run":
        run(a.name, json.loads(a.overrides), a.budgets, _seeds(a.seeds))
        return
    runs = load_runs()
    print("| setting | CPU s (median) | " + " | ".join(f"{b:g} ms" for b in BUDGETS) + " |")
    print("|---|---|" + "---|" * len(BUDGETS))
    for n in sorted(runs):
        cells = []
        for b in BUDGETS:
            g = [x["gap"] for x in runs[n].get(b, {}).values()]
            cells.append(f"{statistics.fmean(g):+.3f} / {min(g):+.2f} / {sum(x > -0.05 for x in g)}"
                         f" of {len(g)}" if g else "-")
        cpu = statistics.median(x["cpu_seconds"] for v in runs[n].values() for x in v.values())
        print(f"| {n} | {cpu:.2f} | " + " | ".join(cells) + " |")
    if a.combos:
        print()
        print("| combination | " + " | ".join(f"{b:g} ms" for b in BUDGETS) + " |")
        print("|---|" + "---|" * len(BUDGETS))
        for combo in a.combos:
            est = combine(combo.split("+"))
            print(f"| {combo} | " + " | ".join(
                f"{est[b][0]:+.3f} / {est[b][1]:.2f} / {est[b][2]:.2f}" if b in est else "-"
                for b in BUDGETS) + " |")


if __name__ == "__main__":
    main()
