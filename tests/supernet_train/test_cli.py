"""`ofa-deploy train` / `eval` through click: clear one-line errors, JSON output, kill -9."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from supernet.arch import ArchConfig
from supernet.bn import evaluate_subnet
from supernet.checkpoint import SUPERNETS, load_state_dict_file, load_supernet
from supernet.cost import arch_cost, supernet_params
from supernet.training.data import FASHION_MNIST_DIR, load_dataset
from supernet.fileio import sha256_file
from supernet.training.components import model_digest
from supernet.training.trainer import Trainer

from .conftest import SPACE, TINY, tiny_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_yaml(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(TINY))
    return p


def one_line_error(res, *needles):
    assert res.exit_code != 0, res.output
    assert "Traceback" not in res.output
    err = res.output.strip().splitlines()[-1]
    assert err.startswith("Error") or "Invalid value" in res.output, res.output
    for n in needles:
        assert n in res.output, res.output


def test_bad_inputs_give_clear_errors(run_cli, tmp_path, tiny_yaml):
    base = ["train", "--space", SPACE, "--out", tmp_path / "run"]
    one_line_error(run_cli(*base, "--data", f"fashion-mnist:{tmp_path / 'none'}"),
                   "apt-get install -y dataset-fashion-mnist")
    one_line_error(run_cli(*base, "--data", "cifar"), "unknown data spec")
    one_line_error(run_cli(*base, "--data", f"imagefolder:{tmp_path / 'none'}"), "does not exist")
    bad = tmp_path / "bad.yaml"
    bad.write_text("phases:\n  kernel:\n    lr: -0.1\n")
    one_line_error(run_cli(*base, "--data", "synthetic", "--config", bad), "phases.kernel.lr")
    bad.write_text("batch_sise: 3\n")
    one_line_error(run_cli(*base, "--data", "synthetic", "--config", bad), "batch_sise")
    bad.write_text("[1, 2\n")
    one_line_error(run_cli(*base, "--data", "synthetic", "--config", bad), "not valid YAML")
    one_line_error(run_cli(*base, "--data", "synthetic", "--config", tmp_path / "missing.yaml"),
                   "cannot read config")
    one_line_error(run_cli(*base, "--data", "synthetic", "--phases", "teacher,width"),
                   "unknown phase")
    one_line_error(run_cli(*base, "--data", "synthetic", "--resume", "--config", tiny_yaml),
                   "nothing to resume")
    one_line_error(run_cli("train", "--space", "nope", "--data", "synthetic", "--out", tmp_path),
                   "unknown space")
    one_line_error(run_cli("eval", "--supernet", tmp_path / "x.pt", "--data", "synthetic"),
                   "no checkpoint file")


def test_train_then_eval_json(run_cli, tmp_path, tiny_yaml):
    out = tmp_path / "run"
    res = run_cli("train", "--space", SPACE, "--data", "synthetic", "--out", out, "--config",
                  tiny_yaml, "--phases", "teacher,kernel", "--no-progress", "--device", "cpu")
    assert res.exit_code == 0, res.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["phases"] == ["teacher", "kernel"] and saved["config"]["batch_size"] == 8
    again = run_cli("train", "--space", SPACE, "--data", "synthetic", "--out", out)
    one_line_error(again, "already holds a run")
    # --resume alone takes the run's own config and phases; a finished run has nothing left.
    res = run_cli("train", "--space", SPACE, "--data", "synthetic", "--out", out, "--resume",
                  "--no-progress", "--device", "cpu")
    assert res.exit_code == 0 and "done" in res.output, res.output
    one_line_error(run_cli("train", "--space", SPACE, "--data", "synthetic", "--out", out,
                           "--resume", "--phases", "teacher"), "phases")
    ds = load_dataset("synthetic")
    net = load_supernet(out / "supernet.pt")
    for arch in ("min", "max"):
        res = run_cli("eval", "--supernet", out / "supernet.pt", "--arch", arch, "--data",
                      "synthetic", "--split", "val", "--calib-images", "32", "--json",
                      "--device", "cpu")
        assert res.exit_code == 0, res.output
        data = json.loads(res.output)
        assert 0.0 <= data["accuracy"] <= 1.0 and data["samples"] == 128
        # the CPU path runs onnxruntime; it must agree with the network run by torch
        assert data["backend"] == "onnxruntime"
        ref = evaluate_subnet(net, ArchConfig.parse(arch, SPACE), ds.split("val"), ds.holdout,
                              calib_images=32, batch_size=256)
        assert abs(data["accuracy"] - ref["accuracy"]) <= 1 / 128
        assert data["loss"] == pytest.approx(ref["loss"], rel=1e-3, abs=1e-4)
    one_line_error(run_cli("eval", "--supernet", out / "supernet.pt", "--arch", "r99-d2", "--data",
                           "synthetic"), "arch")


def test_default_supernet_is_registered_and_loads():
    assert "default" in SUPERNETS
    path = Path(SUPERNETS["default"]())
    assert path.is_file() and path.stat().st_size < 8 * 2**20
    net = load_supernet("default")
    assert net.space.name == SPACE
    assert net.checkpoint_metadata["data"] == "fashion-mnist"
    raw = load_state_dict_file(path)
    assert raw["state_dict"]["classifier.linear.weight"].dtype.itemsize == 2  # fp16 on disk


def _default_card():
    path = Path(SUPERNETS["default"]())
    return path, json.loads(path.with_name(path.stem + ".test.json").read_text())


def test_default_supernet_card_matches_the_weights():
    """The model card's params/MACs and file facts, recomputed from what ships."""
    path, doc = _default_card()
    assert doc["weights"]["bytes"] == path.stat().st_size
    assert doc["weights"]["sha256"] == sha256_file(path)
    card = load_supernet("default").checkpoint_metadata["card"]
    assert card["supernet_params"] == supernet_params(SPACE)
    assert set(card["subnets"]) == set(doc["results"]) == {"largest", "middle", "smallest"}
    for name, sub in card["subnets"].items():
        arch = ArchConfig.from_string(sub["arch"], SPACE)
        assert (sub["params"], sub["macs"]) == tuple(arch_cost(SPACE, arch)[k]
                                                     for k in ("params", "macs"))
        assert doc["results"][name]["arch"] == sub["arch"]
        assert doc["results"][name]["samples"] == 10000  # the whole test set
    assert card["subnets"]["largest"]["arch"] == ArchConfig.max(SPACE).to_string(SPACE)
    assert card["subnets"]["smallest"]["arch"] == ArchConfig.min(SPACE).to_string(SPACE)


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR), reason="dataset-fashion-mnist absent")
@pytest.mark.parametrize("name", ["smallest", "largest"])
def test_default_supernet_accuracy_reproduces(run_cli, name):
    """Re-run the card's quick check (first 500 test images): the same accuracy, up to an
    image or two that float rounding on another CPU may flip."""
    _, doc = _default_card()
    rec = doc["results"][name]
    chk = rec["check"]
    res = run_cli("eval", "--supernet", "default", "--arch", rec["arch"], "--data",
                  "fashion-mnist", "--images", str(chk["images"]), "--calib-images",
                  str(chk["calib_images"]), "--json")
    assert res.exit_code == 0, res.output
    assert abs(json.loads(res.output)["accuracy"] - chk["accuracy"]) <= 2 / chk["images"]


def test_kill_9_then_resume_matches_uninterrupted(synthetic, tmp_path, tiny_yaml):
    cfg = dict(TINY, checkpoint_every=1)
    tiny_yaml.write_text(yaml.safe_dump(cfg))
    phases = ("teacher", "kernel", "depth")  # 9 steps
    ref = Trainer(None, synthetic, tiny_config(checkpoint_every=1), tmp_path / "ref",
                  phases=phases, data_spec="synthetic", progress=False)
    ref.run()
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ofa_deploy", "train", "--space", SPACE, "--data", "synthetic",
           "--out", str(out), "--config", str(tiny_yaml), "--phases", ",".join(phases),
           "--no-progress", "--threads", "1", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 120
    log = out / "log.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 2:  # a few steps in
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    res = subprocess.run(cmd + ["--resume"], cwd=REPO, env=env, capture_output=True, timeout=180)
    assert res.returncode == 0, res.stderr.decode()[-2000:]
    got = load_supernet(out / "supernet.pt")
    want = load_supernet(tmp_path / "ref" / "supernet.pt")
    assert model_digest(got) == model_digest(want)
    assert (out / "metrics.jsonl").read_text() == (tmp_path / "ref" / "metrics.jsonl").read_text()
