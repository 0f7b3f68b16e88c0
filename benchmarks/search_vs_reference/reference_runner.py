"""Runs the OFA reference's tutorial ``EvolutionFinder`` on request (used by run.py).

Executed with the benchmark's own interpreter (see setup_refvenv.sh), where the PyPI ``ofa``
package is installed without its dependencies. The tutorial modules are loaded straight from
that package's files, so ``ofa/__init__`` (which needs torchvision, PIL, ...) never runs; the
one helper they import, ``ofa.utils.download_url``, is replaced by a stub that refuses to
download. The latency table and the accuracy predictor are built from the local reference files
instead of the URLs the tutorial would fetch.

Protocol: one JSON request per stdin line ``{"budget": ms, "seed": s, "population": n,
"generations": g}``; one JSON answer per stdout line. An empty line ends the process.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import sys
import time
import types
from pathlib import Path


def _load_tutorial():
    spec = importlib.util.find_spec("ofa")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the 'ofa' package is not installed in this interpreter (see setup_refvenv.sh)")
    tut = Path(list(spec.submodule_search_locations)[0]) / "tutorial"

    def no_download(*_a, **_k):
        raise RuntimeError("downloads are disabled in this benchmark")

    utils = types.ModuleType("ofa.utils")
    utils.download_url = no_download
    sys.modules["ofa.utils"] = utils

    mods = {}
    for name in ("accuracy_predictor", "latency_table", "evolution_finder"):
        s = importlib.util.spec_from_file_location(f"ofa_reference_tutorial.{name}",
                                                   tut / f"{name}.py")
        m = importlib.util.module_from_spec(s)
        s.loader.exec_module(m)
        mods[name] = m
    return mods


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reference-dir", required=True)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import numpy as np
    import torch
    import yaml

    torch.set_num_threads(args.threads)
    ref = Path(args.reference_dir)
    mods = _load_tutorial()
    ap_mod, lt_mod, ef_mod = (mods["accuracy_predictor"], mods["latency_table"],
                              mods["evolution_finder"])

    # the tutorial's AccuracyPredictor(pretrained=False) builds the same MLP; load the local file
    predictor = ap_mod.AccuracyPredictor(pretrained=False, device="cpu")
    sd = torch.load(ref / "ofa-imagenet-predictor" / "acc_predictor.pth", map_location="cpu",
                    weights_only=True)
    predictor.model.load_state_dict(sd)
    predictor.model.eval()

    # LatencyTable(device="note10") would download one YAML per resolution; build it from the
    # local copies (safe_load: the tutorial's bare yaml.load needs a Loader in PyYAML 6)
    table = lt_mod.LatencyTable.__new__(lt_mod.LatencyTable)
    table.latency_tables = {}
    for r in (160, 176, 192, 208, 224):
        est = lt_mod.LatencyEstimator.__new__(lt_mod.LatencyEstimator)
        with open(ref / "ofa-note10-lut" / f"{r}_lookup_table.yaml", encoding="utf-8") as fh:
            est.lut = yaml.safe_load(fh)
        table.latency_tables[r] = est

    print(json.dumps({"ready": True, "torch": torch.__version__, "numpy": np.__version__}),
          flush=True)
    devnull = open(os.devnull, "w")
    for line in sys.stdin:
        if not line.strip():
            break
        req = json.loads(line)
        # the reference draws from Python's and NumPy's global generators
        random.seed(req["seed"])
        np.random.seed(req["seed"])
        finder = ef_mod.EvolutionFinder("note10", float(req["budget"]), table, predictor,
                                        population_size=req["population"],
                                        max_time_budget=req["generations"])
        stderr, sys.stderr = sys.stderr, devnull  # its tqdm bar
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            history, best = finder.run_evolution_search()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        finally:
            sys.stderr = stderr
        acc, sample, latency = best
        print(json.dumps({"budget": req["budget"], "seed": req["seed"],
                          "predicted_accuracy": float(acc), "latency_ms": float(latency),
                          "arch": {"ks": sample["ks"], "e": sample["e"], "d": sample["d"],
                                   "r": sample["r"][0]},
                          "wall_seconds": wall, "cpu_seconds": cpu}), flush=True)


if __name__ == "__main__":
    main()
