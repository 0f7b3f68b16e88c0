"""Benchmark (issue 5): search on the bundled tiny default space ``ofa-mbv3-tiny``.

Three parts, all with the project's own APIs:

1. Throughput: archs the accuracy predictor scores per second at batch 100 and 10000 (one
   torch thread, median of timed repeats), and the wall seconds of one
   ``evolution_search`` (population 100 x 500 generations) with the distinct archs it scores
   per second.
2. Quality: per latency budget, the best predicted accuracy that evolution finds vs
   ``random_search`` given the same number of evaluations (each random run scores as many
   archs as the evolution run of the same budget and seed did), mean and std over seeds, and
   the predicted latency of every winner (checked against its budget).
3. Predictor quality on held-out archs: K-fold cross-validation over the bundled dataset,
   retraining with the project's trainer (``AccuracyPredictor.fit``, the recipe of
   ``ofa-deploy predictor train``) on each fold's train part and scoring the fold it never
   saw; plus the bundled predictor's own saved fit metrics.

    nice -n 10 .venv/bin/python benchmarks/search_tiny/run.py

``--quick`` runs tiny settings (a smoke run) and by default writes to runs/ instead of here.
results.json is written atomically (temp file + rename); results.md is rendered from it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from luts.store import load_table  # noqa: E402
from ofa_deploy.accuracy import (AccuracyPredictor, ArchEncoder, kendall_tau,  # noqa: E402
                                 load_predictor)
from ofa_deploy.collect import read_records  # noqa: E402
# the search's own one-thread policy, so throughput is measured as the search scores
from ofa_deploy.search import (Constraints, EvolutionConfig, _single_thread_torch,  # noqa: E402
                               evolution_search, random_search)
from profilers.measure import available_cpus, cpu_model  # noqa: E402
from supernet.arch import ArchConfig  # noqa: E402
from supernet.batch import ArchBatch  # noqa: E402
from supernet.fileio import atomic_write_text  # noqa: E402
from supernet.space import get_space  # noqa: E402

SPACE = "ofa-mbv3-tiny"
ASSETS = ROOT / "ofa_deploy" / "assets"
DEFAULT_PREDICTOR = ASSETS / "ofa-mbv3-tiny-fmnist-acc-predictor.pt"
DEFAULT_DATASET = ASSETS / "ofa-mbv3-tiny-fmnist-acc-dataset.jsonl"
DEFAULT_LUT = ROOT / "benchmarks" / "lut_validation" / "tables" / "cpu-ofa-mbv3-tiny.json"
QUICK_OUT = ROOT / "runs" / "bench-search-tiny-quick"
# of the way from the LUT's min to its max latency; 10% added because the predictor's favourite
# archs sit near 40% of the range, so the 60% and 80% budgets hardly constrain the search
BUDGET_FRACTIONS = (0.1, 0.2, 0.4, 0.6, 0.8)


# -- helpers ---------------------------------------------------------------------------------
def _stats(vals) -> dict | None:
    vals = [float(v) for v in vals]
    if not vals:
        return None
    return {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals),
            "median": statistics.median(vals), "min": min(vals), "max": max(vals),
            "n": len(vals)}


def _rel(p) -> str:
    p = Path(p).resolve()
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def _machine() -> dict:
    return {"platform": platform.platform(), "machine": platform.machine(),
            "cpu_model": cpu_model(), "nproc": available_cpus(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "niceness": os.nice(0)}


# -- settings --------------------------------------------------------------------------------
def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--predictor", default=str(DEFAULT_PREDICTOR),
                    help="accuracy predictor file (default: the bundled tiny predictor)")
    ap.add_argument("--dataset", default=str(DEFAULT_DATASET),
                    help="(arch, accuracy) JSON-lines records for the cross-validation "
                         "(default: the bundled dataset)")
    ap.add_argument("--lut", default=str(DEFAULT_LUT),
                    help="latency table (default: the committed CPU table of ofa-mbv3-tiny)")
    ap.add_argument("--budgets", type=float, nargs="+", default=None,
                    help="latency budgets in ms (default: 10/20/40/60/80%% of the way from the "
                         "table's min to max latency, rounded to 0.01 ms; quick: 20/60%%)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 5; quick 2)")
    ap.add_argument("--population", type=int, default=None, help="default 100 (quick 20)")
    ap.add_argument("--generations", type=int, default=None, help="default 500 (quick 10)")
    ap.add_argument("--folds", type=int, default=None, help="CV folds (default 5; quick 3)")
    ap.add_argument("--cv-repeats", type=int, default=None,
                    help="CV repeats with different fold splits (default 3; quick 1)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="trainer epochs per fold (default: the bundled predictor's, else 400; "
                         "quick 20)")
    ap.add_argument("--hidden", default=None,
                    help="hidden sizes, e.g. 128,128 (default: the bundled predictor's)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed repeats of each predictor throughput case (default 7; quick 3)")
    ap.add_argument("--out", default=None,
                    help="output folder (default: this script's folder; quick: runs/"
                         "bench-search-tiny-quick)")
    ap.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    a = ap.parse_args(argv)
    q = a.quick
    for name, full, quick in (("seeds", 5, 2), ("population", 100, 20), ("generations", 500, 10),
                              ("folds", 5, 3), ("cv_repeats", 3, 1), ("repeats", 7, 3)):
        if getattr(a, name) is None:
            setattr(a, name, quick if q else full)
    if a.epochs is None and q:
        a.epochs = 20
    if a.out is None:
        a.out = str(QUICK_OUT if q else HERE)
    for name, lo in (("seeds", 1), ("population", 2), ("generations", 0), ("folds", 2),
                     ("cv_repeats", 1), ("repeats", 1)):
        if getattr(a, name) < lo:
            ap.error(f"--{name.replace('_', '-')} must be >= {lo}")
    return a


def default_budgets(lo: float, hi: float) -> list:
    out = []
    for f in BUDGET_FRACTIONS:
        b = round(lo + f * (hi - lo), 2)
        if b >= lo and b not in out:
            out.append(b)
    return out


# -- part 1a: predictor throughput -----------------------------------------------------------
def predictor_throughput(pred, resolutions, repeats: int, quick: bool) -> dict:
    """archs/s of ``predict(ArchBatch)`` (encode + forward) and ``predict_features`` (forward
    only, what the search's fast path calls after encoding from genes), one torch thread."""
    space = get_space(SPACE)
    rng = np.random.default_rng(0)
    out = {}
    with _single_thread_torch():
        for n in (100, 10000):
            batch = ArchBatch.sample(space, n, rng, resolutions=resolutions)
            x = pred.encoder.encode(batch)
            # calls per timed repeat: ~20k archs per repeat (fewer in quick mode)
            inner = max(1, (2000 if quick else 20000) // n)
            cases = {"predict": lambda: pred.predict(batch),
                     "predict_features": lambda: pred.predict_features(x)}
            for name, fn in cases.items():
                for _ in range(3):  # warm-up
                    fn()
                rates = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    for _ in range(inner):
                        fn()
                    dt = time.perf_counter() - t0
                    rates.append(n * inner / dt)
                out[f"{name}@{n}"] = {"method": name, "batch": n, "calls_per_repeat": inner,
                                      "repeats": repeats,
                                      "archs_per_second": _stats(rates),
                                      "ms_per_call_median": 1000 * n / statistics.median(rates)}
    return out


# -- parts 1b + 2: searches ------------------------------------------------------------------
def run_searches(pred, lut, budgets, seeds, population, generations, log) -> dict:
    space = get_space(SPACE)
    runs = []
    for b in budgets:
        cons = Constraints(max_latency_ms=float(b))
        for s in seeds:
            evo = evolution_search(space, pred, cons,
                                   EvolutionConfig(population=population,
                                                   generations=generations, seed=s),
                                   latency_table=lut)
            rnd = random_search(space, pred, cons, evo.evaluations, seed=s, latency_table=lut)
            for r in (evo, rnd):
                runs.append({
                    "budget_ms": float(b), "seed": s, "method": r.method,
                    "predicted_accuracy": r.predicted_accuracy,
                    "predicted_latency_ms": r.latency_ms,
                    "within_budget": bool(r.latency_ms <= b),
                    "macs": r.macs, "params": r.params,
                    "evaluations": r.evaluations, "wall_seconds": r.wall_seconds,
                    "archs_per_second": r.evaluations / r.wall_seconds if r.wall_seconds else None,
                    "arch_string": r.arch.to_string(space)})
            log(f"  budget {b:g} ms seed {s}: evolution {evo.predicted_accuracy:.4f} "
                f"({evo.latency_ms:.3f} ms, {evo.evaluations} evals, {evo.wall_seconds:.2f} s) "
                f"| random {rnd.predicted_accuracy:.4f} ({rnd.latency_ms:.3f} ms)")
    # context: the predictor's best arch with no budget at all (one run, seed 0)
    free = evolution_search(space, pred, Constraints(),
                            EvolutionConfig(population=population, generations=generations,
                                            seed=0), latency_table=lut)
    unconstrained = {"predicted_accuracy": free.predicted_accuracy,
                     "predicted_latency_ms": free.latency_ms,
                     "arch_string": free.arch.to_string(space),
                     "evaluations": free.evaluations, "wall_seconds": free.wall_seconds}

    # the best arch any run found (all budgets, and no budget): a budget at or above its
    # latency does not constrain the search
    cands = [r for r in runs] + [unconstrained]
    best_any = max(cands, key=lambda r: r["predicted_accuracy"])
    best_overall = {k: best_any[k] for k in ("predicted_accuracy", "predicted_latency_ms",
                                             "arch_string")}
    per_budget = []
    for b in budgets:
        ev = [r for r in runs if r["budget_ms"] == float(b) and r["method"] == "evolution"]
        rn = [r for r in runs if r["budget_ms"] == float(b) and r["method"] == "random"]
        by_seed = {r["seed"]: r for r in rn}
        per_budget.append({
            "budget_ms": float(b),
            "evolution_accuracy": _stats(r["predicted_accuracy"] for r in ev),
            "random_accuracy": _stats(r["predicted_accuracy"] for r in rn),
            "delta_accuracy_mean": statistics.fmean(
                e["predicted_accuracy"] - by_seed[e["seed"]]["predicted_accuracy"] for e in ev),
            "evolution_ge_random": sum(e["predicted_accuracy"]
                                       >= by_seed[e["seed"]]["predicted_accuracy"] for e in ev),
            "evolution_latency_ms": _stats(r["predicted_latency_ms"] for r in ev),
            "random_latency_ms": _stats(r["predicted_latency_ms"] for r in rn),
            "all_within_budget": all(r["within_budget"] for r in ev + rn),
            "evaluations": _stats(r["evaluations"] for r in ev),
            "random_evaluations": _stats(r["evaluations"] for r in rn),
            "evolution_wall_seconds": _stats(r["wall_seconds"] for r in ev),
            "random_wall_seconds": _stats(r["wall_seconds"] for r in rn),
            "evolution_archs_per_second": _stats(r["archs_per_second"] for r in ev),
            "binding": best_overall["predicted_latency_ms"] > b,
        })
    ev_all = [r for r in runs if r["method"] == "evolution"]
    throughput = {
        "wall_seconds_per_search": _stats(r["wall_seconds"] for r in ev_all),
        "evaluations_per_search": _stats(r["evaluations"] for r in ev_all),
        "archs_per_second": _stats(r["archs_per_second"] for r in ev_all),
    }
    return {"runs": runs, "per_budget": per_budget, "unconstrained": unconstrained,
            "best_overall": best_overall,
            "evolution_throughput": throughput,
            "all_within_budget": all(r["within_budget"] for r in runs)}


# -- part 3: predictor cross-validation ------------------------------------------------------
def cross_validate(records, hidden, epochs, folds, repeats, log) -> dict:
    """K-fold CV with the project's trainer: for each fold, a fresh predictor is fitted exactly
    as ``ofa-deploy predictor train`` does (``fit`` with val_fraction 0.2 of the *train part*
    for early stopping, seed 0, lr 1e-3) and scores the held-out fold, which no step saw."""
    space = get_space(SPACE)
    archs = [ArchConfig.from_dict(r["arch"], space) for r in records]
    y = np.array([float(r["accuracy"]) for r in records])
    n = len(archs)
    if n < 2 * folds:
        raise SystemExit(f"{n} records are too few for {folds}-fold cross-validation")
    enc = ArchEncoder.for_space(space, sorted({a.r for a in archs} | set(space.resolutions)))
    fold_rows, pooled = [], []
    t0 = time.perf_counter()
    with _single_thread_torch():
        for rep in range(repeats):
            order = np.random.default_rng(1000 + rep).permutation(n)
            oof = np.full(n, np.nan)
            base = np.full(n, np.nan)
            for k, test in enumerate(np.array_split(order, folds)):
                train = np.setdiff1d(order, test)
                pred = AccuracyPredictor(enc, hidden, space=space, seed=0)
                rep_fit = pred.fit([archs[i] for i in train], y[train], epochs=epochs, lr=1e-3,
                                   seed=0, val_fraction=0.2)
                p = pred.predict([archs[i] for i in test])
                oof[test] = p
                base[test] = y[train].mean()
                fold_rows.append({
                    "repeat": rep, "fold": k, "n_train": int(rep_fit.n_train),
                    "n_early_stop_val": int(rep_fit.n_val), "n_test": int(len(test)),
                    "best_epoch": int(rep_fit.best_epoch),
                    "rmse": float(np.sqrt(np.mean((p - y[test]) ** 2))),
                    "kendall_tau": float(kendall_tau(p, y[test])),
                    "baseline_rmse": float(np.sqrt(np.mean((y[train].mean() - y[test]) ** 2))),
                    "fit_seconds": rep_fit.seconds})
                log(f"  cv repeat {rep} fold {k}: rmse {fold_rows[-1]['rmse']:.4f} "
                    f"tau {fold_rows[-1]['kendall_tau']:.3f}")
            pooled.append({"repeat": rep,
                           "rmse": float(np.sqrt(np.mean((oof - y) ** 2))),
                           "kendall_tau": float(kendall_tau(oof, y)),
                           "baseline_rmse": float(np.sqrt(np.mean((base - y) ** 2)))})
    return {
        "method": (f"{folds}-fold CV x {repeats} repeat(s); per fold a fresh predictor trained "
                   f"with AccuracyPredictor.fit (hidden {list(hidden)}, {epochs} epochs, lr 1e-3, "
                   f"seed 0, val_fraction 0.2 of the train part for early stopping), scored on "
                   f"the held-out fold"),
        "records": n, "folds": folds, "repeats": repeats, "hidden": list(hidden),
        "epochs": epochs,
        "per_fold": fold_rows,
        "fold_rmse": _stats(r["rmse"] for r in fold_rows),
        "fold_kendall_tau": _stats(r["kendall_tau"] for r in fold_rows
                                   if not math.isnan(r["kendall_tau"])),
        "fold_baseline_rmse": _stats(r["baseline_rmse"] for r in fold_rows),
        "pooled": pooled,
        "pooled_rmse": _stats(r["rmse"] for r in pooled),
        "pooled_kendall_tau": _stats(r["kendall_tau"] for r in pooled),
        "pooled_baseline_rmse": _stats(r["baseline_rmse"] for r in pooled),
        "accuracy_std": float(y.std()),
        "accuracy_min": float(y.min()), "accuracy_max": float(y.max()),
        "accuracy_mean": float(y.mean()),
        "seconds": time.perf_counter() - t0,
    }


def bundled_metrics(pred, records) -> dict:
    """The predictor file's own saved fit report (its 20% val split was used for early
    stopping, so it is optimistic), and its in-sample error on the dataset (NOT held-out)."""
    space = get_space(SPACE)
    fit = (pred.metadata or {}).get("fit")
    out = {"saved_fit": dict(fit) if isinstance(fit, dict) else None}
    if records:
        archs = [ArchConfig.from_dict(r["arch"], space) for r in records]
        y = np.array([float(r["accuracy"]) for r in records])
        with _single_thread_torch():
            p = pred.predict(archs)
        out["in_sample_all_records"] = {"n": len(y),
                                        "rmse": float(np.sqrt(np.mean((p - y) ** 2))),
                                        "kendall_tau": float(kendall_tau(p, y)),
                                        "note": "every record, training ones included: "
                                                "not a held-out measure"}
    return out


# -- report ----------------------------------------------------------------------------------
def _pm(s, scale=1.0, fmt="{:.2f}") -> str:
    if not s:
        return "-"
    return (f"{fmt.format(s['mean'] * scale)} ± {fmt.format(s['std'] * scale)} "
            f"[{fmt.format(s['min'] * scale)}..{fmt.format(s['max'] * scale)}]")


def render_md(res: dict) -> str:
    st, m = res["settings"], res["machine"]
    L = ["# Search on the bundled tiny space (`ofa-mbv3-tiny`), issue 5", ""]
    if st["quick"]:
        L += ["**Quick (smoke) settings: not a measurement.**", ""]
    L += [f"Command: `{res['command']}`", "",
          f"Machine: {m['platform']}; CPU {m['cpu_model']}; nproc {m['nproc']}; "
          f"niceness {m['niceness']}. Load average at start {res['loadavg_start']}, at end "
          f"{res['loadavg_end']} (a shared machine: other jobs ran alongside, so seconds are "
          f"noisy; the tables give medians). Python {m['python']}, torch {m['torch']}, "
          f"numpy {m['numpy']}. Whole benchmark: {res['total_seconds']:.0f} s.", "",
          f"Inputs: predictor `{st['predictor']}`, dataset `{st['dataset']}` "
          f"({res['predictor_quality']['cv']['records']} records), latency table `{st['lut']}` "
          f"(latency range {st['lut_min_ms']:.3f}..{st['lut_max_ms']:.3f} ms over resolutions "
          f"{st['resolutions']}). Evolution: population {st['population']} x "
          f"{st['generations']} generations, seeds {st['seeds']}. Accuracies are the "
          f"predictor's (Fashion-MNIST top-1, %).", ""]

    L += ["## 1. Throughput", "",
          "Predictor, one torch thread; archs scored per second, median of "
          f"{st['repeats']} timed repeats [min..max]. `predict` = encode an `ArchBatch` + "
          "forward; `predict_features` = forward only on encoded features (the search "
          "encodes straight from its gene matrix, then calls this).", "",
          "| method | batch | archs/s median [min..max] | ms per call |", "|---|---|---|---|"]
    for v in res["throughput"]["predictor"].values():
        a = v["archs_per_second"]
        L.append(f"| `{v['method']}` | {v['batch']:,} | {a['median']:,.0f} "
                 f"[{a['min']:,.0f}..{a['max']:,.0f}] | {v['ms_per_call_median']:.3f} |")
    et = res["throughput"]["evolution"]
    L += ["", f"Evolution search (one `evolution_search` call, population {st['population']} x "
          f"{st['generations']} generations; the search scores with one torch thread). Distinct "
          "archs scored per second = `evaluations / wall_seconds` of the call.", "",
          "| budget | wall s median [min..max] | evaluations median | archs/s median | "
          "random search wall s median |", "|---|---|---|---|---|"]
    for pb in res["quality"]["per_budget"]:
        w = pb["evolution_wall_seconds"]
        L.append(f"| {pb['budget_ms']:g} ms | {w['median']:.3f} [{w['min']:.3f}..{w['max']:.3f}]"
                 f" | {pb['evaluations']['median']:,.0f} | "
                 f"{pb['evolution_archs_per_second']['median']:,.0f} | "
                 f"{pb['random_wall_seconds']['median']:.3f} |")
    w, a = et["wall_seconds_per_search"], et["archs_per_second"]
    L.append(f"| **all** | {w['median']:.3f} [{w['min']:.3f}..{w['max']:.3f}] | "
             f"{et['evaluations_per_search']['median']:,.0f} | {a['median']:,.0f} | |")

    q = res["quality"]
    u = q["unconstrained"]
    L += ["", "## 2. Found-arch quality: evolution vs random search", "",
          "Best predicted accuracy (%), mean ± std over seeds [min..max]. Random search scores "
          "as many distinct random feasible archs as the evolution run of the same budget and "
          "seed scored. Latency = predicted (LUT) latency of the winners, max over seeds.", "",
          "| budget | evolution acc | random acc | Δ mean (pts) | evo ≥ random | evo lat max |"
          " random lat max | within budget |", "|---|---|---|---|---|---|---|---|"]
    for pb in q["per_budget"]:
        mark = "" if pb["binding"] else " (not binding)"
        L.append(f"| {pb['budget_ms']:g} ms{mark} | {_pm(pb['evolution_accuracy'], 100)} | "
                 f"{_pm(pb['random_accuracy'], 100)} | {100 * pb['delta_accuracy_mean']:+.2f} | "
                 f"{pb['evolution_ge_random']}/{pb['evolution_accuracy']['n']} | "
                 f"{pb['evolution_latency_ms']['max']:.3f} | "
                 f"{pb['random_latency_ms']['max']:.3f} | "
                 f"{'yes' if pb['all_within_budget'] else '**NO**'} |")
    bo = q["best_overall"]
    L += ["", f"With no budget (one evolution run, seed 0) the best arch scores "
          f"{100 * u['predicted_accuracy']:.2f}% at {u['predicted_latency_ms']:.3f} ms. The best "
          f"arch any run found scores {100 * bo['predicted_accuracy']:.2f}% at "
          f"{bo['predicted_latency_ms']:.3f} ms (`{bo['arch_string']}`): a budget at or above "
          f"that latency (marked \"not binding\") does not constrain the search, so its "
          f"result repeats the unconstrained problem."]
    cvd = res["predictor_quality"]["cv"]
    if "accuracy_max" in cvd:
        L += ["", f"For scale: the measured accuracies of the {cvd['records']} archs the "
              f"predictor was trained on span {100 * cvd['accuracy_min']:.1f}.."
              f"{100 * cvd['accuracy_max']:.1f}% (mean {100 * cvd['accuracy_mean']:.1f}%). "
              "Predicted accuracies above the top of that range are the predictor's "
              "extrapolation, not measurements; see part 3 for how well it ranks unseen archs."]

    pq = res["predictor_quality"]
    cv = pq["cv"]
    L += ["", "## 3. Predictor quality on held-out archs", "",
          f"Method: {cv['method']}. \"Fold\" rows: mean ± std over the "
          f"{cv['folds'] * cv['repeats']} held-out folds (~{cv['records'] // cv['folds']} archs "
          f"each); \"pooled\": all {cv['records']} out-of-fold predictions of a repeat together, "
          "mean ± std over repeats. Baseline = predicting the train part's mean accuracy. RMSE "
          f"in accuracy points (%); the dataset's accuracy std is {100 * cv['accuracy_std']:.2f}"
          " pts.", "",
          "| measure | RMSE (pts) | Kendall tau | baseline RMSE (pts) |", "|---|---|---|---|",
          f"| CV per fold | {_pm(cv['fold_rmse'], 100)} | "
          f"{_pm(cv['fold_kendall_tau'], 1, '{:.3f}')} | {_pm(cv['fold_baseline_rmse'], 100)} |",
          f"| CV pooled out-of-fold | {_pm(cv['pooled_rmse'], 100)} | "
          f"{_pm(cv['pooled_kendall_tau'], 1, '{:.3f}')} | "
          f"{_pm(cv['pooled_baseline_rmse'], 100)} |"]
    b = pq["bundled"]
    sf = b.get("saved_fit")
    if sf:
        L.append(f"| bundled predictor, its saved fit report (val n={sf.get('n_val')}, also used"
                 f" for early stopping: optimistic) | {100 * sf['val_rmse']:.2f} | "
                 f"{sf['kendall_tau']:.3f} | |")
    ins = b.get("in_sample_all_records")
    if ins:
        L.append(f"| bundled predictor on all {ins['n']} records (in-sample, NOT held-out) | "
                 f"{100 * ins['rmse']:.2f} | {ins['kendall_tau']:.3f} | |")
    L.append("")
    return "\n".join(L)


def _command(argv) -> str:
    """The command line as run from the repository root (niceness included)."""
    nice = os.nice(0)
    prefix = (f"nice -n {nice} " if nice else "") + ".venv/bin/python benchmarks/search_tiny/run.py"
    return " ".join([prefix] + [shlex.quote(x) for x in argv])


# -- main ------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    out = Path(a.out)
    t_start = time.perf_counter()
    load0 = [round(x, 2) for x in os.getloadavg()]

    def log(msg):
        print(msg, flush=True)

    space = get_space(SPACE)
    pred = load_predictor(a.predictor, space)
    lut = load_table(a.lut, space=space)
    records = read_records(a.dataset)
    resolutions = list(pred.supported_resolutions(list(lut.resolutions)))
    lo, hi = lut.min_max(resolutions)
    budgets = list(a.budgets) if a.budgets else default_budgets(lo, hi)
    if a.quick and not a.budgets:
        budgets = [budgets[i] for i in (1, 3) if i < len(budgets)]  # 20% and 60%
    seeds = list(range(a.seeds))
    hidden = ([int(h) for h in a.hidden.split(",")] if a.hidden
              else list(pred.hidden))
    epochs = a.epochs or int(((pred.metadata or {}).get("fit") or {}).get("epochs") or 400)

    log(f"predictor throughput ({a.repeats} repeats)")
    thr = predictor_throughput(pred, resolutions, a.repeats, a.quick)
    log(f"searches: budgets {budgets} ms, seeds {seeds}, {a.population} x {a.generations}")
    sr = run_searches(pred, lut, budgets, seeds, a.population, a.generations, log)
    log(f"predictor cross-validation ({a.folds} folds x {a.cv_repeats}, {epochs} epochs)")
    cv = cross_validate(records, hidden, epochs, a.folds, a.cv_repeats, log)

    res = {
        "benchmark": "search_tiny", "issue": 5, "space": SPACE,
        "command": _command(argv),
        "settings": {"quick": a.quick, "predictor": _rel(a.predictor),
                     "dataset": _rel(a.dataset), "lut": _rel(a.lut),
                     "lut_device": (lut.meta or {}).get("device"),
                     "lut_min_ms": lo, "lut_max_ms": hi, "resolutions": resolutions,
                     "budgets_ms": budgets,
                     "budget_rule": None if a.budgets else
                     f"{list(BUDGET_FRACTIONS)} of the way from the LUT min to max, rounded",
                     "seeds": seeds, "population": a.population, "generations": a.generations,
                     "repeats": a.repeats, "folds": a.folds, "cv_repeats": a.cv_repeats,
                     "epochs": epochs, "hidden": hidden},
        "machine": _machine(),
        "loadavg_start": load0,
        "throughput": {"predictor": thr, "evolution": sr["evolution_throughput"]},
        "quality": {"per_budget": sr["per_budget"], "unconstrained": sr["unconstrained"],
                    "best_overall": sr["best_overall"],
                    "all_within_budget": sr["all_within_budget"], "runs": sr["runs"]},
        "predictor_quality": {"cv": cv, "bundled": bundled_metrics(pred, records)},
    }
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["total_seconds"] = time.perf_counter() - t_start
    atomic_write_text(out / "results.json", json.dumps(res, indent=1) + "\n")
    atomic_write_text(out / "results.md", render_md(res))
    log(f"wrote {out / 'results.json'} and {out / 'results.md'} "
        f"({res['total_seconds']:.0f} s)")
    return res


if __name__ == "__main__":
    main()
