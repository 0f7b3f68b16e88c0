"""Offline check of the recheck rule on the tables of the 2026-12-03 run (results/tables).

For each of the six fresh tiny tables (three fp32, three int8): how many entries sit more than
15% above the median of the three builds of their precision ("off"), how many of those
``luts.outliers.suspect_entries`` flags, how many it flags that are not off; then, with the
flagged entries set to their three-build median (what timing them again at a quiet moment aims
at) and the calibration refitted on the same network timings, the validation of that table
again, on the same subnets and measurements (op sums without the validation's drift rescale).

    python benchmarks/latency_contract/offline_recheck.py > benchmarks/latency_contract/offline_recheck.md
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from luts.calibrate import refit_calibration  # noqa: E402
from luts.outliers import suspect_entries  # noqa: E402
from luts.table import LatencyTable  # noqa: E402
from profilers.base import LatencyStats  # noqa: E402


def within(t: LatencyTable, rows) -> tuple:
    archs = [t.family.parse_arch(r["arch_string"], t.space) for r in rows]
    err = t.predict(archs) / np.array([r["measured_ms"] for r in rows]) - 1
    return float(np.mean(np.abs(err) <= 0.10)), float(np.max(np.abs(err)))


def main() -> int:
    res = json.loads((HERE / "results" / "results.json").read_text())
    stages = {s["stage"]: s for s in res["stages"]}
    print("| table | entries off (>15% over the 3-build median) | flagged and off | flagged, "
          "not off | validation within ±10% (largest abs. error) | with the flagged entries fixed |")
    print("|---|---|---|---|---|---|")
    for kind, val in (("", "validate #{k}"), ("int8-", "validate #{k} int8")):
        tabs = [LatencyTable.load(HERE / "results" / "tables" / f"ofa-mbv3-tiny-{kind}build{k}.json")
                for k in (1, 2, 3)]
        keys = sorted(tabs[0].entries, key=lambda o: o.to_string())
        med = {op: float(np.median([t.entries[op].median_ms for t in tabs])) for op in keys}
        for k, t in enumerate(tabs, 1):
            off = {op for op in keys if med[op] > 0 and t.entries[op].median_ms > 1.15 * med[op]}
            flagged = set(suspect_entries({op: s.median_ms for op, s in t.entries.items()}))
            rows = stages[val.format(k=k)]["data"]["rows"]
            before = within(t, rows)
            fixed = copy.deepcopy(t)
            for op in flagged:
                e = fixed.entries[op]
                fixed.entries[op] = LatencyStats(min(med[op], e.median_ms), e.p10_ms, e.p90_ms,
                                                 e.std_ms, e.runs)
            fixed._grids.clear()
            refit_calibration(fixed)
            after = within(fixed, rows)
            print(f"| {kind or 'fp32-'}build{k} | {len(off)} | {len(off & flagged)} | "
                  f"{len(flagged - off)} | {before[0]:.0%} ({before[1]:+.1%}) | "
                  f"{after[0]:.0%} ({after[1]:+.1%}) |".replace("(+", "(±"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
