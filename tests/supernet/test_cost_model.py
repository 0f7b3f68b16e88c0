"""Analytic params/MACs against networks actually built, and the op enumeration."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from supernet import (
    get_family,
    ArchConfig, OfaDeployError, OpKey, Supernet, arch_cost, arch_ops, enumerate_ops,
    extract_subnet, get_space, list_spaces, space_stats, supernet_params,
)
from supernet.batch import ArchBatch
from supernet.ops import OpGrid


def counted_macs(net: nn.Module, r: int) -> int:
    """MACs by the reference rule, from a real forward: Conv2d cin*out_elements*kh*kw/groups,
    Linear in*out; BN, activations, pooling and biases are free."""
    total = [0]

    def conv(m, _i, y):
        total[0] += m.in_channels * y.numel() * m.kernel_size[0] * m.kernel_size[1] // m.groups

    def linear(m, _i, _y):
        total[0] += m.in_features * m.out_features

    hooks = [m.register_forward_hook(conv) for m in net.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear) for m in net.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, 3, r, r))
    finally:
        for h in hooks:
            h.remove()
    return total[0]


@pytest.fixture(scope="module")
def plain_supernets():
    return {name: Supernet(name) for name in list_spaces()}


@pytest.mark.parametrize("space", list_spaces())
def test_analytic_cost_matches_built_subnets(plain_supernets, space):
    sp = get_space(space)
    net = plain_supernets[space]
    rng = np.random.default_rng(len(space))
    n = 12 if sp.num_classes <= 10 else 3
    res = sorted(sp.resolutions)
    archs = [ArchConfig.min(sp), ArchConfig.max(sp)]
    archs += [ArchConfig.sample(sp, rng, resolutions=[res[0], res[len(res) // 2], res[-1]])
              for _ in range(n)]
    for arch in archs:
        sub = extract_subnet(net, arch)
        cost = arch_cost(sp, arch)
        assert cost["params"] == sum(p.numel() for p in sub.parameters()), arch.to_string(sp)
        assert cost["macs"] == counted_macs(sub, arch.r), arch.to_string(sp)
        assert sum(o.params for o in arch_ops(sp, arch)) == cost["params"]


@pytest.mark.parametrize("space", list_spaces())
def test_supernet_params_count_every_parameter(plain_supernets, space):
    assert supernet_params(space) == sum(p.numel() for p in plain_supernets[space].parameters())


def test_published_numbers():
    """The figures the OFA paper and model zoo quote for the w1.0 / w1.2 spaces."""
    w10 = space_stats("ofa-mbv3-w1.0")
    assert w10["supernet_params"] == 7678880
    assert (w10["max"]["params"], w10["max"]["macs"]) == (7664760, 566170656)
    assert w10["macs_by_resolution"]["224"]["min"] == 121278672  # 121.3M
    assert w10["max"]["arch"]["r"] == 224 and w10["min"]["arch"]["r"] == 128
    assert supernet_params("ofa-mbv3-w1.2") == 10715752


def test_space_stats_is_consistent():
    for name in list_spaces():
        st = space_stats(name)
        sp = get_space(name)
        by_r = st["macs_by_resolution"]
        assert list(by_r) == [str(r) for r in sp.resolutions]
        lo = [by_r[str(r)]["min"] for r in sp.resolutions]
        hi = [by_r[str(r)]["max"] for r in sp.resolutions]
        assert lo == sorted(lo) and hi == sorted(hi) and all(a < b for a, b in zip(lo, hi))
        assert st["min"]["macs"] == lo[0] and st["max"]["macs"] == hi[-1]
        assert st["min"]["params"] < st["max"]["params"] < st["supernet_params"]
        n = st["num_subnets"]
        assert n["total"] == n["per_resolution"] * len(sp.resolutions)


def test_ops_of_an_arch_are_enumerated(rng):
    for name in list_spaces():
        sp = get_space(name)
        r = [min(sp.resolutions), max(sp.resolutions)]
        all_ops = set(enumerate_ops(sp, r))
        for _ in range(10):
            arch = ArchConfig.sample(sp, rng, resolutions=r)
            ops = arch_ops(sp, arch)
            assert set(ops) <= all_ops
            assert [o.kind for o in ops[:2]] == ["stem", "first_block"]
            n_head = len(get_family(sp).head_ops(sp, 1))
            head = get_family(sp).head_ops(sp, ops[-n_head].h)
            assert ops[-len(head):] == head and head[-1].kind == "classifier"
            if sp.family == "mbv3":
                assert [o.kind for o in head] == ["final_expand", "pool", "feature_mix", "classifier"]
            assert len(ops) == 2 + sum(arch.d) + n_head
            # shapes chain: each op consumes what the previous produced (up to the pool)
            for a, b in zip(ops[:-n_head + 1], ops[1:-n_head + 1]):
                assert (b.h, b.cin) == (a.out_h, a.cout), (a, b)


def test_op_key_string_round_trip():
    ops = enumerate_ops("ofa-mbv3-tiny", [32])
    assert len(ops) == len(set(ops))
    for op in ops:
        assert OpKey.from_string(op.to_string()) == op
    with pytest.raises(ValueError, match="not an op key"):
        OpKey.from_string("block-h32")
    with pytest.raises(ValueError, match="unknown op kind"):
        OpKey("transformer", 1, 1, 1)


def test_op_grid_matches_per_arch_sums(rng):
    for name in list_spaces():
        sp = get_space(name)
        grid = OpGrid(sp, lambda op: op.macs)
        batch = ArchBatch.sample(sp, 64, rng)
        want = [arch_cost(sp, a)["macs"] for a in batch.to_archs()]
        np.testing.assert_allclose(grid.evaluate(batch), want, rtol=1e-12)
        lo, hi = grid.min_max()
        assert lo == arch_cost(sp, ArchConfig.min(sp))["macs"]
        assert hi == arch_cost(sp, ArchConfig.max(sp))["macs"]
        assert lo <= min(want) and max(want) <= hi
    grid = OpGrid("ofa-mbv3-tiny", lambda op: op.params, resolutions=[32])
    with pytest.raises(OfaDeployError, match=r"resolution\(s\) \[40\] not covered"):
        grid.evaluate(ArchBatch.sample("ofa-mbv3-tiny", 4, rng, resolutions=[32, 40, 40, 40]))


def test_op_grid_surfaces_a_missing_value():
    def lut(op: OpKey) -> float:
        if op.kind == "block" and op.kernel == 7:
            raise KeyError(f"no latency for {op.to_string()}")
        return 1.0

    with pytest.raises(KeyError, match="no latency for block-"):
        OpGrid("ofa-mbv3-tiny", lut, resolutions=[32])
