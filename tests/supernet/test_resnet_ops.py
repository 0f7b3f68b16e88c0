"""The ResNet family's ops (supernet.resnet_ops): the enumeration holds exactly the ops archs
run, op MACs / params add up to the analytic cost, the vectorised grid equals the per-arch op
sum and its exact extremes equal brute force, op models compute their op's shapes, the family
registry, and the identity-shortcut fix for stems as wide as the first stage."""
from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest
import torch

from supernet.op_families import op_family, resolve_space
from supernet.ops import OpKey
from supernet.resnet import ResNetSupernet, extract_resnet_subnet
from supernet.resnet_ops import (ResNetOpGrid, resnet_arch_ops, resnet_batch,
                                 resnet_enumerate_ops)
from supernet.resnet_space import ResNetArch, ResNetSpace, resnet_arch_cost
from supernet.space import SpaceError

# 2 widths x 2 expands, two stages of 1 + {0, 1} blocks: 1152 subnets per resolution
TINY = ResNetSpace(name="resnet-tiny-test", description="tiny ResNet for tests",
                   resolutions=(32, 40), width_mult_choices=(0.5, 1.0),
                   expand_choices=(0.25, 0.5), depth_choices=(0, 1), base_depths=(1, 1),
                   base_stage_widths=(32, 64), stage_strides=(1, 2), stem_base_width=16,
                   num_classes=10)


def _all_archs(sp: ResNetSpace, r: int):
    """Every distinct subnet of ``sp`` at ``r`` (skipped blocks' expand canonical)."""
    W, E = range(len(sp.width_mult_choices)), sp.expand_choices
    out = set()
    for d in itertools.product((min(sp.depth_choices), max(sp.depth_choices)),
                               *[sp.depth_choices] * sp.num_stages):
        n_run = [b + x for b, x in zip(sp.base_depths, d[1:])]
        for w in itertools.product(W, repeat=sp.num_widths):
            for es in itertools.product(E, repeat=sum(n_run)):
                e, it = [], iter(es)
                for s, n in enumerate(sp.stage_block_counts):
                    e += [next(it) if p < n_run[s] else E[0] for p in range(n)]
                out.add(ResNetArch(d, e, w, r))
    return sorted(out, key=lambda a: a.to_string(sp))


def _value(op: OpKey, r: int) -> float:
    """A deterministic positive pseudo-latency per (op, resolution)."""
    return 0.1 + zlib.crc32(f"{op.to_string()}@{r}".encode()) % 1000 / 100.0


def test_enumeration_is_exactly_the_ops_archs_run():
    archs = _all_archs(TINY, 32)
    assert len(archs) == TINY.num_subnets()
    seen = set()
    for a in archs:
        seen.update(resnet_arch_ops(TINY, a))
    assert seen == set(resnet_enumerate_ops(TINY, [32]))


def test_random_ofa_resnet50_archs_run_enumerated_ops_with_the_reference_cost():
    rng = np.random.default_rng(0)
    every = set(resnet_enumerate_ops("ofa-resnet50"))
    assert len(resnet_enumerate_ops("ofa-resnet50", [128])) == 162
    for _ in range(60):
        a = ResNetArch.sample("ofa-resnet50", rng)
        ops = resnet_arch_ops("ofa-resnet50", a)
        assert set(ops) <= every
        assert ops[0].kind == "resnet_stem" and ops[0].skip == (not a.skip_stem)
        assert [o.kind for o in ops[-2:]] == ["pool", "classifier"]
        assert sum(o.kind == "bottleneck" for o in ops) == len(a.active_blocks("ofa-resnet50"))
        # each block reads what the one before it wrote
        for prev, op in zip(ops, ops[1:]):
            assert (op.h, op.cin) == (prev.out_h, prev.cout)
        cost = resnet_arch_cost("ofa-resnet50", a)
        assert sum(o.macs for o in ops) == cost["macs"]
        assert sum(o.params for o in ops) == cost["params"]


def test_grid_equals_the_op_sum_and_its_extremes_equal_brute_force():
    g = ResNetOpGrid(TINY, _value, [32, 40])
    for r in (32, 40):
        archs = _all_archs(TINY, r)
        direct = np.array([sum(_value(op, r) for op in resnet_arch_ops(TINY, a)) for a in archs])
        np.testing.assert_allclose(g.evaluate(resnet_batch(TINY, archs)), direct, rtol=1e-12)
        ri = g.resolutions.index(r)
        lo, lo_arch = g.extreme(ri, True)
        hi, hi_arch = g.extreme(ri, False)
        assert lo == pytest.approx(direct.min()) and hi == pytest.approx(direct.max())
        assert sum(_value(op, r) for op in resnet_arch_ops(TINY, lo_arch)) == pytest.approx(lo)
        assert sum(_value(op, r) for op in resnet_arch_ops(TINY, hi_arch)) == pytest.approx(hi)
    scaled = g.affine([2.0, 3.0], [0.5, 1.0])
    a = _all_archs(TINY, 40)[7]
    assert scaled.evaluate(resnet_batch(TINY, [a]))[0] == pytest.approx(
        3.0 * g.evaluate(resnet_batch(TINY, [a]))[0] + 1.0)
    with pytest.raises(Exception, match=r"resolution\(s\) \[48\] not covered"):
        g.evaluate(resnet_batch(TINY, [a.with_resolution(48)]))


@pytest.mark.parametrize("kind", ["resnet_stem", "bottleneck", "pool", "classifier"])
def test_op_models_compute_their_op(kind):
    from supernet.op_models import build_op_model, op_input_shape

    for op in [o for o in resnet_enumerate_ops(TINY, [40]) if o.kind == kind][:4]:
        x = torch.randn(op_input_shape(op), generator=torch.Generator().manual_seed(1))
        folded = build_op_model(op, TINY, seed=3)
        plain = build_op_model(op, TINY, seed=3, fold_bn=False)
        with torch.no_grad():
            y = folded(x)
            torch.testing.assert_close(y, plain(x), rtol=1e-4, atol=1e-4)
        want = (1, op.cout) if kind == "classifier" else (1, op.cout, op.out_h, op.out_h)
        assert tuple(y.shape) == want
        if kind != "pool":  # folding removed every BatchNorm
            assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())


def test_family_registry():
    assert op_family("ofa-resnet50").name == "resnet"
    assert op_family(TINY).name == "resnet"
    assert op_family("ofa-mbv3-tiny").name == "mobilenet"
    fam, sp = resolve_space("ofa-resnet50")
    assert sp.name == "ofa-resnet50" and fam.enumerate_ops is resnet_enumerate_ops
    with pytest.raises(SpaceError, match="unknown space 'nope'; known spaces: .*ofa-resnet50"):
        op_family("nope")


def test_stem_as_wide_as_the_first_stage_keeps_a_conv_shortcut():
    """Stem widths equal to stage 0's (the width lists compare equal): the first block must not
    take an identity shortcut, since the stem and the stage pick their widths independently."""
    sp = ResNetSpace(name="resnet-equal-widths", description="stem as wide as stage 0",
                     resolutions=(32,), width_mult_choices=(0.5, 1.0), expand_choices=(0.25,),
                     depth_choices=(0, 1), base_depths=(1, 1), base_stage_widths=(64, 128),
                     stage_strides=(1, 2), stem_base_width=64, num_classes=10)
    assert sp.stem_widths == sp.stage_widths(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = ResNetSupernet(sp).eval()
    assert not net.blocks[0].identity
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for w1, w2 in itertools.product(range(2), repeat=2):  # stem width, stage 0 width
        a = ResNetArch((1, 1, 0), (0.25,) * sp.num_blocks, (1, w1, w2, 1), 32)
        with torch.no_grad():
            torch.testing.assert_close(extract_resnet_subnet(net, a)(x), net(x, a))
        ops = resnet_arch_ops(sp, a)
        assert not ops[1].skip and (ops[1].cin, ops[1].cout) == (sp.stem_widths[w1],
                                                                   sp.stage_widths(0)[w2])
