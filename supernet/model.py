"""The elastic supernet and subnet extraction."""
from __future__ import annotations

from collections import OrderedDict
from typing import List

import torch
import torch.nn as nn

from .arch import ArchConfig
from .layers import (
    ConvBNAct, ElasticBN, ElasticConv2d, ElasticDWConv, ElasticSE, ResidualBlock,
    StaticMBConv, build_act,
)
from .space import Space, get_family, get_space

__all__ = ["Supernet", "Subnet", "ElasticMBConv", "extract_subnet", "build_supernet"]


class ElasticMBConv(nn.Module):
    """Inverted residual block with elastic kernel and expand ratio."""

    def __init__(self, space: Space, cin: int, cout: int, stride: int, act: str, se: bool):
        super().__init__()
        self.space = space
        self.cin, self.cout, self.stride, self.act_name, self.use_se = cin, cout, stride, act, se
        max_mid = space.max_middle_channels(cin)
        bn = dict(momentum=space.bn_momentum, eps=space.bn_eps)
        self.inverted_bottleneck = nn.ModuleDict(OrderedDict(
            conv=ElasticConv2d(cin, max_mid), bn=ElasticBN(max_mid, **bn), act=build_act(act)))
        self.depth_conv = nn.ModuleDict(OrderedDict(
            conv=ElasticDWConv(max_mid, space.kernel_choices, stride), bn=ElasticBN(max_mid, **bn),
            act=build_act(act)))
        if se:
            self.depth_conv["se"] = ElasticSE(max_mid, space.se_channels)
        self.point_linear = nn.ModuleDict(OrderedDict(
            conv=ElasticConv2d(max_mid, cout), bn=ElasticBN(cout, **bn)))

    def forward(self, x: torch.Tensor, kernel: int, expand: int) -> torch.Tensor:
        """The block at ``kernel`` and expand ratio ``expand`` (middle width from the input's
        channels): (N, cin, H, W) to (N, cout, H/stride, W/stride), without the shortcut
        (:class:`ResidualBlock` adds it)."""
        mid = self.space.middle_channels(x.size(1), expand)
        ib, dw, pl = self.inverted_bottleneck, self.depth_conv, self.point_linear
        x = ib["act"](ib["bn"](ib["conv"](x, mid)))
        x = dw["act"](dw["bn"](dw["conv"](x, kernel)))
        if self.use_se:
            x = dw["se"](x)
        return pl["bn"](pl["conv"](x, self.cout))

    def extract(self, kernel: int, expand: int) -> StaticMBConv:
        """A :class:`StaticMBConv` holding copies of the weights, BN statistics and SE slices this
        block uses at ``kernel`` and ``expand``, so it computes the same output."""
        sp = self.space
        mid = sp.middle_channels(self.cin, expand)
        se_mid = sp.se_channels(mid) if self.use_se else None
        out = StaticMBConv(self.cin, self.cout, mid=mid, kernel=kernel, stride=self.stride,
                           act=self.act_name, se_mid=se_mid, bn_momentum=sp.bn_momentum,
                           bn_eps=sp.bn_eps)
        ib, dw, pl = self.inverted_bottleneck, self.depth_conv, self.point_linear
        with torch.no_grad():
            out.inverted_bottleneck.conv.weight.copy_(ib["conv"].active_weight(mid, self.cin))
            _copy_bn(out.inverted_bottleneck.bn, ib["bn"].bn)
            out.depth_conv.conv.weight.copy_(dw["conv"].active_weight(mid, kernel))
            _copy_bn(out.depth_conv.bn, dw["bn"].bn)
            if self.use_se:
                src, dst = dw["se"].fc, out.depth_conv.se.fc
                dst.reduce.weight.copy_(src.reduce.weight[:se_mid, :mid])
                dst.reduce.bias.copy_(src.reduce.bias[:se_mid])
                dst.expand.weight.copy_(src.expand.weight[:mid, :se_mid])
                dst.expand.bias.copy_(src.expand.bias[:mid])
            out.point_linear.conv.weight.copy_(pl["conv"].active_weight(self.cout, mid))
            _copy_bn(out.point_linear.bn, pl["bn"].bn)
        return out

    @torch.no_grad()
    def sort_channels(self, expand_stage: int = 0) -> None:
        """Reorder middle channels (and SE hidden units) by L1 importance, most important first.

        The permutation is applied consistently to every tensor touching the middle channels,
        so the full block computes the same function. ``expand_stage`` > 0 keeps channels that
        already belong to the k largest expand widths inside their band (progressive shrinking
        re-sorts per stage without moving a channel out of a width it was trained in).
        """
        pl_w = self.point_linear["conv"].conv.weight
        importance = pl_w.abs().sum(dim=(0, 2, 3)).clone()
        if expand_stage > 0:
            widths = sorted({self.space.middle_channels(self.cin, e)
                             for e in self.space.expand_choices}, reverse=True)
            # Channels outside the band of the j-th largest width get a penalty that orders
            # bands before any importance value can.
            big = float(importance.max().item() + 1.0) * 4.0
            for j, w in enumerate(widths[1:expand_stage + 1], start=1):
                importance[w:] -= big
        idx = torch.argsort(importance, descending=True, stable=True)
        ib, dw, pl = self.inverted_bottleneck, self.depth_conv, self.point_linear
        pl["conv"].conv.weight.copy_(pl_w[:, idx])
        ib["conv"].conv.weight.copy_(ib["conv"].conv.weight[idx])
        dw["conv"].conv.weight.copy_(dw["conv"].conv.weight[idx])
        for bn in (ib["bn"].bn, dw["bn"].bn):
            _permute_bn(bn, idx)
        if self.use_se:
            fc = dw["se"].fc
            fc.reduce.weight.copy_(fc.reduce.weight[:, idx])
            fc.expand.weight.copy_(fc.expand.weight[idx])
            fc.expand.bias.copy_(fc.expand.bias[idx])
            se_idx = torch.argsort(fc.expand.weight.abs().sum(dim=(0, 2, 3)), descending=True,
                                   stable=True)
            fc.expand.weight.copy_(fc.expand.weight[:, se_idx])
            fc.reduce.weight.copy_(fc.reduce.weight[se_idx])
            fc.reduce.bias.copy_(fc.reduce.bias[se_idx])


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d) -> None:
    f = dst.num_features
    dst.weight.copy_(src.weight[:f])
    dst.bias.copy_(src.bias[:f])
    dst.running_mean.copy_(src.running_mean[:f])
    dst.running_var.copy_(src.running_var[:f])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


def _permute_bn(bn: nn.BatchNorm2d, idx: torch.Tensor) -> None:
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        t.copy_(t[idx])


class _Head(nn.Module):
    """The layers after the last block, as the space's family builds them (both networks)."""

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.family.head_forward(self, x)


class _Classifier(nn.Module):
    def __init__(self, cin: int, n: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.linear = nn.Linear(cin, n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(x))


def mbv3_head(net: nn.Module, space: Space) -> None:
    """MobileNetV3 head modules (the mbv3 family's ``build_head``)."""
    bn = dict(bn_momentum=space.bn_momentum, bn_eps=space.bn_eps)
    net.final_expand_layer = ConvBNAct(space.stage_widths[-1], space.final_expand_width, 1,
                                       act=space.head_act, **bn)
    net.feature_mix_layer = ConvBNAct(space.final_expand_width, space.feature_mix_width, 1,
                                      act=space.head_act, bn=False)
    net.classifier = _Classifier(space.feature_mix_width, space.num_classes, space.dropout)


def mbv3_head_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """final expand -> pool -> feature mix -> classifier (the mbv3 family's ``head_forward``)."""
    x = net.final_expand_layer(x)
    x = x.mean((2, 3), keepdim=True)
    x = net.feature_mix_layer(x)
    return net.classifier(torch.flatten(x, 1))


def _build_fixed_parts(net: nn.Module, space: Space) -> None:
    bn = dict(bn_momentum=space.bn_momentum, bn_eps=space.bn_eps)
    net.family = get_family(space)
    net.first_conv = ConvBNAct(3, space.stem_width, 3, space.stem_stride, act=space.stem_act, **bn)
    net.family.build_head(net, space)


def _first_block(space: Space) -> ResidualBlock:
    conv = StaticMBConv(space.stem_width, space.first_block_width, mid=space.stem_width, kernel=3,
                        stride=1, act=space.first_block_act,
                        se_mid=space.se_channels(space.stem_width) if space.first_block_se else None,
                        expand1=True, bn_momentum=space.bn_momentum, bn_eps=space.bn_eps)
    return ResidualBlock(conv, space.first_block_skip)


class Supernet(_Head):
    """OFA elastic supernet for a :class:`Space` (any registered family).

    ``forward(x, arch)`` runs the subnet ``arch`` (the largest when ``arch`` is None). The
    supernet keeps no active-subnet state, so concurrent use with different archs is safe.
    """

    def __init__(self, space: "Space | str"):
        super().__init__()
        space = get_space(space)
        self.space = space
        _build_fixed_parts(self, space)
        blocks: List[nn.Module] = [_first_block(space)]
        for b in space.blocks:
            blocks.append(ResidualBlock(
                ElasticMBConv(space, b.in_channels, b.out_channels, b.stride, b.act, b.se),
                b.identity_skip))
        self.blocks = nn.ModuleList(blocks)
        self._max_arch = ArchConfig.max(space)

    def forward(self, x: torch.Tensor, arch: ArchConfig | None = None) -> torch.Tensor:
        """Logits (N, classes) of subnet ``arch`` (the largest when None) for images ``x`` (N, 3, H,
        W); only the blocks ``arch.d`` keeps run."""
        arch = self._max_arch if arch is None else arch
        x = self.blocks[0](self.first_conv(x))
        for i in arch.active_blocks(self.space):
            x = self.blocks[i + 1](x, arch.ks[i], arch.e[i])
        return self.head(x)

    @property
    def elastic_blocks(self) -> List[ElasticMBConv]:
        """The elastic blocks in network order (the fixed first block excluded), one per entry of
        ``ArchConfig.ks``."""
        return [blk.conv for blk in self.blocks[1:]]

    def sort_channels(self, expand_stage: int = 0) -> None:
        """Sort every elastic block's middle channels by importance (see
        :meth:`ElasticMBConv.sort_channels`), before the expand-shrinking stages of training."""
        for blk in self.elastic_blocks:
            blk.sort_channels(expand_stage)


class Subnet(_Head):
    """A static network extracted from a supernet: standard Conv2d/BatchNorm2d/Linear only."""

    def __init__(self, space: Space, arch: ArchConfig):
        super().__init__()
        self.space_name = space.name
        self.arch = arch
        _build_fixed_parts(self, space)
        self.blocks = nn.ModuleList([_first_block(space)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) for images ``x`` (N, 3, H, W)."""
        x = self.first_conv(x)
        for blk in self.blocks:
            x = blk(x)
        return self.head(x)


def build_supernet(space: "Space | str") -> Supernet:
    """A freshly initialised (untrained) :class:`Supernet` for ``space``; load weights with
    :func:`~supernet.checkpoint.load_supernet` instead."""
    return Supernet(space)


@torch.no_grad()
def extract_subnet(supernet: Supernet, arch: ArchConfig) -> Subnet:
    """A plain ``nn.Module`` computing exactly what ``supernet(x, arch)`` computes."""
    space = supernet.space
    arch = arch.validate(space, any_resolution=True)  # a conv net runs at any size
    sub = Subnet(space, arch)
    # Fixed parts: copy by name (shapes match one-to-one).
    own = dict(sub.named_modules())
    for name in ("first_conv", "blocks.0", *sub.family.head_modules):
        own[name].load_state_dict(dict(supernet.named_modules())[name].state_dict())
    for i in arch.active_blocks(space):
        src = supernet.blocks[i + 1]
        sub.blocks.append(ResidualBlock(src.conv.extract(arch.ks[i], arch.e[i]), src.skip))
    sub.train(supernet.training)
    return sub.to(next(supernet.parameters()).device)
