"""Benchmark (issue 11): start-up cost of the command line.

Times whole commands as a user runs them, each in a fresh process:

- ``ofa-deploy --help``
- ``ofa-deploy search --space ofa-mbv3-w1.2 --target note10 --ms 30`` (bundled predictor,
  built-in table), with the search's own ``search_seconds`` read from its ``--json`` output

The commands are interleaved (A, B, A, B, ...) so that drift of a shared machine hits both
alike; medians, min/max and the load average before and after are recorded. Also records
which heavy libraries each command imported (``-X importtime`` in one extra run), so "search
needs no torch" is checked, not assumed.

    .venv/bin/python benchmarks/startup/run.py [--rounds 10]

Writes results.json (atomically) and results.md beside this file.
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
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from profilers.measure import cpu_model  # noqa: E402
from supernet.fileio import atomic_write_text  # noqa: E402

HEAVY = ("torch", "onnx", "onnxruntime", "ai_edge_litert", "matplotlib", "numpy", "yaml")
COMMANDS = {
    "help": ["--help"],
    "search": ["search", "--space", "ofa-mbv3-w1.2", "--target", "note10", "--ms", "30", "--json"],
}


def _argv(args):
    # the module entry point of this checkout, so the benchmark measures this tree
    return [sys.executable, "-m", "ofa_deploy", *args]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def time_once(args):
    """Wall seconds of one fresh process running ``ofa-deploy ARGS``, and its stdout."""
    t0 = time.perf_counter()
    out = subprocess.run(_argv(args), capture_output=True, text=True, env=_env(), check=True)
    return time.perf_counter() - t0, out.stdout


def imported_heavy(args):
    """The heavy top-level libraries a command imports (from ``-X importtime``)."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "ofa_deploy", *args],
                         capture_output=True, text=True, env=_env(), check=True)
    names = set()
    for line in out.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name in HEAVY:
                names.add(name)
    return sorted(names)


def summary(values):
    """Median, min and max, rounded to milliseconds."""
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "n": len(values)}


def main(argv=None):
    """Run the interleaved rounds and write results.json / results.md."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--out-dir", type=Path, default=HERE)
    a = ap.parse_args(argv)
    for args in COMMANDS.values():  # warm the page cache and bytecode once, untimed
        time_once(args)
    walls = {k: [] for k in COMMANDS}
    search_seconds = []
    load_before = os.getloadavg()
    for _ in range(a.rounds):
        for name, args in COMMANDS.items():
            wall, stdout = time_once(args)
            walls[name].append(wall)
            if name == "search":
                search_seconds.append(json.loads(stdout)["search_seconds"])
    load_after = os.getloadavg()
    doc = {
        "benchmark": "startup",
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in load_after]},
        "protocol": f"{a.rounds} interleaved rounds of fresh processes after one untimed warm run "
                    "each; wall clock of the whole command",
        "commands": {name: {"argv": ["ofa-deploy", *args], "wall_s": summary(walls[name]),
                            "heavy_imports": imported_heavy(args)}
                     for name, args in COMMANDS.items()},
    }
    doc["commands"]["search"]["search_seconds"] = summary(search_seconds)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(a.out_dir / "results.json", json.dumps(doc, indent=2) + "\n")
    rows = ["| command | wall median (s) | min-max (s) | heavy imports |", "|---|---|---|---|"]
    for name, c in doc["commands"].items():
        w = c["wall_s"]
        rows.append(f"| `{' '.join(c['argv'])}` | {w['median']:.3f} | {w['min']:.3f}-{w['max']:.3f} "
                    f"| {', '.join(c['heavy_imports']) or 'none'} |")
    s = doc["commands"]["search"]["search_seconds"]
    md = (f"# Start-up benchmark\n\n{doc['protocol']}; {doc['machine']['cpu']}, "
          f"{doc['machine']['cores']} cores, load {doc['machine']['loadavg_before'][0]} -> "
          f"{doc['machine']['loadavg_after'][0]}.\n\n" + "\n".join(rows) +
          f"\n\nThe search itself (`search_seconds`): median {s['median']:.3f} s "
          f"({s['min']:.3f}-{s['max']:.3f}).\n")
    atomic_write_text(a.out_dir / "results.md", md)
    print(md)


if __name__ == "__main__":
    main()
