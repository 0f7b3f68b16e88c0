"""Elastic layers and their static counterparts.

Module and parameter names follow the reference OFA MobileNetV3 layout
(``conv.conv.weight``, ``bn.bn.running_mean``, ``7to5_matrix`` ...) so that reference
checkpoints load without a key map, except for the legacy ``mobile_inverted_conv`` alias.
The elastic layers hold no "active" state: every forward receives its choice as an argument.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "build_act",
    "ElasticDWConv",
    "ElasticConv2d",
    "ElasticBN",
    "ElasticSE",
    "ConvBNAct",
    "StaticSE",
    "StaticMBConv",
    "ResidualBlock",
]


def build_act(name: str | None) -> nn.Module:
    """The activation module for a space's activation name (``None`` gives identity; ``relu``,
    ``relu6``, ``h_swish``); raises ValueError for any other name."""
    if name is None:
        return nn.Identity()
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "h_swish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"unknown activation {name!r}")


def crop_range(size: int, sub: int) -> tuple[int, int]:
    """Start and end (exclusive) indices of the centred ``sub``-wide window in a ``size``-wide
    kernel; both sizes are odd."""
    c, d = size // 2, sub // 2
    return c - d, c + d + 1


class ElasticDWConv(nn.Module):
    """Depthwise conv whose smaller kernels come from centre crops of the largest one, each
    step passed through a learned kernel-transformation matrix shared across channels."""

    def __init__(self, max_channels: int, kernel_choices: Sequence[int], stride: int):
        super().__init__()
        self.kernel_choices = tuple(sorted(kernel_choices))
        self.max_kernel = self.kernel_choices[-1]
        self.stride = stride
        self.conv = nn.Conv2d(
            max_channels, max_channels, self.max_kernel, stride, self.max_kernel // 2,
            groups=max_channels, bias=False,
        )
        for big, small in zip(self.kernel_choices[::-1], self.kernel_choices[::-1][1:]):
            # Identity init: at the start the transformed kernel is the plain centre crop.
            self.register_parameter(f"{big}to{small}_matrix", nn.Parameter(torch.eye(small * small)))

    def transform_matrix(self, big: int, small: int) -> torch.Tensor:
        """The learned (small*small, small*small) matrix that maps the centre crop of a ``big``
        kernel to a ``small`` one."""
        return getattr(self, f"{big}to{small}_matrix")

    def active_weight(self, channels: int, kernel: int) -> torch.Tensor:
        """(channels, 1, kernel, kernel) depthwise weights for the leading ``channels``: the largest
        kernel cropped down one kernel choice at a time, each step through its transformation
        matrix; raises ValueError for a kernel not among the choices."""
        if kernel not in self.kernel_choices:
            raise ValueError(f"kernel {kernel} not in {self.kernel_choices}")
        w = self.conv.weight[:channels]
        chain = [k for k in self.kernel_choices[::-1] if k >= kernel]
        for big, small in zip(chain, chain[1:]):
            a, b = crop_range(big, small)
            crop = w[:, :, a:b, a:b].reshape(-1, small * small)
            w = F.linear(crop, self.transform_matrix(big, small)).reshape(channels, 1, small, small)
        return w

    def forward(self, x: torch.Tensor, kernel: int) -> torch.Tensor:
        """Depthwise ``kernel``-sized conv (same padding, this layer's stride) over the channels of
        ``x`` (N, C, H, W), C at most the maximum; gives (N, C, H/stride, W/stride)."""
        c = x.size(1)
        return F.conv2d(x, self.active_weight(c, kernel), None, self.stride, kernel // 2, 1, c)


class ElasticConv2d(nn.Module):
    """1x1 conv whose active input/output channels are the leading ones."""

    def __init__(self, max_in: int, max_out: int):
        super().__init__()
        self.conv = nn.Conv2d(max_in, max_out, 1, bias=False)

    def active_weight(self, out_channels: int, in_channels: int) -> torch.Tensor:
        """The (out_channels, in_channels, 1, 1) leading slice of the full weight."""
        return self.conv.weight[:out_channels, :in_channels]

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        """1x1 conv of ``x`` (N, C_in, H, W) to its leading ``out_channels`` outputs: (N,
        out_channels, H, W)."""
        return F.conv2d(x, self.active_weight(out_channels, x.size(1)))


class ElasticBN(nn.Module):
    """BatchNorm2d whose active features are the leading ones, taken from the width of each input."""
    def __init__(self, max_features: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.bn = nn.BatchNorm2d(max_features, momentum=momentum, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Batch-normalise ``x`` (N, C, H, W) with the first C features' parameters and running
        statistics; in training mode those statistics update in place in the full buffers."""
        f = x.size(1)
        bn = self.bn
        if f == bn.num_features:
            return bn(x)
        # Slices of the running buffers are views, so training updates land in the supernet.
        return F.batch_norm(
            x, bn.running_mean[:f], bn.running_var[:f], bn.weight[:f], bn.bias[:f],
            self.training, bn.momentum if bn.momentum is not None else 0.1, bn.eps,
        )


def _se_fc(channels: int, mid: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("reduce", nn.Conv2d(channels, mid, 1, bias=True)),
        ("relu", nn.ReLU(inplace=True)),
        ("expand", nn.Conv2d(mid, channels, 1, bias=True)),
        ("h_sigmoid", nn.Hardsigmoid(inplace=True)),
    ]))


class ElasticSE(nn.Module):
    """Squeeze-and-excitation whose active channels are the input's leading ones; the middle width
    is ``mid_fn(channels)``, so it shrinks with the block's expand ratio."""
    def __init__(self, max_channels: int, mid_fn):
        super().__init__()
        self.mid_fn = mid_fn  # middle width as a function of active channels
        self.fc = _se_fc(max_channels, mid_fn(max_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, C, H, W) scaled per channel by the hard-sigmoid gate computed from its spatial
        mean; same shape out."""
        c = x.size(1)
        m = self.mid_fn(c)
        y = x.mean((2, 3), keepdim=True)
        y = F.conv2d(y, self.fc.reduce.weight[:m, :c], self.fc.reduce.bias[:m])
        y = F.relu(y)
        y = F.conv2d(y, self.fc.expand.weight[:c, :m], self.fc.expand.bias[:c])
        return x * F.hardsigmoid(y)


# ---------------------------------------------------------------------------- static
class ConvBNAct(nn.Module):
    """Static conv (same padding), optional BatchNorm, and activation, with the reference's
    ``conv``/``bn``/``act`` names."""
    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, *, groups: int = 1,
                 act: str | None = None, bn: bool = True, bias: bool = False,
                 bn_momentum: float = 0.1, bn_eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=bias)
        if bn:
            self.bn = nn.BatchNorm2d(cout, momentum=bn_momentum, eps=bn_eps)
        self.act = build_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Conv, then BN when present, then the activation; (N, cin, H, W) to (N, cout, H/stride,
        W/stride)."""
        x = self.conv(x)
        if hasattr(self, "bn"):
            x = self.bn(x)
        return self.act(x)


class StaticSE(nn.Module):
    """Squeeze-and-excitation of fixed width, as extracted from an :class:`ElasticSE`."""
    def __init__(self, channels: int, mid: int):
        super().__init__()
        self.fc = _se_fc(channels, mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, C, H, W) scaled per channel by the hard-sigmoid gate computed from its spatial
        mean; same shape out."""
        return x * self.fc(x.mean((2, 3), keepdim=True))


class StaticMBConv(nn.Module):
    """Plain inverted-residual block (no shortcut); ``mid == cin`` with ``expand1`` means no
    1x1 expansion, as in the fixed first block."""

    def __init__(self, cin: int, cout: int, *, mid: int, kernel: int, stride: int, act: str,
                 se_mid: int | None, expand1: bool = False, bn_momentum: float = 0.1,
                 bn_eps: float = 1e-5):
        super().__init__()
        bnkw = dict(bn_momentum=bn_momentum, bn_eps=bn_eps)
        if expand1:
            self.inverted_bottleneck = None
            mid = cin
        else:
            self.inverted_bottleneck = ConvBNAct(cin, mid, 1, act=act, **bnkw)
        self.depth_conv = ConvBNAct(mid, mid, kernel, stride, groups=mid, act=act, **bnkw)
        if se_mid is not None:
            self.depth_conv.add_module("se", StaticSE(mid, se_mid))
        self.point_linear = ConvBNAct(mid, cout, 1, act=None, **bnkw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Optional 1x1 expansion, depthwise conv with optional SE, and linear 1x1 projection: (N,
        cin, H, W) to (N, cout, H/stride, W/stride)."""
        if self.inverted_bottleneck is not None:
            x = self.inverted_bottleneck(x)
        x = self.depth_conv(x)  # conv, bn, act only: the SE hangs off depth_conv by name
        if hasattr(self.depth_conv, "se"):
            x = self.depth_conv.se(x)
        return self.point_linear(x)


class ResidualBlock(nn.Module):
    """``conv`` plus an identity shortcut when ``skip``; the name ``conv`` is the reference's."""

    def __init__(self, conv: nn.Module, skip: bool):
        super().__init__()
        self.conv = conv
        self.skip = skip

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        """``conv(x, *args)`` (``args`` carry an elastic block's choices), plus ``x`` when the block
        has an identity shortcut."""
        y = self.conv(x, *args)
        return y + x if self.skip else y
