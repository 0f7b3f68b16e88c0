"""The trainer end to end on synthetic data: phases, metrics, checkpoints, exact resume."""
from __future__ import annotations

import json

import pytest
import torch

from supernet.checkpoint import load_state_dict_file, load_supernet
from supernet.model import Supernet
from supernet.training.trainer import Trainer, TrainError

from .conftest import PS_PHASES, SPACE, tiny_config


def make(ds, out, cfg=None, phases=PS_PHASES):
    return Trainer(None, ds, cfg or tiny_config(), out, phases=phases, data_spec="synthetic",
                   progress=False)


def read_jsonl(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_progressive_shrinking_runs_every_phase(synthetic, tmp_path, monkeypatch):
    sorts = []
    orig = Supernet.sort_channels
    monkeypatch.setattr(Supernet, "sort_channels",
                        lambda self, stage=0: (sorts.append(stage), orig(self, stage))[1])
    t = make(synthetic, tmp_path)
    out = t.run()
    assert out["complete"] and out["global_step"] == 3 + 2 + 2 + 2 + 2 + 3
    assert sorts == [0, 1]  # channels re-sorted at the start of each expand stage
    metrics = read_jsonl(tmp_path / "metrics.jsonl")
    per_stage = {}
    for m in metrics:
        per_stage[m["stage"]] = per_stage.get(m["stage"], 0) + 1
        assert 0.0 <= m["accuracy"] <= 1.0 and m["samples"] == 16 and m["r"] == 32
    # min/max of every dimension elastic in the stage, at one eval resolution
    assert per_stage == {"teacher": 1, "kernel": 2, "depth_1": 4, "depth_2": 4, "expand_1": 8,
                         "expand_2": 8}
    d1 = [m for m in metrics if m["stage"] == "depth_1"]
    assert {m["min_d"] for m in d1} == {3, 4}  # depth stage 1 opens only the two deepest
    log = read_jsonl(tmp_path / "log.jsonl")
    assert {r["stage"] for r in log} == {"teacher", "kernel", "depth_1", "depth_2", "expand_1",
                                         "expand_2"}
    assert all(r["loss"] > 0 and r["images_per_s"] > 0 for r in log)
    net = load_supernet(tmp_path / "supernet.pt")
    assert net.checkpoint_metadata["complete"] and net.space.name == SPACE
    assert (tmp_path / "teacher.pt").exists()
    cfg_doc = (tmp_path / "config.yaml").read_text()
    assert "kd_weight" in cfg_doc and "phases" in cfg_doc
    # The trained supernet moved away from its teacher after the teacher phase.
    teacher = load_supernet(tmp_path / "teacher.pt")
    assert not torch.equal(teacher.classifier.linear.weight, net.classifier.linear.weight)


def test_full_phase_with_sandwich_sampler(synthetic, tmp_path):
    cfg = tiny_config(sampler="sandwich", eval={"images": 8, "calib_images": 8})
    t = make(synthetic, tmp_path, cfg, phases=("full",))
    assert t.run()["complete"]
    metrics = read_jsonl(tmp_path / "metrics.jsonl")
    assert len(metrics) == 8  # ks x e x d corners at one resolution
    # No teacher stage in this run: the starting network was snapshotted as the KD teacher.
    assert (tmp_path / "teacher.pt").exists()


def _assert_same(a, b, path=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def _strip_timing(rows):
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "elapsed_s")} for r in rows]


def test_resume_restores_exact_state(synthetic, tmp_path):
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a = make(synthetic, a_dir).run(max_steps=10)  # uninterrupted up to step 10 (in expand_1)
    assert not a["complete"] and a["global_step"] == 10
    # Interrupted mid-kernel, then exactly at the depth/expand boundary, then to step 10.
    assert make(synthetic, b_dir).run(max_steps=4)["global_step"] == 4
    assert make(synthetic, b_dir).run(resume=True, max_steps=9)["global_step"] == 9
    assert make(synthetic, b_dir).run(resume=True, max_steps=10)["global_step"] == 10
    ca = load_state_dict_file(a_dir / "checkpoint.pt")
    cb = load_state_dict_file(b_dir / "checkpoint.pt")
    assert ca["position"] == {"stage": 4, "step": 1, "global_step": 10, "setup_done": True}
    for key in ("model", "optimizer", "scheduler", "sampler", "rng", "position", "logs",
                "config"):
        _assert_same(ca[key], cb[key], key)
    assert (a_dir / "metrics.jsonl").read_text() == (b_dir / "metrics.jsonl").read_text()
    assert _strip_timing(read_jsonl(a_dir / "log.jsonl")) == \
        _strip_timing(read_jsonl(b_dir / "log.jsonl"))
    # a run's checkpoint also loads as a supernet (eval/export while training goes on)
    mid = load_supernet(b_dir / "checkpoint.pt")
    assert mid.space.name == SPACE
    assert mid.checkpoint_metadata["from_training_checkpoint"]["global_step"] == 10
    _assert_same({k: v for k, v in mid.state_dict().items()}, dict(cb["model"]), "model")


def test_resume_refuses_mismatches(synthetic, tmp_path):
    make(synthetic, tmp_path).run(max_steps=2)
    with pytest.raises(TrainError, match="already holds a run"):
        make(synthetic, tmp_path).run()
    with pytest.raises(TrainError, match="config differs"):
        make(synthetic, tmp_path, tiny_config(seed=5)).run(resume=True)
    with pytest.raises(TrainError, match="phases"):
        make(synthetic, tmp_path, phases=("teacher",)).run(resume=True)
    with pytest.raises(TrainError, match="nothing to resume"):
        make(synthetic, tmp_path / "empty").run(resume=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp_steps(synthetic, tmp_path):
    t = Trainer(None, synthetic, tiny_config(), tmp_path, phases=("teacher", "kernel"),
                data_spec="synthetic", device="cuda", progress=False)
    assert t.amp and t.run()["complete"]
    ck = load_state_dict_file(tmp_path / "checkpoint.pt")
    assert ck["position"]["stage"] == 2
