"""The OFA ResNet50 family (``ofa_resnet50``): bottleneck blocks with elastic depth, expand
ratio and width multiplier, exact to the reference ``OFAResNets``.

Its elastic dimensions are not the MobileNet ones (no elastic kernel; a width per stage and
an input-stem skip instead), so it has its own space record (:class:`ResNetSpace`), arch
record (:class:`ResNetArch`, the reference's ``{"d", "e", "w"}`` plus the resolution),
supernet and analytic cost. Layout (reference ``OFAResNets`` with depth_list=[0,1,2],
expand_ratio_list=[0.2,0.25,0.35], width_mult_list=[0.65,0.8,1.0]):

* input stem: 3x3 s2 conv (``w[0]`` of ``mid`` widths), a residual 3x3 conv of the same width
  (dropped when the stem is skipped, ``d[0] == 0``), a 3x3 conv (``w[1]``); then a 3x3 s2
  max pool;
* four stages of ``base + 2`` bottleneck blocks (4/4/6/4), of which the first ``base + d[s]``
  run; stage width ``w[s + 2]``; a block's middle width is ``make_divisible(round(out * e))``;
  the first block of a stage has an ``avgpool -> 1x1 conv -> BN`` shortcut, the others an
  identity;
* global average pool and a linear classifier.

Not in the MobileNet pipeline (ArchBatch; the registry of spaces holds MobileNet-style spaces
only, see :data:`RESNET_SPACES`); its latency-table ops are :mod:`supernet.resnet_ops`; searched
by latency / MACs / params with its own gene matrix (:mod:`ofa_deploy.search.resnet`) and
exported from a checkpoint by ``export``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import ElasticBN
from .resnet_space import (RESNET_SPACES, ResNetArch, ResNetSpace, _block_shapes,
                           _stage_of, get_resnet_space, inspect_resnet, resnet_arch_cost,
                           resnet_space_stats, resnet_supernet_params)

__all__ = ["ResNetSpace", "ResNetArch", "ResNetSupernet", "ResNetSubnet", "RESNET_SPACES",
           "get_resnet_space", "resnet_arch_cost", "resnet_supernet_params",
           "extract_resnet_subnet", "resnet_space_stats", "inspect_resnet",
           "remap_resnet_reference_keys", "load_resnet_supernet"]


class _SlicedConv(nn.Module):
    """Conv whose active output/input channels are the leading ones (reference DynamicConv2d;
    the inner ``conv`` gives the reference's ``conv.conv.weight`` names)."""

    def __init__(self, max_in: int, max_out: int, kernel: int = 1, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(max_in, max_out, kernel, stride, kernel // 2, bias=False)

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        c = self.conv
        return F.conv2d(x, c.weight[:out_channels, :x.size(1)], None, c.stride, c.padding)


class _DynConvLayer(nn.Module):
    """conv -> BN -> ReLU with an elastic output width (reference DynamicConvLayer)."""

    def __init__(self, max_in: int, max_out: int, kernel: int, stride: int, bn: dict):
        super().__init__()
        self.conv = _SlicedConv(max_in, max_out, kernel, stride)
        self.bn = ElasticBN(max_out, **bn)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        return self.act(self.bn(self.conv(x, out_channels)))


class _StemResidual(nn.Module):
    """The skippable stem layer: ``conv`` plus an identity shortcut (reference names)."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor, out_channels: int) -> torch.Tensor:
        return self.conv(x, out_channels) + x


class _DynBottleneck(nn.Module):
    """Elastic bottleneck (reference DynamicResNetBottleneckBlock, avgpool_conv shortcut)."""

    def __init__(self, max_in: int, max_out: int, max_mid: int, stride: int, identity: bool,
                 bn: dict):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.ModuleDict(OrderedDict(conv=_SlicedConv(max_in, max_mid),
                                               bn=ElasticBN(max_mid, **bn), act=nn.ReLU(True)))
        self.conv2 = nn.ModuleDict(OrderedDict(conv=_SlicedConv(max_mid, max_mid, 3, stride),
                                               bn=ElasticBN(max_mid, **bn), act=nn.ReLU(True)))
        self.conv3 = nn.ModuleDict(OrderedDict(conv=_SlicedConv(max_mid, max_out),
                                               bn=ElasticBN(max_out, **bn)))
        self.identity = identity
        if not identity:
            self.downsample = nn.ModuleDict(OrderedDict(
                avg_pool=nn.AvgPool2d(stride, stride, 0, ceil_mode=True),
                conv=_SlicedConv(max_in, max_out), bn=ElasticBN(max_out, **bn)))

    def forward(self, x: torch.Tensor, mid: int, out: int) -> torch.Tensor:
        if self.identity:
            res = x
        else:
            ds = self.downsample
            res = ds["bn"](ds["conv"](ds["avg_pool"](x), out))
        c1, c2, c3 = self.conv1, self.conv2, self.conv3
        y = c1["act"](c1["bn"](c1["conv"](x, mid)))
        y = c2["act"](c2["bn"](c2["conv"](y, mid)))
        y = c3["bn"](c3["conv"](y, out))
        return F.relu(y + res)


class _Linear(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear = nn.Linear(cin, cout)


class _Classifier(nn.Module):
    """``classifier.linear.linear.*`` as the reference's DynamicLinearLayer names it."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear = _Linear(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lin = self.linear.linear
        return F.linear(x, lin.weight[:, :x.size(1)], lin.bias)


def _bn(space: ResNetSpace) -> dict:
    return dict(momentum=space.bn_momentum, eps=space.bn_eps)


class ResNetSupernet(nn.Module):
    """The elastic OFA ResNet supernet; ``forward(x, arch)`` runs ``arch`` (largest if None).
    State_dict keys and shapes are the reference's, so its checkpoints load as they are."""

    def __init__(self, space: "ResNetSpace | str" = "ofa-resnet50"):
        super().__init__()
        sp = get_resnet_space(space)
        self.space = sp
        bn = _bn(sp)
        m0, c0 = max(sp.stem_mid_widths), max(sp.stem_widths)
        self.input_stem = nn.ModuleList([
            _DynConvLayer(3, m0, 3, 2, bn),
            _StemResidual(_DynConvLayer(m0, m0, 3, 1, bn)),
            _DynConvLayer(m0, c0, 3, 1, bn),
        ])
        self.max_pooling = nn.MaxPool2d(3, 2, 1)
        blocks = []
        cin = sp.stem_widths
        for s in range(sp.num_stages):
            cout = sp.stage_widths(s)
            max_mid = sp.middle_channels(max(cout), max(sp.expand_choices))
            for p in range(sp.stage_block_counts[s]):
                stride = sp.stage_strides[s] if p == 0 else 1
                # identity only inside a stage, as the static subnet and the ops have it
                # (_block_shapes). The reference compares the width lists instead, which gives
                # a stage's first block an identity shortcut when the stem's widths equal the
                # stage's, wrong whenever the stem and the stage pick different widths.
                identity = p > 0
                blocks.append(_DynBottleneck(max(cin), max(cout), max_mid, stride, identity, bn))
                cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.classifier = _Classifier(max(cin), sp.num_classes)

    def forward(self, x: torch.Tensor, arch: ResNetArch | None = None) -> torch.Tensor:
        """Logits (N, classes) of subnet ``arch`` (the largest when None) for images ``x`` (N, 3, H,
        W)."""
        sp = self.space
        arch = ResNetArch.max(sp) if arch is None else arch
        m0, c0 = sp.stem_mid_widths[arch.w[0]], sp.stem_widths[arch.w[1]]
        x = self.input_stem[0](x, m0)
        if not arch.skip_stem:
            x = self.input_stem[1](x, m0)
        x = self.max_pooling(self.input_stem[2](x, c0))
        for i in arch.active_blocks(sp):
            out = sp.stage_widths(_stage_of(sp, i))[arch.w[_stage_of(sp, i) + 2]]
            x = self.blocks[i](x, sp.middle_channels(out, arch.e[i]), out)
        return self.classifier(x.mean((2, 3)))


def _conv_bn(cin: int, cout: int, k: int, stride: int, act: bool, bn: dict) -> nn.Sequential:
    layers = [("conv", nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)),
              ("bn", nn.BatchNorm2d(cout, **bn))]
    if act:
        layers.append(("act", nn.ReLU(inplace=True)))
    return nn.Sequential(OrderedDict(layers))


class _StaticBottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, mid: int, stride: int, identity: bool, bn: dict):
        super().__init__()
        self.conv1 = _conv_bn(cin, mid, 1, 1, True, bn)
        self.conv2 = _conv_bn(mid, mid, 3, stride, True, bn)
        self.conv3 = _conv_bn(mid, cout, 1, 1, False, bn)
        self.downsample = None if identity else nn.Sequential(OrderedDict(
            avg_pool=nn.AvgPool2d(stride, stride, 0, ceil_mode=True),
            conv=nn.Conv2d(cin, cout, 1, bias=False), bn=nn.BatchNorm2d(cout, **bn)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + res)


class _StaticStemResidual(nn.Module):
    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x


class ResNetSubnet(nn.Module):
    """A static subnet of a :class:`ResNetSupernet`: plain Conv2d/BatchNorm2d/Linear."""

    def __init__(self, space: ResNetSpace, arch: ResNetArch):
        super().__init__()
        self.space_name, self.arch = space.name, arch
        bn = dict(momentum=space.bn_momentum, eps=space.bn_eps)
        m0, c0 = space.stem_mid_widths[arch.w[0]], space.stem_widths[arch.w[1]]
        stem: List[nn.Module] = [_conv_bn(3, m0, 3, 2, True, bn)]
        if not arch.skip_stem:
            stem.append(_StaticStemResidual(_conv_bn(m0, m0, 3, 1, True, bn)))
        stem.append(_conv_bn(m0, c0, 3, 1, True, bn))
        self.input_stem = nn.Sequential(*stem)
        self.max_pooling = nn.MaxPool2d(3, 2, 1)
        blocks, cin = [], c0
        for cout, mid, stride, identity in _block_shapes(space, arch):
            blocks.append(_StaticBottleneck(cin, cout, mid, stride, identity, bn))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Linear(cin, space.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) for images ``x`` (N, 3, H, W)."""
        x = self.blocks(self.max_pooling(self.input_stem(x)))
        return self.classifier(x.mean((2, 3)))


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d) -> None:
    f = dst.num_features
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[:f])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


@torch.no_grad()
def extract_resnet_subnet(net: ResNetSupernet, arch: ResNetArch) -> ResNetSubnet:
    """A plain module computing what ``net(x, arch)`` computes (any input size)."""
    sp = net.space
    arch = arch.validate(sp, any_resolution=True)
    sub = ResNetSubnet(sp, arch)

    def copy_conv(dst_seq, src_conv, src_bn):
        w = dst_seq.conv.weight
        w.copy_(src_conv.conv.weight[:w.shape[0], :w.shape[1]])
        _copy_bn(dst_seq.bn, src_bn.bn)

    stem_src = [net.input_stem[0]] + ([] if arch.skip_stem else [net.input_stem[1].conv]) + \
        [net.input_stem[2]]
    for dst, src in zip(sub.input_stem, stem_src):
        copy_conv(dst.conv if isinstance(dst, _StaticStemResidual) else dst, src.conv, src.bn)
    for dst, i in zip(sub.blocks, arch.active_blocks(sp)):
        src = net.blocks[i]
        for name in ("conv1", "conv2", "conv3"):
            copy_conv(getattr(dst, name), getattr(src, name)["conv"], getattr(src, name)["bn"])
        if dst.downsample is not None:
            copy_conv(dst.downsample, src.downsample["conv"], src.downsample["bn"])
    lin = net.classifier.linear.linear
    sub.classifier.weight.copy_(lin.weight[:, :sub.classifier.in_features])
    sub.classifier.bias.copy_(lin.bias)
    sub.train(net.training)
    return sub.to(next(net.parameters()).device)


# ---------------------------------------------------------------------------- cost
# ---------------------------------------------------------------------------- checkpoints
def remap_resnet_reference_keys(state: Mapping[str, torch.Tensor], own: Mapping) -> Dict[str, torch.Tensor]:
    """Reference ResNet checkpoint keys -> ours, by the rule of the reference's own
    ``OFAResNets.load_state_dict``: a key not found as is gets ``.linear.`` -> ``.linear.linear.``,
    else ``bn.`` -> ``bn.bn.``, else ``conv.weight`` -> ``conv.conv.weight`` (checkpoints saved
    from static layers); a ``module.`` (DataParallel) prefix is dropped."""
    out = {}
    for k, v in state.items():
        nk = k[len("module."):] if k.startswith("module.") else k
        if nk not in own:
            if ".linear." in nk:
                nk = nk.replace(".linear.", ".linear.linear.")
            elif "bn." in nk:
                nk = nk.replace("bn.", "bn.bn.")
            elif "conv.weight" in nk:
                nk = nk.replace("conv.weight", "conv.conv.weight")
        out[nk] = v
    return out


def load_resnet_supernet(path, space: "ResNetSpace | str" = "ofa-resnet50") -> ResNetSupernet:
    """A :class:`ResNetSupernet` with the weights of a reference checkpoint file (a state_dict,
    or a dict holding one under ``state_dict``); mismatches are reported by key."""
    from .checkpoint import CheckpointError, load_state_dict_file

    obj = load_state_dict_file(path)
    state = obj.get("state_dict", obj) if isinstance(obj.get("state_dict"), Mapping) else obj
    net = ResNetSupernet(space)
    own = net.state_dict()
    state = remap_resnet_reference_keys(state, own)
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or extra or bad:
        parts = [f"{n} {', '.join(v[:3])}{' ...' if len(v) > 3 else ''}"
                 for n, v in (("missing", missing), ("unexpected", extra), ("wrong shape", bad)) if v]
        raise CheckpointError(f"{path} does not fit space {net.space.name}: " + "; ".join(parts))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return net
