"""Two CPU processes under torchrun: same subnets on every rank, gradients averaged."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import SPACE, TINY

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_run(tmp_path):
    cfg = dict(TINY, batch_size=16)
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "ofa_deploy", "train", "--space", SPACE, "--data", "synthetic", "--out", str(out),
           "--config", str(cfg_path), "--phases", "teacher,kernel,depth", "--no-progress",
           "--threads", "1", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=240)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    r0 = json.loads((out / "dist" / "rank0.json").read_text())
    r1 = json.loads((out / "dist" / "rank1.json").read_text())
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["global_step"] == r1["global_step"] > 0
    assert r0["arch_chain"] == r1["arch_chain"]  # every step: same subnets, same resolution
    # Each rank trained on different images; equal parameters mean averaged gradients.
    assert r0["param_digest"] == r1["param_digest"]
    assert r0["model_digest"] == r1["model_digest"]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["world_size"] == 2
    # Metrics are written once (rank 0), not once per rank.
    stages = [json.loads(x)["stage"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert stages.count("teacher") == 1
