"""The elastic supernet, subnet extraction and channel sorting."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
import torch.nn as nn

from supernet import ArchConfig, ArchError, Subnet, Supernet, extract_subnet, get_space, list_spaces
from supernet.layers import ElasticBN, ElasticConv2d, ElasticDWConv, ElasticSE

# (space, number of random archs, resolutions): breadth on the tiny space, a few full-size ones
EQUALITY_CASES = [
    ("ofa-mbv3-tiny", 16, (32, 40, 48, 64)),
    ("ofa-mbv3-w1.0", 3, (128, 160, 224)),
    ("ofa-mbv3-w1.2", 2, (160, 224)),
]


def _x(r: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 3, r, r)).astype(np.float32))


def _assert_same(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    scale = max(1.0, float(b.abs().max()))
    err = float((a - b).abs().max())
    assert err <= 2e-5 * scale, f"{what}: max diff {err:.3g} at scale {scale:.3g}"


@pytest.mark.parametrize("space,n_archs,resolutions", EQUALITY_CASES)
def test_extracted_subnet_equals_supernet(filled_supernet, space, n_archs, resolutions):
    net = filled_supernet(space)
    rng = np.random.default_rng(zlib.crc32(space.encode()))
    archs = [ArchConfig.sample(space, rng) for _ in range(n_archs)]
    if space == "ofa-mbv3-tiny":
        archs += [ArchConfig.max(space), ArchConfig.min(space)]
    for i, arch in enumerate(archs):
        r = resolutions[i % len(resolutions)]
        arch = arch.with_resolution(r)
        sub = extract_subnet(net, arch)
        assert isinstance(sub, Subnet) and not sub.training
        x = _x(r, n=2 if space == "ofa-mbv3-tiny" else 1)
        with torch.no_grad():
            _assert_same(sub(x), net(x, arch), f"{space} {arch.to_string(space)}")
        assert len(sub.blocks) == 1 + sum(arch.d)


def test_supernet_default_is_the_largest_subnet(filled_supernet):
    net = filled_supernet("ofa-mbv3-tiny")
    x = _x(40)
    with torch.no_grad():
        assert torch.equal(net(x), net(x, ArchConfig.max("ofa-mbv3-tiny", 40)))


def test_extracted_subnet_has_only_standard_modules(filled_supernet):
    space = "ofa-mbv3-tiny"
    net = filled_supernet(space)
    sub = extract_subnet(net, ArchConfig.sample(space, np.random.default_rng(1)))
    elastic = (ElasticBN, ElasticConv2d, ElasticDWConv, ElasticSE)
    assert not any(isinstance(m, elastic) for m in sub.modules())
    leaves = {type(m) for m in sub.modules() if not list(m.children())}
    assert leaves <= {nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.ReLU, nn.Hardswish,
                      nn.Hardsigmoid, nn.Dropout, nn.Identity}
    # extraction copies: changing the subnet leaves the supernet alone
    with torch.no_grad():
        sub.first_conv.conv.weight.add_(1.0)
        sub.blocks[1].conv.depth_conv.conv.weight.zero_()
    assert not torch.equal(sub.first_conv.conv.weight, net.first_conv.conv.weight)
    assert net.blocks[1].conv.depth_conv["conv"].conv.weight.abs().sum() > 0


def test_extract_rejects_a_bad_arch():
    net = Supernet("ofa-mbv3-tiny")
    # a conv net runs at any input size: resolutions outside the search range are extracted
    # (exported, measured); LUTs and predictors refuse them themselves
    assert extract_subnet(net, ArchConfig.max("ofa-mbv3-tiny").with_resolution(224)).arch.r == 224
    with pytest.raises(ArchError, match="resolution must be positive"):
        extract_subnet(net, ArchConfig.max("ofa-mbv3-tiny").with_resolution(0))
    with pytest.raises(ArchError, match="e has 19 entries, space ofa-mbv3-tiny has 20 blocks"):
        extract_subnet(net, ArchConfig(ks=(7,) * 20, e=(6,) * 19, d=(4,) * 5, r=32))


def test_training_mode_matches_and_updates_supernet_statistics(filled_supernet):
    """In training mode a subnet uses batch statistics; the supernet must compute the same and
    write the running statistics into the slice the subnet owns."""
    space = "ofa-mbv3-tiny"
    net = filled_supernet(space)
    arch = ArchConfig.sample(space, np.random.default_rng(5)).with_resolution(32)
    sub = extract_subnet(net, arch)
    for m in (net, sub):
        m.train()
        m.classifier.dropout.eval()  # dropout draws differ between the two calls
    x = _x(32, n=4)
    with torch.no_grad():
        _assert_same(sub(x), net(x, arch), "training-mode forward")
    net.eval()
    again = extract_subnet(net, arch)
    for (name, a), (_, b) in zip(again.named_buffers(), sub.named_buffers()):
        if "running" in name:
            _assert_same(a, b, f"running statistics {name}")


@pytest.mark.parametrize("space", list_spaces())
def test_every_space_forward_backward(space):
    """Output shape, finite values, and every parameter reachable by gradients. Kernel
    transformation matrices only act when a smaller kernel is chosen, so the loss sums the
    largest subnet and the same subnet with the smallest kernel everywhere."""
    sp = get_space(space)
    torch.manual_seed(0)
    net = Supernet(sp).train()
    r = min(sp.resolutions)
    hi = ArchConfig.max(sp, r)
    small_k = ArchConfig(ks=(min(sp.kernel_choices),) * sp.num_blocks, e=hi.e, d=hi.d, r=r)
    x = _x(r, n=1)
    loss = 0.0
    for arch in (hi, small_k):  # the smallest kernel runs the whole chain of transforms
        y = net(x, arch)
        assert y.shape == (1, sp.num_classes)
        assert torch.isfinite(y).all()
        loss = loss + y.square().mean()
    loss.backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    with torch.no_grad():
        y = net.eval()(_x(r, n=2), ArchConfig.min(sp))
    assert y.shape == (2, sp.num_classes) and torch.isfinite(y).all()


def _pl_importance(block) -> torch.Tensor:
    return block.point_linear["conv"].conv.weight.abs().sum(dim=(0, 2, 3))


@pytest.mark.parametrize("space,r", [("ofa-mbv3-tiny", 32), ("ofa-mbv3-w1.0", 128)])
def test_sort_channels_keeps_the_full_network(filled_supernet, space, r):
    net = filled_supernet(space)
    arch = ArchConfig.max(space, r)
    x = _x(r, n=1)
    before_w = [b.inverted_bottleneck["conv"].conv.weight.clone() for b in net.elastic_blocks]
    with torch.no_grad():
        before = net(x, arch)
        net.sort_channels()
        after = net(x, arch)
    _assert_same(after, before, "sorted supernet")
    moved = sum(not torch.equal(w, b.inverted_bottleneck["conv"].conv.weight)
                for w, b in zip(before_w, net.elastic_blocks))
    assert moved == len(before_w)  # random weights: every block gets a real permutation
    for b in net.elastic_blocks:
        imp = _pl_importance(b)
        assert (imp[:-1] >= imp[1:]).all()
        if b.use_se:
            se_imp = b.depth_conv["se"].fc.expand.weight.abs().sum(dim=(0, 2, 3))
            assert (se_imp[:-1] >= se_imp[1:]).all()
    with torch.no_grad():
        net.sort_channels()  # already sorted: nothing moves
        _assert_same(net(x, arch), before, "sorted twice")


@pytest.mark.parametrize("expand_stage", [1, 2])
def test_sort_channels_keeps_channels_inside_trained_widths(filled_supernet, expand_stage):
    """Progressive shrinking re-sorts without moving a channel out of a narrower width it was
    already trained in: each band keeps its set of channels, sorted inside."""
    space = "ofa-mbv3-tiny"
    sp = get_space(space)
    net = filled_supernet(space)
    x, arch = _x(32), ArchConfig.max(space, 32)
    rows = [b.inverted_bottleneck["conv"].conv.weight.flatten(1).clone() for b in net.elastic_blocks]
    with torch.no_grad():
        before = net(x, arch)
        net.sort_channels(expand_stage=expand_stage)
        _assert_same(net(x, arch), before, f"sorted with expand_stage={expand_stage}")
    for b, old in zip(net.elastic_blocks, rows):
        widths = sorted({sp.middle_channels(b.cin, e) for e in sp.expand_choices})
        cuts = [0] + widths[len(widths) - 1 - expand_stage:]
        new = b.inverted_bottleneck["conv"].conv.weight.flatten(1)
        imp = _pl_importance(b)
        for lo, hi in zip(cuts, cuts[1:]):
            key = lambda t: sorted(map(tuple, t.tolist()))
            assert key(new[lo:hi]) == key(old[lo:hi]), f"band [{lo},{hi}) changed its channels"
            assert (imp[lo:hi][:-1] >= imp[lo:hi][1:]).all()
