"""Latency contract benchmark: do fresh tables validate, and does `specialize` meet its budget
when measured? Runs the real command line, stage by stage, recording the load with every
number, and writes results/results.json and the README's table (see README.md).

    python benchmarks/latency_contract/run.py --quick        # smoke test, about 2 minutes
    python benchmarks/latency_contract/run.py --time-budget 780

Stages, interleaved so a slow spell of the shared machine does not land on one kind of number
only: validate tables built earlier (results/tables/*-build0.json, if present: "validated an
hour after the build") -> build #1 (profile + calibration) -> validate #1 -> specialize at
25/50/75% of #1's range -> validate the earlier w1.0 table -> validate #1 next to a CPU burner
(the noise warning) -> build + validate #2, #3 -> validate #1 again. A stage that would not fit
in the remaining --time-budget is skipped and recorded as skipped.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TINY = "ofa-mbv3-tiny"
W10 = "ofa-mbv3-w1.0"


def load() -> List[float]:
    """1/5/15-minute load averages (what `uptime` prints)."""
    return [round(x, 2) for x in os.getloadavg()]


def cli(*args: str, timeout: float = 900, during=None) -> Dict[str, Any]:
    """Run ``ofa-deploy ARGS --json``-style commands; returns parsed stdout, stderr lines,
    seconds and the load before/after. ``during(process)``, if given, runs while the command
    does (e.g. CPU burners until a stage of it is done)."""
    import tempfile

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    t0, l0 = time.monotonic(), load()
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "ofa_deploy", *args], stdout=fo,
                                stderr=fe, text=True, env=env, cwd=ROOT)
        if during is not None:
            during(proc)
        proc.wait(timeout=timeout)
        fo.seek(0)
        fe.seek(0)
        p = subprocess.CompletedProcess(proc.args, proc.returncode, fo.read(), fe.read())
    out: Dict[str, Any] = {"cmd": "ofa-deploy " + " ".join(args), "rc": p.returncode,
                           "seconds": round(time.monotonic() - t0, 1), "load_before": l0,
                           "load_after": load(),
                           "stderr": [ln for ln in p.stderr.splitlines()
                                      if ln.startswith(("warning", "Error", "["))][-12:]}
    if p.returncode == 0:
        try:
            out["data"] = json.loads(p.stdout)
        except json.JSONDecodeError:
            out["stdout_tail"] = p.stdout[-2000:]
    else:
        out["error"] = (p.stderr or p.stdout).strip().splitlines()[-1:]
    return out


def _shown(table: Path) -> str:
    """A table's path as results.json records it: relative to the repository when inside it."""
    return str(table.relative_to(ROOT)) if table.is_relative_to(ROOT) else str(table)


@contextlib.contextmanager
def cpu_burners(n: int):
    """``n`` processes spinning on the CPU for the duration (other work on the machine)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
            p.wait()


class Bench:
    """Runs stages within a time budget and keeps every result."""

    def __init__(self, args):
        self.a = args
        self.t0 = time.monotonic()
        self.res: Dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                             time.gmtime()),
                                    "quick": args.quick, "stages": [], "skipped": []}
        self.out = Path(args.out).resolve()
        (self.out / "tables").mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.a.time_budget - (time.monotonic() - self.t0)

    def stage(self, name: str, est_s: float, fn) -> Optional[Dict[str, Any]]:
        if self.left() < est_s:
            self.res["skipped"].append({"stage": name, "estimate_s": est_s,
                                        "left_s": round(self.left())})
            print(f"skip {name}: needs ~{est_s:.0f} s, {self.left():.0f} s left", flush=True)
            return None
        print(f"{name} (load {load()}) ...", flush=True)
        r = fn()
        r["stage"] = name
        r["finished"] = time.strftime("%H:%M:%SZ", time.gmtime())
        self.res["stages"].append(r)
        self.save()
        print(f"  {name}: rc {r.get('rc')} in {r.get('seconds')} s", flush=True)
        return r

    def save(self) -> None:
        self.res["seconds"] = round(time.monotonic() - self.t0, 1)
        (self.out / "results.json").write_text(json.dumps(self.res, indent=1) + "\n")

    # -- stages --------------------------------------------------------------------------
    def table(self, k: int, space: str = TINY, variant: str = "") -> Path:
        return self.out / "tables" / f"{space}{'-' + variant if variant else ''}-build{k}.json"

    def build(self, k: int, space: str = TINY, res: Optional[str] = None, variant: str = ""):
        """``variant``: "" (the protocol's defaults and --estimator), "int8" (an int8 table)
        or an estimator name (the A/B of estimators)."""
        table = self.table(k, space, variant)
        args = self._profile_args(table, space)
        if variant == "int8":
            args += ["--precision", "int8"]
        elif variant:
            args += ["--estimator", variant]
        elif self.a.estimator:
            args += ["--estimator", self.a.estimator]
        if res:
            args += ["--resolutions", res]
        r = cli(*args)
        r["table"] = _shown(table)
        return r

    def _profile_args(self, table: Path, space: str = TINY) -> List[str]:
        """A fresh `profile` of ``space`` on the CPU into ``table``, calibrated, as JSON."""
        return ["profile", "--device", "cpu", "--space", space, "--out", str(table), "--fresh",
                "--calibrate", str(self.a.calibrate), "--json", "-q"]

    def spell_build(self, k: int, recheck: bool, burners: int = 2):
        """A fresh build whose op rounds run next to ``burners`` CPU burners (a slow spell
        that covers the whole op table, as build #1 of 2026-12-03 saw), stopped as soon as
        the op table is complete: the calibration and what follows see a quiet machine."""
        table = self.table(k, variant="spell" if recheck else "spell-norecheck")
        args = self._profile_args(table)
        if not recheck:
            args.append("--no-recheck")
        for old in (table, table.with_name(table.name + ".raw")):
            old.unlink(missing_ok=True)  # the poll below must see this build's table only
        spell: Dict[str, Any] = {}

        def during(proc):
            t0 = time.monotonic()
            with cpu_burners(burners):
                while proc.poll() is None:
                    try:
                        if json.loads(table.read_text())["meta"].get("complete"):
                            break
                    except (OSError, ValueError, KeyError):
                        pass
                    time.sleep(0.2)
            spell.update({"burners": burners, "seconds": round(time.monotonic() - t0, 1),
                          "load_at_end": load()})

        r = cli(*args, during=during)
        r["spell"] = spell
        r["table"] = _shown(table)
        return r

    def validate(self, k: int, space: str = TINY, samples: Optional[int] = None,
                 variant: str = ""):
        return self.validate_table(self.table(k, space, variant), samples,
                                   int8=variant == "int8")

    def validate_table(self, table: Path, samples: Optional[int] = None, int8: bool = False):
        args = ["lut", "validate", "--lut", str(table), "--samples",
                str(samples or self.a.samples), "--seed", "1", "--json", "-q"]
        return cli(*args, *(["--precision", "int8"] if int8 else []))

    def specialize(self, frac: float):
        from luts.table import LatencyTable

        table = self.out / "tables" / f"{TINY}-build1.json"
        lo, hi = LatencyTable.load(table).min_max()
        ms = round(lo + frac * (hi - lo), 3)
        search = ["--generations", str(self.a.generations)] if self.a.generations else []
        r = cli("specialize", "--supernet", "default", "--lut", str(table), "--target", "cpu",
                "--ms", str(ms), "--data", "none", "--formats", "onnx", *search,
                "--out", str(self.out / "specialize" / f"{frac:g}"), "--json")
        r.update({"fraction": frac, "budget_ms": ms, "range": [lo, hi]})
        return r

    def specialize_w10(self, table: Path, frac: float):
        """``specialize`` on ``ofa-mbv3-w1.0`` at ``frac`` of ``table``'s range: a supernet of
        random weights (weights do not change latency; there is no trained w1.0 checkpoint
        here) ranked by the OFA ImageNet predictor of w1.2, whose genes (kernel, expand,
        depth, resolution) are w1.0's too; no data, so no accuracy: latency only."""
        from luts.table import LatencyTable

        ckpt = self.out / "w10-random.pt"
        if not ckpt.is_file():
            import torch

            from supernet import get_space
            from supernet.checkpoint import save_supernet
            from supernet.model import Supernet

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                save_supernet(Supernet(get_space(W10)), ckpt)
        lo, hi = LatencyTable.load(table).min_max()
        ms = round(lo + frac * (hi - lo), 3)
        pred = ROOT / "ofa_deploy" / "assets" / "ofa-mbv3-w1.2-imagenet-acc-predictor.pth"
        r = cli("specialize", "--supernet", str(ckpt), "--lut", str(table), "--target", "cpu",
                "--ms", str(ms), "--data", "none", "--formats", "onnx", "--predictor",
                str(pred), "--out", str(self.out / "specialize-w10" / f"{frac:g}"), "--json")
        r.update({"fraction": frac, "budget_ms": ms, "range": [lo, hi]})
        return r

    def noisy_validate(self, k: int, burners: int = 1):
        # CPU burners while validating: the tool must warn, not be confident
        with cpu_burners(burners):
            r = self.validate(k, samples=max(6, self.a.samples // 3))
        r["burners"] = burners
        return r


def summarize(res: Dict[str, Any]) -> List[str]:
    """README table rows from the results."""
    lines = ["| stage | what | result | load before → after | seconds |", "|---|---|---|---|---|"]
    for s in res["stages"]:
        d, name = s.get("data") or {}, s["stage"]
        ld = f"{'/'.join(map(str, s['load_before']))} → {'/'.join(map(str, s['load_after']))}"
        if s.get("rc") != 0:
            what = f"failed: {s.get('error')}"
        elif name.startswith("build"):
            c = d.get("calibration") or {}
            what = (f"{d.get('ops')} ops, noise CV {d.get('median_cv') or 0:.1%}; calibration "
                    f"{c.get('model')}: held-out MAPE {c.get('heldout_mape', 0):.1%} (uncal. "
                    f"{c.get('uncalibrated_mape', 0):.1%}); {d.get('rechecked_entries') or 0} "
                    f"entries re-timed off their curve"
                    + (f"; every op re-timed: held-out MAPE "
                       f"{c['remeasured']['heldout_mape_before']:.1%} -> "
                       f"{c['remeasured']['heldout_mape_after']:.1%}"
                       if c.get("remeasured") else ""))
        elif name.startswith("validate") or name.startswith("noisy"):
            u = d.get("uncalibrated", {})
            what = (f"n={d.get('samples')}: within ±10% **{d.get('within_10pct', 0):.0%}**, τ "
                    f"**{d.get('kendall_tau', 0):.3f}**, MAPE {d.get('mape', 0):.1%} "
                    f"(uncalibrated {u.get('within_10pct', 0):.0%} / τ "
                    f"{u.get('kendall_tau', 0):.3f}); speed scale "
                    f"x{d.get('meta', {}).get('speed_scale', 1):.3f}; CV "
                    f"{d.get('median_cv', 0):.1%}"
                    + (f"; warnings: {'; '.join(d.get('warnings'))}" if d.get("warnings")
                       else ""))
        elif name.startswith("specialize"):
            m = d.get("measured_latency_ms", {})
            what = (f"budget {s['budget_ms']} ms ({s['fraction']:.0%} of range): predicted "
                    f"{d.get('predicted_latency_ms', 0):.3f}, measured median "
                    f"**{m.get('median') or 0:.3f}** ms, within budget "
                    f"**{d.get('within_budget')}**, >= 0.9 x budget "
                    f"{(m.get('median') or 0) >= 0.9 * s['budget_ms']}, rounds "
                    f"{len(d.get('rounds', []))}"
                    + "".join(f"; round {h['round']}: {h['note']}" for h in d.get("rounds", [])
                              if h.get("note")))
        else:
            what = "-"
        lines.append(f"| {name} | {s['cmd'].split(' --json')[0][:60]}… | {what} | {ld} | "
                     f"{s['seconds']} |")
    for sk in res["skipped"]:
        lines.append(f"| {sk['stage']} | skipped: ~{sk['estimate_s']:.0f} s needed, "
                     f"{sk['left_s']} s left | - | - | - |")
    return lines


def later(b: "Bench", a) -> int:
    """Validate the tables of the run in ``--out`` again (appended to its results)."""
    prev = b.res
    built = {s["stage"]: s for s in prev["stages"] if s["stage"].startswith("build")}
    when = {name: s.get("finished") for name, s in built.items()}
    for name in sorted(built):
        parts = name.split()  # "build #K" or "build #K VARIANT"; "build w1.0"
        if parts[1] == "w1.0":
            continue
        k, variant = int(parts[1][1:]), (parts[2] if len(parts) > 2 else "")
        b.stage(f"validate #{k}{' ' + variant if variant else ''} later (built "
                f"{when.get(name)})", 0, lambda k=k, v=variant: b.validate(k, variant=v))
    if "build w1.0" in built:
        b.stage(f"validate w1.0 later (built {when.get('build w1.0')})", 0,
                lambda: b.validate(1, W10))
    b.save()
    table = "\n".join(summarize(b.res))
    (b.out / "table.md").write_text(table + "\n")
    print(table)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="32 px only, few samples: a smoke test")
    ap.add_argument("--time-budget", type=float, default=780, help="seconds for all stages")
    ap.add_argument("--builds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=40)
    ap.add_argument("--calibrate", type=int, default=20)
    ap.add_argument("--generations", type=int, default=0,
                    help="search generations (0: specialize's default)")
    ap.add_argument("--w10", action="store_true", help="also build and validate w1.0 if time")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--estimator", default=None,
                    help="estimator of the fresh builds (default: the protocol's)")
    ap.add_argument("--ab-estimator", default=None,
                    help="also build and validate tables with this estimator, interleaved "
                         "with the default builds (A, B, A, B)")
    ap.add_argument("--int8", action="store_true", help="also build and validate an int8 table")
    ap.add_argument("--specialize-again", action="store_true",
                    help="only run the specialize stages again on build #1 of the run in --out "
                         "(appended to its results, the earlier ones kept)")
    ap.add_argument("--more-int8", type=int, default=0, metavar="N",
                    help="only build and validate N more int8 tables (#2..), appended to the "
                         "results of the run in --out")
    ap.add_argument("--noisy", type=int, default=0, metavar="N",
                    help="only validate build #1 of the run in --out next to N CPU burners "
                         "(appended to its results)")
    ap.add_argument("--spell-ab", type=int, default=0, metavar="N",
                    help="only run N pairs of builds whose op rounds run next to two CPU "
                         "burners, with and without the recheck (alternating), each validated "
                         "on a quiet machine (appended to the results in --out)")
    ap.add_argument("--w10-specialize", default=None, metavar="TABLE",
                    help="only run specialize on ofa-mbv3-w1.0 (random weights, the w1.2 "
                         "ImageNet predictor) at 25/50/75%% of TABLE's range (appended to "
                         "the results in --out)")
    ap.add_argument("--later", action="store_true",
                    help="only validate the tables of an earlier run (in --out) again, and "
                         "append those stages to its results: 'validated an hour later'")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    res = "32" if a.quick else None
    if a.quick:
        a.builds, a.samples, a.calibrate, a.generations = 1, 6, 5, 20
        if a.out == str(HERE / "results"):
            a.out = str(HERE / "results-quick")
    b = Bench(a)
    if a.later or a.specialize_again or a.more_int8 or a.noisy or a.spell_ab or \
            a.w10_specialize:
        prev = json.loads((b.out / "results.json").read_text())
        b.res = {**prev, "skipped": prev.get("skipped", [])}
    if a.later:
        return later(b, a)
    if a.more_int8:
        for k in range(2, 2 + a.more_int8):
            if b.stage(f"build #{k} int8", 0, lambda k=k: b.build(k, variant="int8")):
                b.stage(f"validate #{k} int8", 0, lambda k=k: b.validate(k, variant="int8"))
    if a.specialize_again:
        for f in (0.25, 0.5, 0.75):
            b.stage(f"specialize {f:.0%} again", 0, lambda f=f: b.specialize(f))
    if a.noisy:
        b.stage(f"noisy validate #1 ({a.noisy} CPU burners)", 0,
                lambda: b.noisy_validate(1, a.noisy))
    for k in range(1, a.spell_ab + 1):
        for recheck in ((True, False) if k % 2 else (False, True)):  # A, B, B, A
            v = "spell" if recheck else "spell-norecheck"
            if b.stage(f"build #{k} {v}", 0, lambda k=k, r=recheck: b.spell_build(k, r)):
                b.stage(f"validate #{k} {v}", 0,
                        lambda k=k, v=v: b.validate_table(b.table(k, variant=v)))
    if a.w10_specialize:
        for f in (0.25, 0.5, 0.75):
            b.stage(f"specialize w1.0 {f:.0%}", 0,
                    lambda f=f: b.specialize_w10(Path(a.w10_specialize).resolve(), f))
    if a.specialize_again or a.more_int8 or a.noisy or a.spell_ab or a.w10_specialize:
        b.save()
        table = "\n".join(summarize(b.res))
        (b.out / "table.md").write_text(table + "\n")
        print(table)
        return 0
    b.res["host_load_start"] = load()
    est_build = 60 if a.quick else 220
    est_val = 30 if a.quick else 70
    tables = Path(a.out) / "tables"
    # tables built earlier (an hour before, under another load): validated first, as a user
    # would use them later; the drift check says how much the machine's speed moved since
    if (tables / f"{TINY}-build0.json").is_file():
        b.stage("validate #0 (built earlier)", est_val, lambda: b.validate(0))
    b.stage("build #1", est_build, lambda: b.build(1, res=res))
    b.stage("validate #1", est_val, lambda: b.validate(1))
    for f in ((0.5,) if a.quick else (0.25, 0.5, 0.75)):
        b.stage(f"specialize {f:.0%}", 45, lambda f=f: b.specialize(f))
    if (tables / f"{W10}-build0.json").is_file():
        b.stage("validate w1.0 #0 (built earlier)", 150, lambda: b.validate(0, W10))
    b.stage("noisy validate #1 (CPU burner)", 40, lambda: b.noisy_validate(1))
    ab = a.ab_estimator
    if ab and b.stage(f"build #1 {ab}", est_build, lambda: b.build(1, res=res, variant=ab)):
        b.stage(f"validate #1 {ab}", est_val, lambda: b.validate(1, variant=ab))
    for k in range(2, a.builds + 1):
        # A, B, A, B: the estimator A/B shares the machine's slow and quiet spells
        if b.stage(f"build #{k}", est_build, lambda k=k: b.build(k, res=res)):
            b.stage(f"validate #{k}", est_val, lambda k=k: b.validate(k))
        if ab and b.stage(f"build #{k} {ab}", est_build,
                          lambda k=k: b.build(k, res=res, variant=ab)):
            b.stage(f"validate #{k} {ab}", est_val, lambda k=k: b.validate(k, variant=ab))
    if a.int8 and b.stage("build #1 int8", 2 * est_build,
                          lambda: b.build(1, res=res, variant="int8")):
        b.stage("validate #1 int8", 2 * est_val, lambda: b.validate(1, variant="int8"))
    b.stage("validate #1 again (later)", est_val, lambda: b.validate(1))
    if a.w10 and not a.quick:
        if b.stage("build w1.0", 300, lambda: b.build(1, W10, "160,192,224")):
            b.stage("validate w1.0", 150, lambda: b.validate(1, W10))
    b.res["host_load_end"] = load()
    b.save()
    table = "\n".join(summarize(b.res))
    (Path(a.out) / "table.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
