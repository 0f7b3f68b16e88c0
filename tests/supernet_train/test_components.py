"""Sampler, KD loss, dropout, schedule, BN re-calibration, config validation."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from supernet import ArchConfig, Supernet, extract_subnet, get_space
from supernet.bn import calibrate_bn
from supernet.training.components import ExplicitDropout, WarmupCosine, kd_loss
from supernet.training.config import ConfigError, TrainConfig, parse_phases
from supernet.training.sampler import SubnetSampler, phase_choices

from .conftest import SPACE, tiny_config

SP = get_space(SPACE)


def test_phase_choices_follow_progressive_shrinking():
    K, E, D = SP.kernel_choices, SP.expand_choices, SP.depth_choices
    assert phase_choices(SP, "teacher").elastic == ()
    assert phase_choices(SP, "kernel") == phase_choices(SP, "kernel", 1)
    assert phase_choices(SP, "kernel").ks == K and phase_choices(SP, "kernel").e == (E[-1],)
    assert phase_choices(SP, "depth", 1).d == D[-2:] and phase_choices(SP, "depth", 2).d == D
    assert phase_choices(SP, "expand", 1).e == E[-2:] and phase_choices(SP, "expand", 2).e == E
    assert phase_choices(SP, "expand", 1).d == D
    assert len(phase_choices(SP, "full").corners(SP, [32, 64])) == 16


def test_uniform_sampler_respects_stage_and_resolution_weights():
    s = SubnetSampler(SP, 3, resolutions=[32, 48, 64], resolution_probs=[0.5, 0.0, 0.5])
    ch = phase_choices(SP, "depth", 1)
    seen_d, seen_r = set(), set()
    for _ in range(40):
        r, archs = s.sample_step(ch, 2)
        assert len(archs) == 2 and all(a.r == r for a in archs)
        for a in archs:
            a.validate(SP)
            assert {a.e[i] for i in a.active_blocks(SP)} == {max(SP.expand_choices)}
            seen_d |= set(a.d)
        seen_r.add(r)
    assert seen_d == {3, 4} and seen_r == {32, 64}


def test_sandwich_sampler_has_largest_and_smallest():
    s = SubnetSampler(SP, 0, strategy="sandwich")
    ch = phase_choices(SP, "full")
    r, archs = s.sample_step(ch, 4)
    assert len(archs) == 4
    assert archs[0] == ArchConfig.max(SP, r) and archs[1] == ArchConfig.min(SP, r)
    # A stage with nothing elastic trains one network whatever the strategy.
    assert len(s.sample_step(phase_choices(SP, "teacher"), 4)[1]) == 1


def test_sampler_state_round_trip_continues_identically():
    a = SubnetSampler(SP, 11)
    ch = phase_choices(SP, "full")
    for _ in range(3):
        a.sample_step(ch, 2)
    b = SubnetSampler.from_state(SP, a.get_state())
    assert [a.sample_step(ch, 2) for _ in range(5)] == [b.sample_step(ch, 2) for _ in range(5)]
    c = SubnetSampler(SP, 12)
    assert SubnetSampler(SP, 11).sample_step(ch, 2) != c.sample_step(ch, 2)


def test_kd_loss_is_soft_target_cross_entropy():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 10, generator=g, requires_grad=True)
    t = torch.randn(6, 10, generator=g)
    ref = F.cross_entropy(s, F.softmax(t, 1))
    assert torch.allclose(kd_loss(s, t), ref, atol=1e-6)
    # T^2-scaled, softened by the temperature.
    ref2 = F.cross_entropy(s / 2, F.softmax(t / 2, 1)) * 4
    assert torch.allclose(kd_loss(s, t, 2.0), ref2, atol=1e-6)
    # Its gradient vanishes when the student matches the teacher; the teacher gets none.
    tt = t.clone().requires_grad_(True)
    ss = t.clone().requires_grad_(True)
    kd_loss(ss, tt).backward()
    assert ss.grad.abs().max() < 1e-6 and tt.grad is None
    kd_loss(s, t).backward()
    assert s.grad.abs().max() > 1e-3


def test_explicit_dropout_uses_only_its_generator():
    x = torch.ones(4, 64)
    d1 = ExplicitDropout(0.5, torch.Generator().manual_seed(1))
    d2 = ExplicitDropout(0.5, torch.Generator().manual_seed(1))
    before = torch.get_rng_state()
    y1, y2 = d1(x), d2(x)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(y1, y2) and set(y1.unique().tolist()) == {0.0, 2.0}
    d1.eval()
    assert torch.equal(d1(x), x)


def test_warmup_cosine_schedule():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    s = WarmupCosine(opt, 0.4, total_steps=12, warmup_steps=2, warmup_lr=0.0)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(12):
        s.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(0.2) and lrs[2] == pytest.approx(0.4)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] == pytest.approx(0.0)
    t = WarmupCosine(opt, 0.4, 12, 2)
    t.load_state_dict(s.state_dict())
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)


def test_bn_calibration_is_a_cumulative_average():
    net = Supernet(SP)
    sub = extract_subnet(net, ArchConfig.min(SP, 32))
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 3, 32, 32, generator=g) * 2 + 1 for _ in range(3)]
    bn = sub.first_conv.bn
    momentum = bn.momentum
    rng_before = torch.get_rng_state()
    calibrate_bn(sub, batches)
    assert not sub.training and bn.momentum == momentum
    assert torch.equal(torch.get_rng_state(), rng_before)  # dropout stayed in eval mode
    with torch.no_grad():
        feats = [sub.first_conv.conv(b) for b in batches]
    mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    assert torch.allclose(bn.running_mean, mean, atol=1e-5)
    assert int(bn.num_batches_tracked) == 3


def test_config_validation_names_the_field():
    cases = [
        ({"phases": {"kernel": {"lr": -1}}}, "phases.kernel.lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"sampler": "random"}, "sampler"),
        ({"kernal": 1}, "kernal"),
        ({"phases": {"depth": {"epochs": [1, 2, 3]}}}, "phases.depth.epochs"),
        ({"resolutions": [33]}, "resolutions"),
        ({"resolutions": [32, 64], "resolution_weights": [1]}, "resolution_weights"),
        ({"loss": {"kd_weight": "x"}}, "loss.kd_weight"),
        ({"amp": "yes"}, "amp"),
    ]
    for over, field in cases:
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            TrainConfig.for_space(SPACE, overrides=over)
    sandwich = TrainConfig.for_space(SPACE, overrides={"sampler": "sandwich"})
    with pytest.raises(ConfigError, match=r"phases\.kernel\.subnets_per_step"):
        sandwich.stages(("teacher", "kernel"))
    with pytest.raises(ConfigError, match="unknown phase"):
        parse_phases("teacher,width")
    assert parse_phases("teacher, kernel") == ("teacher", "kernel")


def test_config_state_round_trip_and_stages():
    cfg = tiny_config()
    again = TrainConfig.from_state(cfg.get_state())
    assert again == cfg
    names = [s.name for s in cfg.stages(("teacher", "kernel", "depth", "expand"))]
    assert names == ["teacher", "kernel", "depth_1", "depth_2", "expand_1", "expand_2"]
    ex = cfg.stages(("expand",))
    assert [s.lr for s in ex] == [0.04, 0.05] and [s.subnets_per_step for s in ex] == [2, 2]
    # Setting resolutions without weights drops the default's per-resolution weights.
    assert TrainConfig.for_space(SPACE, overrides={"resolutions": [32, 40]}).resolution_probs is None
    assert TrainConfig.for_space(SPACE).resolution_probs is not None
