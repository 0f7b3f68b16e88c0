"""The reference's ``net.config`` of a ResNet subnet (its ``ResNets`` network) as a
:class:`~supernet.resnet_space.ResNetSpace` plus a :class:`~supernet.resnet_space.ResNetArch`.

The reference's ``ResNets.config`` lists the ``input_stem`` (a stride-2 conv, optionally a
residual conv, a conv to the stem width), the ``blocks`` (``ResNetBottleneckBlock``: in, out
and middle channels, stride, expand ratio) and the ``classifier``. The arch is read back from
the widths: a stage starts at a block whose shortcut is not an identity (its input width or
stride differs), a width is the index of its channel count among the space's choices, the
expand ratio is the block's own. Every layer is then checked against what the space builds for
that arch. Where two width multipliers round to the same channel count (the first stem conv:
24 channels at x0.65 and x0.8), the smaller index is taken: the same network.
"""
from __future__ import annotations

from typing import List, Mapping, Optional, Sequence, Tuple

from .arch import ArchError
from .resnet_space import (RESNET_SPACES, ResNetArch, ResNetSpace, _block_shapes,
                           get_resnet_space)

__all__ = ["is_resnet_net_config", "resnet_arch_from_net_config"]

NET_NAME = "ResNets"


def is_resnet_net_config(cfg) -> bool:
    """Whether parsed JSON looks like the reference's ``ResNets`` config."""
    return (isinstance(cfg, Mapping) and isinstance(cfg.get("input_stem"), list)
            and "blocks" in cfg)


def _get(layer, key: str, where: str, source: str):
    if not isinstance(layer, Mapping) or key not in layer:
        raise ArchError(f"{source}: {where} has no {key!r}")
    return layer[key]


def _index(choices: Sequence, v, what: str, source: str) -> int:
    for i, c in enumerate(choices):
        if abs(float(c) - float(v)) < 1e-9:
            return i
    raise ArchError(f"{source}: {what} is {v!r}, the space has {list(choices)}")


def _expect(what: str, got, want, source: str) -> None:
    if got != want:
        raise ArchError(f"{source}: {what} is {got!r}, space expects {want!r}")


def _stages(blocks: List[Mapping], source: str) -> List[List[Mapping]]:
    """Blocks grouped into stages: a new one starts where the shortcut is not an identity."""
    stages: List[List[Mapping]] = []
    for i, b in enumerate(blocks):
        where = f"block {i}"
        if _get(b, "name", where, source) != "ResNetBottleneckBlock":
            raise ArchError(f"{source}: {where} is a {b.get('name')!r}, not a "
                            f"ResNetBottleneckBlock")
        identity = (_get(b, "in_channels", where, source)
                    == _get(b, "out_channels", where, source)
                    and _get(b, "stride", where, source) == 1)
        if identity and stages:
            stages[-1].append(b)
        else:
            stages.append([b])
    return stages


def _read(cfg: Mapping, sp: ResNetSpace, image_size: Optional[int], source: str) -> ResNetArch:
    stem = cfg["input_stem"]
    if len(stem) not in (2, 3):
        raise ArchError(f"{source}: input_stem has {len(stem)} layers, a ResNet stem has 3 "
                        f"(2 with its residual conv skipped)")
    first, last = stem[0], stem[-1]
    w0 = _index(sp.stem_mid_widths, _get(first, "out_channels", "input_stem[0]", source),
                "input_stem[0] width", source)
    w1 = _index(sp.stem_widths, _get(last, "out_channels", "the last stem conv", source),
                "the last stem conv's width", source)
    stages = _stages(cfg["blocks"], source)
    if len(stages) != sp.num_stages:
        raise ArchError(f"{source}: {len(stages)} stages, space {sp.name} has {sp.num_stages}")
    dmax = max(sp.depth_choices)
    d = [dmax if len(stem) == 3 else min(sp.depth_choices)]
    w = [w0, w1]
    e = [sp.expand_choices[0]] * sp.num_blocks
    for s, blocks in enumerate(stages):
        extra = len(blocks) - sp.base_depths[s]
        if extra not in sp.depth_choices:
            raise ArchError(f"{source}: stage {s} has {len(blocks)} blocks, space {sp.name} "
                            f"allows {[sp.base_depths[s] + x for x in sp.depth_choices]}")
        d.append(extra)
        w.append(_index(sp.stage_widths(s), blocks[0]["out_channels"], f"stage {s} width",
                        source))
        for p, b in enumerate(blocks):
            e[sp.stage_offsets[s] + p] = sp.expand_choices[_index(
                sp.expand_choices, _get(b, "expand_ratio", f"stage {s} block {p}", source),
                f"stage {s} block {p} expand ratio", source)]
    r = image_size if image_size is not None else max(sp.resolutions)
    arch = ResNetArch(d, e, w, r).validate(sp, any_resolution=True)
    _check_layers(cfg, sp, arch, source)
    return arch


def _check_layers(cfg: Mapping, sp: ResNetSpace, arch: ResNetArch, source: str) -> None:
    """Every layer of the config against the subnet the space builds for ``arch``."""
    stem = cfg["input_stem"]
    mid, out = sp.stem_mid_widths[arch.w[0]], sp.stem_widths[arch.w[1]]
    convs = [(stem[0], 3, mid, 2)]
    if len(stem) == 3:
        convs.append((_get(stem[1], "conv", "input_stem[1]", source), mid, mid, 1))
        _expect("input_stem[1] shortcut", (stem[1].get("shortcut") or {}).get("name"),
                "IdentityLayer", source)
    convs.append((stem[-1], mid, out, 1))
    for i, (layer, cin, cout, stride) in enumerate(convs):
        where = f"stem conv {i}"
        _expect(f"{where} input channels", layer.get("in_channels"), cin, source)
        _expect(f"{where} output channels", layer.get("out_channels"), cout, source)
        _expect(f"{where} stride", layer.get("stride"), stride, source)
        _expect(f"{where} kernel", layer.get("kernel_size"), 3, source)
        _expect(f"{where} activation", layer.get("act_func"), "relu", source)
    cin = out
    for i, (b, (cout, m, stride, _identity)) in enumerate(zip(cfg["blocks"],
                                                              _block_shapes(sp, arch))):
        where = f"block {i}"
        _expect(f"{where} input channels", b.get("in_channels"), cin, source)
        _expect(f"{where} output channels", b.get("out_channels"), cout, source)
        _expect(f"{where} middle channels", b.get("mid_channels"), m, source)
        _expect(f"{where} stride", b.get("stride"), stride, source)
        _expect(f"{where} kernel", b.get("kernel_size"), 3, source)
        _expect(f"{where} activation", b.get("act_func"), "relu", source)
        _expect(f"{where} groups", b.get("groups", 1), 1, source)
        cin = cout
    head = cfg.get("classifier") or {}
    _expect("classifier input", head.get("in_features"), cin, source)
    _expect("classifier classes", head.get("out_features"), sp.num_classes, source)
    bn = cfg.get("bn") or {}
    if "eps" in bn:
        _expect("bn eps", float(bn["eps"]), sp.bn_eps, source)


def resnet_arch_from_net_config(cfg: Mapping, space: "ResNetSpace | str | None" = None, *,
                                image_size: Optional[int] = None,
                                source: str = "net.config") -> Tuple[ResNetSpace, ResNetArch]:
    """Space and arch of a parsed ResNet ``net.config``; ``space`` (optional) must be the one
    whose widths the config has. ``image_size`` defaults to the space's largest resolution and
    may lie outside its search range (LUTs and predictors refuse such sizes on their own)."""
    if not is_resnet_net_config(cfg) or cfg.get("name") != NET_NAME:
        raise ArchError(f"{source} is not a ResNets net.config (name, input_stem, blocks)")
    if not isinstance(cfg["blocks"], list) or not cfg["blocks"]:
        raise ArchError(f"{source}: 'blocks' must list the bottleneck blocks")
    candidates = [get_resnet_space(space)] if space is not None else list(RESNET_SPACES.values())
    errors = []
    for sp in candidates:
        try:
            return sp, _read(cfg, sp, image_size, source)
        except ArchError as exc:
            errors.append(exc)
    if space is not None or len(errors) == 1:
        raise errors[0]
    raise ArchError(f"{source}: a ResNets config that matches no registered ResNet space "
                    f"({', '.join(RESNET_SPACES)}): {errors[0]}")
