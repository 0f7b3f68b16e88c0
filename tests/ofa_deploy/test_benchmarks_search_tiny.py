"""benchmarks/search_tiny/run.py (issue 5) in quick mode: it runs, writes its result files with
the expected parts, and every winner meets its latency budget. No timings are asserted."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "search_tiny" / "run.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_search_tiny_run", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_search_tiny_benchmark_quick(tmp_path):
    mod = _load()
    res = mod.main(["--quick", "--out", str(tmp_path)])
    js, md = tmp_path / "results.json", tmp_path / "results.md"
    assert js.is_file() and md.is_file()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files
    data = json.loads(js.read_text())
    assert data["settings"]["quick"] is True
    for key in ("command", "settings", "machine", "loadavg_start", "loadavg_end",
                "throughput", "quality", "predictor_quality", "total_seconds"):
        assert key in data, key
    for key in ("platform", "cpu_model", "nproc", "torch", "numpy"):
        assert key in data["machine"], key

    pred = data["throughput"]["predictor"]
    assert {v["batch"] for v in pred.values()} == {100, 10000}
    assert all(v["archs_per_second"]["median"] > 0 for v in pred.values())
    evo = data["throughput"]["evolution"]
    assert evo["wall_seconds_per_search"]["n"] == len(data["settings"]["seeds"]) * \
        len(data["settings"]["budgets_ms"])

    q = data["quality"]
    budgets = data["settings"]["budgets_ms"]
    assert [pb["budget_ms"] for pb in q["per_budget"]] == budgets
    runs = q["runs"]
    assert {r["method"] for r in runs} == {"evolution", "random"}
    assert len(runs) == 2 * len(budgets) * len(data["settings"]["seeds"])
    for r in runs:  # every winner within its budget
        assert r["predicted_latency_ms"] <= r["budget_ms"], r
        assert r["within_budget"] is True
    for pb in q["per_budget"]:
        assert pb["all_within_budget"] is True
        assert pb["evolution_latency_ms"]["max"] <= pb["budget_ms"]
        assert pb["random_latency_ms"]["max"] <= pb["budget_ms"]
        for side in ("evolution_accuracy", "random_accuracy"):
            assert {"mean", "std", "n"} <= set(pb[side])
    # random search got the same number of evaluations as the evolution run it is paired with
    evo_evals = {(r["budget_ms"], r["seed"]): r["evaluations"] for r in runs
                 if r["method"] == "evolution"}
    for r in runs:
        if r["method"] == "random":
            assert r["evaluations"] == evo_evals[(r["budget_ms"], r["seed"])]

    cv = data["predictor_quality"]["cv"]
    for key in ("fold_rmse", "fold_kendall_tau", "pooled_rmse", "pooled_kendall_tau"):
        assert key in cv, key
    assert len(cv["per_fold"]) == cv["folds"] * cv["repeats"]
    assert sum(f["n_test"] for f in cv["per_fold"]) == cv["records"] * cv["repeats"]
    assert "bundled" in data["predictor_quality"]

    text = md.read_text()
    for head in ("## 1. Throughput", "## 2.", "## 3.", "Command:", "nproc"):
        assert head in text
    assert res["quality"]["all_within_budget"] is True
