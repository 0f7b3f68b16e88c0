"""Standalone networks for single ops, so a latency table can time each op on its own.

Each op model is built from the same static building blocks the extracted subnets use
(:mod:`supernet.layers`), with the same input and output tensors the op sees inside a full
network, so the per-op times add up to the network's time. Weights are random (latency does not
depend on their values) but seeded, so an exported op model is reproducible byte for byte.

BatchNorm is folded into the preceding convolution (:func:`fold_batchnorm`) both here and in the
subnets the LUT is validated against: every deployment runtime folds it anyway, and folding at
export keeps the op graphs identical to the corresponding slice of a folded full network.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn

from .layers import ConvBNAct, ResidualBlock, StaticMBConv
from .ops import OpKey
from .space import Space

__all__ = ["build_op_model", "mobilenet_op_model", "build_context_model", "context_name",
           "op_input_shape", "OverheadModel", "overhead_input_shape", "fold_batchnorm", "randomize_"]


class _Pool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class _Linear(nn.Module):
    """The classifier as the subnet runs it: flatten the pooled features, then a linear layer."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear = nn.Linear(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(x, 1))


class OverheadModel(nn.Module):
    """The cheapest possible network: one elementwise op on a tiny tensor. Its latency is the
    fixed cost of one inference call (runtime dispatch, bindings, kernel launch), which every
    per-op measurement also pays once; the LUT stores it separately and adds it once per
    network."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU of ``x``, same shape: work small enough that the measured time is the call overhead."""
        return torch.relu(x)


def overhead_input_shape() -> Tuple[int, ...]:
    """NCHW shape (1, 8, 1, 1) of :class:`OverheadModel`'s input: tiny, so the runtime's fixed
    per-call cost dominates."""
    return (1, 8, 1, 1)


def op_input_shape(op: OpKey) -> Tuple[int, ...]:
    """NCHW shape of the tensor ``op`` consumes inside a full network (batch 1)."""
    if op.kind in ("feature_mix", "classifier"):
        return (1, op.cin, 1, 1)
    return (1, op.cin, op.h, op.h)


def _act(name: str) -> "str | None":
    return name or None


def context_name(shape: Tuple[int, ...]) -> str:
    """File-name-safe name of the context model for inputs of ``shape``."""
    return "ctx-" + "x".join(str(int(s)) for s in shape)


def build_context_model(shape: Tuple[int, ...], *, seed: int = 0) -> nn.Module:
    """A depthwise 1x1 convolution producing a tensor of ``shape`` (N, C, H, W) from one of
    the same shape: the stand-in for "the previous layer" of an op (see
    :func:`build_op_model`). Depthwise, so it is a real convolution for the runtime (same
    layout handling and fusions as a network's layers) but costs next to nothing: a dense
    1x1 conv on the 960-1280 channel head tensors would be dearer than the op it precedes,
    and its timing noise would swamp the difference."""
    c = int(shape[1])
    m = nn.Conv2d(c, c, 1, groups=c, bias=True)
    randomize_(m, torch.Generator().manual_seed(int(seed) + 7919))
    return m.eval()


def build_op_model(op: OpKey, space: "Space | str", *, seed: int = 0, fold_bn: bool = True,
                   context: bool = False) -> nn.Module:
    """An eval-mode module computing ``op`` with random weights drawn from ``seed``.

    ``space`` (a space record or name of any family, :mod:`supernet.op_families`) supplies
    the family's layers and the BN settings (the op key holds every shape).

    ``context``: prepend :func:`build_context_model` (a depthwise 1x1 conv on the op's input). Timing
    ``context + op`` minus ``context`` alone gives the op's cost as it runs *inside* a network:
    runtimes change the tensor layout at a graph's edges (onnxruntime reorders NCHW <-> NCHWc
    around its convolutions, LiteRT transposes NCHW <-> NHWC) and fuse an op's first layer with
    whatever produced its input (the residual add into the previous conv, an activation into
    its conv). A lone op model pays those edge conversions on every input and output and misses
    the fusions; with a producer in front, the difference keeps the op's output-side edge and
    cancels its input-side one, so along a chain of ops the edge costs telescope to the one pair
    a whole network really pays.
    """
    from .op_families import resolve_space

    fam, space = resolve_space(space)
    if context:
        return nn.Sequential(build_context_model(op_input_shape(op), seed=seed),
                             build_op_model(op, space, seed=seed, fold_bn=fold_bn)).eval()
    return fam.build_op_model(op, space, seed=seed, fold_bn=fold_bn)


def mobilenet_op_model(op: OpKey, space: Space, *, seed: int = 0,
                       fold_bn: bool = True) -> nn.Module:
    """:func:`build_op_model` for the ops of a MobileNet-family space (no context)."""
    bn = dict(bn_momentum=space.bn_momentum, bn_eps=space.bn_eps)
    gen = torch.Generator().manual_seed(int(seed))
    if op.kind == "stem":
        m: nn.Module = ConvBNAct(op.cin, op.cout, op.kernel, op.stride, act=_act(op.act), **bn)
    elif op.kind == "first_block":
        conv = StaticMBConv(op.cin, op.cout, mid=op.cin, kernel=op.kernel, stride=op.stride,
                            act=op.act, se_mid=op.se or None, expand1=True, **bn)
        m = ResidualBlock(conv, op.skip)
    elif op.kind == "block":
        conv = StaticMBConv(op.cin, op.cout, mid=op.mid, kernel=op.kernel, stride=op.stride,
                            act=op.act, se_mid=op.se or None, **bn)
        m = ResidualBlock(conv, op.skip)
    elif op.kind == "final_expand":
        m = ConvBNAct(op.cin, op.cout, 1, act=_act(op.act), **bn)
    elif op.kind == "pool":
        m = _Pool()
    elif op.kind == "feature_mix":
        m = ConvBNAct(op.cin, op.cout, 1, act=_act(op.act), bn=False)
    elif op.kind == "classifier":
        m = _Linear(op.cin, op.cout)
    else:  # OpKey validates kinds; this guards a kind added there but not here
        raise ValueError(f"no op model for kind {op.kind!r}")
    randomize_(m, gen)
    m.eval()
    return fold_batchnorm(m) if fold_bn else m


@torch.no_grad()
def randomize_(module: nn.Module, gen: torch.Generator) -> nn.Module:
    """Fill every parameter and BN buffer from ``gen`` (no global RNG involved). Values stay
    small and BN variances positive so activations remain finite through deep subnets."""
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if not t.is_floating_point():
            continue
        if name.endswith("running_var"):
            t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
        elif name.endswith("running_mean") or name.endswith("bias"):
            t.copy_(torch.randn(t.shape, generator=gen) * 0.01)
        elif name.endswith("bn.weight"):
            t.copy_(torch.rand(t.shape, generator=gen) * 0.5 + 0.5)
        else:
            fan_in = max(1, t[0].numel()) if t.dim() > 1 else 1
            t.copy_(torch.randn(t.shape, generator=gen) * (1.0 / fan_in) ** 0.5)
    return module


@torch.no_grad()
def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every ``ConvBNAct`` BatchNorm into its conv, in place (eval semantics)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for sub in module.modules():
        if isinstance(sub, ConvBNAct) and hasattr(sub, "bn"):
            sub.eval()
            sub.conv = fuse_conv_bn_eval(sub.conv, sub.bn)
            del sub.bn
    return module
