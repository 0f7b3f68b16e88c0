"""The first hour of a new user (issue 12): config files in the flags' names, output paths
checked before any work, one exit code per kind of error, readable logs and outputs."""
from __future__ import annotations

import json

import click
import pytest
import yaml
from click.testing import CliRunner

from luts.table import LatencyTable
from ofa_deploy.cli._common import config_option, save_resolved_config
from profilers.base import LatencyStats
from supernet import Supernet, enumerate_ops, get_space

SPACE = "ofa-mbv3-tiny"


def _spec(assets, out, *extra):
    return ["specialize", "--supernet", assets / "net.pt", "--lut", assets / "lut.json",
            "--predictor", assets / "pred.pt", "--data", "none", "--generations", "3",
            "--aging-islands", "0", "--population", "8", "--runs", "3", "--warmup", "1", "--threads", "1",
            "--formats", "onnx", "--out", out, *extra]


def _one_line(res, code, *needles):
    assert res.exit_code == code, (res.exit_code, res.output, repr(res.exception))
    text = res.output.strip()
    assert "Traceback" not in text, text
    errors = [ln for ln in text.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, (text, repr(res.exception))  # one complete line (usage errors add click's usage hint)
    text = errors[0]
    for n in needles:
        assert n in text, text


# -- item 3: --config takes the flags' names ----------------------------------------------------
@click.command()
@config_option
@click.option("--ms", "budgets", multiple=True, type=float)
@click.option("--target", "targets", multiple=True, default=("cpu",))
@click.option("--calib-images", default=5, type=int)
@click.option("--out", "out_dir", default=None)
@click.pass_context
def _toy(ctx, budgets, targets, calib_images, out_dir):
    if out_dir:
        save_resolved_config(ctx, out_dir)
    click.echo(json.dumps({"budgets": budgets, "targets": targets, "calib": calib_images}))


def _toy_run(*args):
    return CliRunner().invoke(_toy, [str(a) for a in args])


def test_config_accepts_flag_names_and_old_internal_names(tmp_path):
    new = tmp_path / "new.yaml"
    new.write_text("ms: 30\ntarget: tflite:cpu\ncalib-images: 7\n")
    r = _toy_run("--config", new)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"budgets": [30.0], "targets": ["tflite:cpu"], "calib": 7}
    old = tmp_path / "old.yaml"
    old.write_text("budgets: [5, 10]\ntargets: [cpu]\ncalib_images: 3\n")
    r = _toy_run("--config", old)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"budgets": [5.0, 10.0], "targets": ["cpu"], "calib": 3}
    r = _toy_run("--config", old, "--ms", "2")  # flags on the line win
    assert json.loads(r.output)["budgets"] == [2.0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("msec: 3\n")
    _one_line(_toy_run("--config", bad), 2, "unknown option 'msec'", "'ms'")


def test_saved_config_uses_flag_names_and_reads_back(tmp_path):
    r = _toy_run("--ms", "4", "--ms", "8", "--target", "cpu", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    saved = yaml.safe_load((tmp_path / "o" / "config.yaml").read_text())
    assert saved == {"ms": [4.0, 8.0], "target": ["cpu"], "calib-images": 5,
                     "out": str(tmp_path / "o")}
    again = _toy_run("--config", tmp_path / "o" / "config.yaml")
    assert again.exit_code == 0 and json.loads(again.output) == json.loads(r.output)


def test_specialize_config_with_flag_names(assets, tmp_path, run_cli):
    """`ms`/`target` in a specialize config reach the run (an infeasible budget proves it)."""
    cfg = tmp_path / "spec.yaml"
    cfg.write_text(f"ms: 0.00001\ntarget: cpu\nlut: {assets / 'lut.json'}\n")
    r = run_cli(*_spec(assets, tmp_path / "o"), "--config", cfg)
    _one_line(r, 1, "budget 1e-05 ms is infeasible")


# -- item 4: output paths checked first, one exit code per kind, no half-made folders ----------
def test_bad_output_paths_fail_before_any_work(assets, tmp_path, run_cli):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for cmd in (["export", "--supernet", assets / "net.pt", "--arch", "min", "--format", "onnx",
                 "--data", "none"], _spec(assets, tmp_path / "unused", "--ms", "1")):
        _one_line(run_cli(*cmd, "--out", afile / "sub"), 2, "--out", "which is a file")
        _one_line(run_cli(*cmd, "--out", afile), 2, "--out", "is not a directory")
    assert afile.read_text() == "x" and not (tmp_path / "unused").exists()
    srch = ["search", "--space", SPACE, "--lut", assets / "lut.json", "--predictor",
            assets / "pred.pt", "--ms", "1", "--population", "8", "--generations", "2", "--aging-islands", "0", "--aging-islands", "0"]
    _one_line(run_cli(*srch, "--out", "/proc/x.json"), 2, "--out", "cannot create files in /proc")
    _one_line(run_cli(*srch, "--out", tmp_path), 2, "--out", "is a directory")
    _one_line(run_cli("bench", "--json", afile / "r.json"), 2, "--json", "which is a file")
    _one_line(run_cli("lut", "validate", "--lut", assets / "lut.json", "--plot", afile / "p.png"),
              2, "--plot")


def test_search_prints_its_result_when_the_write_fails(assets, tmp_path, run_cli, monkeypatch):
    import sys

    import ofa_deploy.cli  # noqa: F401
    mod = sys.modules["ofa_deploy.cli.search"]  # the package's `search` is the command

    def full_disk(path, text):
        raise OSError(28, "No space left on device", str(path) + ".tmp123")

    monkeypatch.setattr(mod, "atomic_write_text", full_disk)
    r = run_cli("search", "--space", SPACE, "--lut", assets / "lut.json", "--predictor",
                assets / "pred.pt", "--ms", "1", "--population", "8", "--generations", "2", "--aging-islands", "0",
                "--json", "--out", tmp_path / "r.json")
    assert r.exit_code == 1
    assert json.loads(r.stdout)["predicted_latency_ms"] <= 1
    assert r.stderr.strip() == (f"Error: cannot write --out {tmp_path / 'r.json'}: No space left "
                                f"on device (the result is printed above)")


@pytest.mark.parametrize("ms", ["inf", "nan", "-1", "0"])
def test_bad_budget_is_the_same_usage_error_everywhere(assets, tmp_path, run_cli, ms):
    srch = run_cli("search", "--space", SPACE, "--lut", assets / "lut.json", "--ms", ms)
    spec = run_cli(*_spec(assets, tmp_path / "o", "--ms", "1", "--ms", ms))
    for r in (srch, spec):
        _one_line(r, 2, "--ms", "must be positive and finite", f"got {float(ms):g}")
    assert not (tmp_path / "o").exists()


def test_failed_run_leaves_no_half_made_output(assets, tmp_path, run_cli, monkeypatch):
    import ofa_deploy.export as exp

    def broken(model, shape, out_dir, *a, **k):
        (tmp_path / "o").mkdir(exist_ok=True)
        (tmp_path / "o" / "model.onnx").write_bytes(b"half")
        raise OSError(28, "No space left on device", str(tmp_path / "o" / "model.onnx"))

    monkeypatch.setattr(exp, "export_artifacts", broken)
    r = run_cli(*_spec(assets, tmp_path / "o", "--ms", "5"))
    _one_line(r, 1, "No space left on device")
    assert not (tmp_path / "o").exists()
    r = run_cli("export", "--supernet", assets / "net.pt", "--arch", "min", "--data", "none",
                "--out", tmp_path / "o")
    _one_line(r, 1, "No space left on device")
    assert not (tmp_path / "o").exists()
    old = tmp_path / "old"  # a folder that was there before is kept, and marked
    old.mkdir()
    (old / "notes.txt").write_text("mine")
    r = run_cli(*_spec(assets, old, "--ms", "5"))
    assert r.exit_code == 1
    assert (old / "notes.txt").read_text() == "mine"
    assert "This run failed" in (old / "INCOMPLETE.txt").read_text()
    monkeypatch.undo()  # a run that succeeds there takes the mark away
    r = run_cli(*_spec(assets, old, "--ms", "5"))
    assert r.exit_code == 0, r.output
    assert not (old / "INCOMPLETE.txt").exists() and (old / "model.onnx").is_file()
    # a phone target without a table fails before the folder is made
    monkeypatch.setenv("OFA_DEPLOY_HOME", str(tmp_path / "home"))
    r = run_cli("specialize", "--supernet", assets / "net.pt", "--predictor", assets / "pred.pt",
                "--target", "adb:pixel", "--ms", "5", "--data", "none", "--out", tmp_path / "p")
    _one_line(r, 1, "ofa-deploy profile --device adb:pixel")
    assert not (tmp_path / "p").exists()


def test_truncated_checkpoint_message_is_complete(assets, tmp_path, run_cli):
    data = (assets / "net.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    r = run_cli("export", "--supernet", tmp_path / "cut.pt", "--arch", "min", "--data", "none",
                "--out", tmp_path / "o")
    _one_line(r, 1, "cannot read checkpoint", "is the file complete?")
    assert r.output.strip().endswith(")")
    assert not (tmp_path / "o").exists()


# -- item 6: logs a person can read, files they can share -----------------------------------
def test_progress_in_a_log_is_a_few_whole_lines():
    import io

    from supernet.progress import LineProgress, progress_bar

    log = io.StringIO()
    bar = progress_bar(4500, desc="profile cpu tiny: 450 ops x 10 rounds", unit="timing",
                       file=log, every_s=1e9)
    assert isinstance(bar, LineProgress)
    for i in range(4500):
        bar.update(1)
        if i == 2000:
            bar.write("warning: drift 7%")
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 11 <= len(lines) <= 13, lines  # the start, every 10 %, the warning
    assert "warning: drift 7%" in lines
    assert lines[0] == "profile cpu tiny: 450 ops x 10 rounds: 0/4500 timing (0%)"
    assert lines[-1].startswith("profile cpu tiny: 450 ops x 10 rounds: 4500/4500 timing (100%)")

    class Tty(io.StringIO):
        def isatty(self):
            return True

    from tqdm import tqdm

    tty = progress_bar(10, desc="x", unit="step", file=Tty())
    assert isinstance(tty, tqdm)
    tty.close()


def test_profile_resume_says_how_far_it_got(tmp_path, capsys):
    from luts.builder import build_lut
    from profilers.base import DeviceSpec, Profiler

    class Fake(Profiler):
        def __init__(self, fail_after=None):
            super().__init__(DeviceSpec("ort", "cpu"), threads=1, runs=3, warmup=0)
            self.artifact_format, self.calls, self.fail_after = "torch", 0, fail_after

        def measure(self, artifact, input_shape):
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise KeyboardInterrupt("simulated kill")
            self.calls += 1
            v = 1e-3 * (1 + sum(p.numel() for p in artifact.parameters()) / 1e4)
            return LatencyStats(v, 0.9 * v, 1.1 * v, 0.0, 3)

    out = tmp_path / "t.json"
    kw = dict(resolutions=[32], out=out, rounds=2, context=False, cache_dir=tmp_path / "c",
              progress=True)
    with pytest.raises(KeyboardInterrupt):
        build_lut(SPACE, "cpu", profiler=Fake(fail_after=15), **kw)
    first = capsys.readouterr().err
    n_ops = len(enumerate_ops(SPACE, [32]))
    assert f"{n_ops} ops x 2 rounds: 0/{2 * n_ops} timing" in first and "\r" not in first
    build_lut(SPACE, "cpu", profiler=Fake(), **kw)
    err = capsys.readouterr().err
    assert f"resuming {out}: 14 of {2 * n_ops} timings done" in err, err


def _readable_by_others(path) -> bool:
    return path.stat().st_mode & 0o777 == 0o644


def test_shared_outputs_are_0644_and_numbers_are_rounded(assets, tmp_path, run_cli):
    import os
    import re
    import stat

    from supernet.fileio import atomic_write_text, shared_file_mode

    probe = tmp_path / "probe"
    probe.write_text("")  # what a plain open() gives under this umask
    assert shared_file_mode() == stat.S_IMODE(probe.stat().st_mode)
    atomic_write_text(tmp_path / "key", "secret", mode=0o600)
    assert stat.S_IMODE((tmp_path / "key").stat().st_mode) == 0o600
    out = tmp_path / "run"
    r = run_cli(*_spec(assets, out, "--ms", "1.2", "--json"))
    assert r.exit_code == 0, r.output
    for name in ("report.json", "report.md", "model.onnx", "model.json", "config.yaml",
                 "search.png", "latency.png"):
        assert stat.S_IMODE((out / name).stat().st_mode) == shared_file_mode(), name
    text = (out / "report.json").read_text()
    assert not re.search(r"\d\.\d*(0{6}|9{6})\d", text), "unrounded float in report.json"
    assert json.loads(r.stdout)["predicted_latency_ms"] == \
        json.loads(text)["predicted_latency_ms"]
    assert os.path.isfile(out / "config.yaml")


def test_lut_show_renders_nested_metadata_as_rows(assets, tmp_path, run_cli):
    t = LatencyTable.load(assets / "lut.json")
    t.meta["drift"] = {"baseline_ms": 0.51234567, "max_abs_drift": 0.021, "checks": 12,
                       "history": [[i, 0.5 + i * 1e-3] for i in range(200)]}
    t.meta["profiler"] = {"runtime": "onnxruntime", "version": "1.23", "threads": 1}
    t.save(tmp_path / "lut.json")
    r = run_cli("lut", "show", tmp_path / "lut.json")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert max(map(len, lines)) <= 120, max(lines, key=len)
    assert any(ln.split()[:2] == ["drift.max_abs_drift", "0.021"] for ln in lines)
    assert any(ln.split()[:2] == ["profiler.runtime", "onnxruntime"] for ln in lines)
    assert not any("{" in ln for ln in lines)


# -- item 7: budgets that limit nothing, and ones nothing fits ---------------------------------
def test_specialize_says_when_the_budget_admits_every_subnet(assets, tmp_path, run_cli):
    lo, hi = LatencyTable.load(assets / "lut.json").min_max()
    r = run_cli(*_spec(assets, tmp_path / "all", "--ms", "15"))
    assert r.exit_code == 0, r.output
    note = [ln for ln in r.stderr.splitlines() if ln.startswith("note:")]
    assert len(note) == 1 and "admits every subnet" in note[0]
    assert f"{lo:.3f} (fastest) to {hi:.3f} ms (slowest)" in note[0]
    rep = json.loads((tmp_path / "all" / "report.json").read_text())
    assert rep["budget_admits_every_subnet"] is True
    assert "admits every subnet" in (tmp_path / "all" / "report.md").read_text()
    r = run_cli(*_spec(assets, tmp_path / "mid", "--ms", f"{(lo + hi) / 2:.3f}"))
    assert r.exit_code == 0 and "admits every subnet" not in r.output
    assert json.loads((tmp_path / "mid" / "report.json").read_text())[
        "budget_admits_every_subnet"] is False
    _one_line(run_cli(*_spec(assets, tmp_path / "none", "--ms", f"{lo / 2:.4f}")), 1,
              "infeasible", f"fastest subnet of {SPACE} takes {lo:.3f} ms")
    assert not (tmp_path / "none").exists()


# -- item 9: `devices` says which tables exist ------------------------------------------------
def test_devices_lists_tables_and_builtin_targets(assets, tmp_path, run_cli, monkeypatch):
    from luts.table import default_lut_path

    monkeypatch.setenv("OFA_DEPLOY_HOME", str(tmp_path / "home"))
    t = LatencyTable.load(assets / "lut.json")
    t.meta.update(threads=2, precision="fp32")
    t.save(default_lut_path("cpu", SPACE))
    r = run_cli("devices", "--no-adb")
    assert r.exit_code == 0, r.output
    cpu_row = next(ln for ln in r.stdout.splitlines() if ln.startswith("cpu "))
    assert cpu_row.endswith(f"; tables: {SPACE}")
    rows = r.stdout.split("latency tables")[1].splitlines()
    assert any(ln.split()[:3] == ["ort:cpu", SPACE, "2"] and "fp32" in ln for ln in rows), rows
    assert any(ln.startswith("note10 (built-in target)") and "ofa-mbv3-w1.2" in ln
               for ln in rows), rows
    data = json.loads(run_cli("devices", "--no-adb", "--json").stdout)
    cpu = next(d for d in data if d["spec"] == "cpu")
    assert [(x["space"], x["threads"], x["precision"]) for x in cpu["tables"]] == \
        [(SPACE, 2, "fp32")]


# -- item 8: plots worth looking at ------------------------------------------------------------
def test_pareto_front_and_zoom():
    from ofa_deploy.report import pareto_front, zoom_range

    lat = [1.0, 0.5, 0.7, 0.6, 1.2, 0.9]
    acc = [0.80, 0.60, 0.70, 0.58, 0.79, 0.75]
    assert pareto_front(lat, acc) == [(0.5, 0.6), (0.7, 0.7), (0.9, 0.75), (1.0, 0.8)]
    lo, hi, shown = zoom_range([0.7, 1.6], 15.5)  # a budget far above: zoom to the points
    assert not shown and 0.6 < lo < 0.7 and 1.6 < hi < 1.7
    lo, hi, shown = zoom_range([0.7, 1.6], 1.8)  # a budget near them: drawn inside
    assert shown and hi > 1.8


def test_latency_plots_show_every_scenario_with_its_budget(assets, tmp_path, run_cli,
                                                           monkeypatch):
    import ofa_deploy.report as report

    calls = []
    real = report.plot_pred_vs_measured

    def spy(path, rows, budgets=(), highlight=None):
        calls.append((str(path), [r["label"] for r in rows], list(budgets), highlight))
        return real(path, rows, budgets=budgets, highlight=highlight)

    monkeypatch.setattr(report, "plot_pred_vs_measured", spy)
    out = tmp_path / "two"
    r = run_cli(*_spec(assets, out, "--ms", "0.8", "--ms", "1.5"))
    assert r.exit_code == 0, r.output
    names = ["ort-cpu-0.8ms", "ort-cpu-1.5ms"]
    assert sorted(calls) == sorted([
        (str(out / "ort-cpu-0.8ms" / "latency.png"), names, [0.8], "ort-cpu-0.8ms"),
        (str(out / "ort-cpu-1.5ms" / "latency.png"), names, [1.5], "ort-cpu-1.5ms"),
        (str(out / "latency.png"), names, [0.8, 1.5], None)])
    for c in calls:
        assert (tmp_path / c[0]).stat().st_size > 1000


# -- item 2: export --arch report.json rebuilds specialize's model bit for bit ----------------
def test_export_of_a_report_reproduces_the_specialize_model(assets, tmp_path, run_cli):
    import hashlib

    from supernet.training.data import DataError, load_dataset

    try:
        load_dataset("fashion-mnist")
    except DataError as exc:
        pytest.skip(f"needs the bundled default's data: {exc}")
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
    run = tmp_path / "run"
    r = run_cli("specialize", "--lut", assets / "lut.json", "--ms", "1.2", "--calib-images",
                "48", "--eval-images", "20", "--generations", "2", "--population", "8", "--aging-islands", "0",
                "--runs", "2", "--warmup", "0", "--threads", "1", "--formats", "onnx",
                "--out", run)
    assert r.exit_code == 0, r.output
    rep = json.loads((run / "report.json").read_text())
    cal = rep["bn_calibration"]
    assert (cal["data"], cal["images"], cal["split"], cal["order"], cal["memory_format"]) == \
        ("fashion-mnist", 48, "holdout", "first images, in order", "channels_last")
    r = run_cli("export", "--arch", run / "report.json", "--format", "onnx", "--out",
                tmp_path / "again")
    assert r.exit_code == 0, r.output
    assert "48 images of fashion-mnist" in r.stderr
    assert sha(tmp_path / "again" / "model.onnx") == sha(run / "model.onnx")
    # and the check can fail: other calibration images give other weights
    r = run_cli("export", "--arch", run / "report.json", "--format", "onnx", "--calib-images",
                "40", "--out", tmp_path / "other")
    assert r.exit_code == 0, r.output
    assert sha(tmp_path / "other" / "model.onnx") != sha(run / "model.onnx")


def test_profile_reuses_the_thread_count_of_an_existing_table(assets, tmp_path):
    """The tour's `profile --device cpu` after `specialize` built the table with 1 thread on a
    2-core machine: the existing table's threads are the default, not a settings clash."""
    import sys

    import ofa_deploy.cli  # noqa: F401
    prof = sys.modules["ofa_deploy.cli.profile"]
    t = LatencyTable.load(assets / "lut.json")
    t.meta["threads"] = 1
    t.save(tmp_path / "t.json")
    assert prof._existing_threads(tmp_path / "t.json") == 1
    assert prof._existing_threads(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text("{")
    assert prof._existing_threads(tmp_path / "bad.json") is None


def test_mismatched_targets_and_budgets_is_a_usage_error(assets, tmp_path, run_cli):
    r = run_cli(*_spec(assets, tmp_path / "o", "--target", "cpu", "--target", "tflite:cpu",
                       "--ms", "1", "--ms", "2", "--ms", "3"))
    _one_line(r, 2, "2 targets and 3 budgets")
    assert not (tmp_path / "o").exists()


# -- item 5: bench --resume never overwrites a file it cannot resume from ---------------------
def test_bench_resume_refuses_a_file_it_cannot_resume_from(assets, tmp_path, run_cli):
    from supernet import ArchConfig, extract_subnet
    from supernet.export import export_onnx

    sp = get_space(SPACE)
    arts = tmp_path / "arts"
    export_onnx(extract_subnet(Supernet(sp), ArchConfig.min(sp)).eval(), (1, 3, 32, 32),
                arts / "model.onnx")
    out = tmp_path / "r.json"
    bench = ["bench", "-a", arts, "-d", "cpu", "--runs", "2", "--warmup", "0", "--threads", "1",
             "--json", out, "-q"]
    for text, needle in (('{"results": [', "cannot read"),
                         ('{"hello": 1}', "not an ofa-deploy bench results file")):
        out.write_text(text)
        _one_line(run_cli(*bench, "--resume"), 1, "--resume:", str(out), needle,
                  "left as it is")
        assert out.read_text() == text  # untouched
    r = run_cli(*bench)  # a real file, then resumed with other settings
    assert r.exit_code == 0, r.output
    before = out.read_text()
    _one_line(run_cli(*bench, "--runs", "3", "--resume"), 1,
              "other settings", "runs=2 there, 3 now")
    assert out.read_text() == before
    r = run_cli(*bench, "--resume")  # same settings: resumes
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["results"][0]["resumed"] is True
