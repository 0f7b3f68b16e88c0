"""The reference's ``net.config`` (a static subnet it specialized) as a space plus an arch.

A ``net.config`` is what the OFA authors publish beside a specialized network's weights
(``ofa_specialized/<name>/net.config``): the whole static network, layer by layer (first conv,
``blocks`` with kernel, expand ratio, stride, SE and activation each, then the head). The
input size lives in ``run.config`` beside it (``image_size``). This module recognises the
family (from ``name``) and the registered space (from the widths), and reads the arch; every
layer of the config is checked against what the space builds for that arch, so a config that
parses is exactly the network :func:`~supernet.model.extract_subnet` will produce.

Resolutions outside the space's search range are kept (an exported or measured net may run
at any size); LUTs and accuracy predictors refuse them on their own.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, List, Mapping, Optional, Tuple

from .arch import ArchConfig, ArchError
from .space import Space, get_space, list_spaces

__all__ = ["NET_CONFIG_FAMILIES", "is_net_config", "read_net_config", "arch_from_net_config",
           "net_config_space", "net_config_file", "resolve_arch"]

# net.config "name" -> our family
NET_CONFIG_FAMILIES = {"MobileNetV3": "mbv3", "ProxylessNASNets": "proxyless"}


def is_net_config(data: Any) -> bool:
    """Whether ``data`` (parsed JSON) looks like a reference ``net.config`` (a MobileNet's or,
    with an ``input_stem``, a ResNet's)."""
    from .net_config_resnet import is_resnet_net_config

    return (isinstance(data, Mapping) and "blocks" in data and "first_conv" in data) \
        or is_resnet_net_config(data)


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ArchError(f"cannot read {what} {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ArchError(f"{what} {path} is not valid JSON: {exc}") from None


def _image_size(run_config: Mapping, source: str) -> int:
    r = run_config.get("image_size")
    if isinstance(r, (list, tuple)):  # the reference's elastic runs list several sizes
        r = max(r) if r else None
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ArchError(f"{source}: image_size must be a positive integer, got {r!r}")
    return r


def _conv(block: Mapping) -> Mapping:
    conv = block.get("mobile_inverted_conv") or block.get("conv")
    if not isinstance(conv, Mapping):
        raise ArchError("net.config block without a mobile_inverted_conv/conv layer")
    return conv


def _field(layer: Mapping, key: str, where: str):
    if key not in layer:
        raise ArchError(f"net.config {where}: missing {key!r}")
    return layer[key]


def _blocks_by_stage(blocks: List[Mapping]) -> List[List[Mapping]]:
    """Group the elastic blocks into stages by their output width (stage widths differ)."""
    stages: List[List[Mapping]] = []
    for b in blocks:
        cout = _field(_conv(b), "out_channels", "block")
        if stages and _conv(stages[-1][-1])["out_channels"] == cout:
            stages[-1].append(b)
        else:
            stages.append([b])
    return stages


def _signature(cfg: Mapping) -> dict:
    """The widths a config fixes regardless of the arch (what identifies its space)."""
    blocks = cfg["blocks"]
    first = _conv(blocks[0])
    outs: List[int] = []
    for b in blocks[1:]:
        c = _field(_conv(b), "out_channels", "block")
        if not outs or outs[-1] != c:
            outs.append(c)
    head = cfg.get("classifier") or {}
    return {"stem": _field(cfg["first_conv"], "out_channels", "first_conv"),
            "first_block": _field(first, "out_channels", "first block"),
            "stages": tuple(outs), "classes": head.get("out_features")}


def _space_signature(space: Space) -> dict:
    return {"stem": space.stem_width, "first_block": space.first_block_width,
            "stages": tuple(space.stage_widths), "classes": space.num_classes}


def _family_of(cfg: Mapping, source: str) -> str:
    name = cfg.get("name")
    if name not in NET_CONFIG_FAMILIES:
        raise ArchError(f"{source}: network {name!r} is not a family ofa-deploy knows "
                        f"({', '.join(NET_CONFIG_FAMILIES)})")
    return NET_CONFIG_FAMILIES[name]


def _find_space(cfg: Mapping, source: str) -> Space:
    family = _family_of(cfg, source)
    sig = _signature(cfg)
    candidates = [get_space(n) for n in list_spaces() if get_space(n).family == family]
    for sp in candidates:
        if _space_signature(sp) == sig:
            return sp
    widths = "/".join(map(str, (sig["stem"], sig["first_block"], *sig["stages"])))
    raise ArchError(f"{source}: a {cfg.get('name')} with widths {widths} and {sig['classes']} "
                    f"classes matches no registered space (of family {family}: "
                    f"{', '.join(sp.name for sp in candidates) or 'none'})")


def _expect(what: str, got, want, source: str) -> None:
    if got != want:
        raise ArchError(f"{source}: {what} is {got!r}, space expects {want!r}")


def arch_from_net_config(cfg: Mapping, space: "Space | str | None" = None, *,
                         image_size: Optional[int] = None, source: str = "net.config"
                         ) -> Tuple[Space, ArchConfig]:
    """Space and arch of a parsed ``net.config``; ``space`` (optional) must be the one the
    config's widths identify. ``image_size`` defaults to the space's largest resolution. A
    ResNet's config gives a :class:`~supernet.resnet_space.ResNetSpace` and
    :class:`~supernet.resnet_space.ResNetArch` (:mod:`supernet.net_config_resnet`)."""
    from .net_config_resnet import is_resnet_net_config, resnet_arch_from_net_config

    if is_resnet_net_config(cfg):
        found, arch = resnet_arch_from_net_config(cfg, image_size=image_size, source=source)
        name = getattr(space, "name", space)
        if name is not None and name != found.name:
            raise ArchError(f"{source} describes a subnet of space {found.name}, not {name}")
        return found, arch
    if not is_net_config(cfg):
        raise ArchError(f"{source} is not a net.config (no 'blocks' and 'first_conv')")
    if not isinstance(cfg["blocks"], list) or len(cfg["blocks"]) < 2:
        raise ArchError(f"{source}: 'blocks' must list the first block and the elastic blocks")
    found = _find_space(cfg, source)
    if space is not None and get_space(space).name != found.name:
        raise ArchError(f"{source} describes a subnet of space {found.name}, not "
                        f"{get_space(space).name}")
    sp = found
    bn = cfg.get("bn") or {}
    if "eps" in bn:
        _expect("bn eps", float(bn["eps"]), sp.bn_eps, source)
    fc = cfg["first_conv"]
    _expect("first_conv stride", fc.get("stride"), sp.stem_stride, source)
    _expect("first_conv activation", fc.get("act_func"), sp.stem_act, source)
    stages = _blocks_by_stage(cfg["blocks"][1:])
    if len(stages) != sp.num_stages:
        raise ArchError(f"{source}: {len(stages)} stages, space {sp.name} has {sp.num_stages}")
    ks = [sp.kernel_choices[0]] * sp.num_blocks
    e = [sp.expand_choices[0]] * sp.num_blocks
    d = []
    specs = sp.blocks
    for s, blocks in enumerate(stages):
        if len(blocks) not in sp.stage_depth_choices(s):
            raise ArchError(f"{source}: stage {s} has {len(blocks)} blocks, space {sp.name} "
                            f"allows {list(sp.stage_depth_choices(s))}")
        d.append(len(blocks))
        for p, b in enumerate(blocks):
            i = sp.stage_offsets[s] + p
            conv, spec, where = _conv(b), specs[i], f"stage {s} block {p}"
            k = _field(conv, "kernel_size", where)
            x = _field(conv, "expand_ratio", where)
            if k not in sp.kernel_choices or x not in sp.expand_choices:
                raise ArchError(f"{source}: {where} has kernel {k}, expand {x}; space "
                                f"{sp.name} has kernels {list(sp.kernel_choices)}, expands "
                                f"{list(sp.expand_choices)}")
            ks[i], e[i] = int(k), int(x)
            _expect(f"{where} input channels", conv.get("in_channels"), spec.in_channels, source)
            _expect(f"{where} stride", conv.get("stride"), spec.stride, source)
            _expect(f"{where} activation", conv.get("act_func"), spec.act, source)
            _expect(f"{where} SE", bool(conv.get("use_se")), spec.se, source)
            mid = conv.get("mid_channels")
            if mid is not None:
                _expect(f"{where} middle channels", mid,
                        sp.middle_channels(spec.in_channels, int(x)), source)
            _expect(f"{where} shortcut", b.get("shortcut") is not None, spec.identity_skip,
                    source)
    r = image_size if image_size is not None else max(sp.resolutions)
    arch = ArchConfig(ks=ks, e=e, d=d, r=r).validate(sp, any_resolution=True)
    return sp, arch


def read_net_config(path: "str | os.PathLike", space: "Space | str | None" = None
                    ) -> Tuple[Space, ArchConfig]:
    """Space and arch of a ``net.config`` file (or a directory holding one); the resolution
    is ``image_size`` of the ``run.config`` beside it, else the space's largest."""
    p = Path(path)
    if p.is_dir():
        p = p / "net.config"
    if not p.is_file():
        raise ArchError(f"net.config not found: {p}")
    cfg = _load_json(p, "net.config")
    run = p.with_name("run.config")
    r = _image_size(_load_json(run, "run.config"), str(run)) if run.is_file() else None
    return arch_from_net_config(cfg, space, image_size=r, source=str(p))


def net_config_space(text: str) -> Optional[Space]:
    """The space a ``net.config`` given as the CLI takes an arch (file, directory or inline
    JSON) describes; None when ``text`` is not a net.config (then the caller needs a space)."""
    t = text.strip()
    if t.startswith("{"):
        try:
            data = json.loads(t)
        except json.JSONDecodeError:
            return None
        return arch_from_net_config(data, source="inline net.config")[0] \
            if is_net_config(data) else None
    p = Path(t)
    if p.is_dir():
        return read_net_config(p)[0]
    if p.is_file():
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None  # not ours to report: the arch parser names the problem
        return read_net_config(p)[0] if is_net_config(data) else None
    return None


def net_config_file(text: str) -> Optional[Path]:
    """The ``net.config`` file an arch given as the CLI takes it names (the file itself, or
    the one in a directory); None for any other arch (inline JSON included: it has no file).
    Its directory's name is the specialized network's name in the reference's release
    (``ofa_specialized/<name>/net.config``)."""
    t = text.strip()
    if t.startswith("{"):
        return None
    try:
        p = Path(t)
        if p.is_dir():
            p = p / "net.config"
        if not p.is_file():
            return None
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return p if is_net_config(data) else None


def resolve_arch(text: str, space: "Space | str | None" = None) -> Tuple[Space, ArchConfig]:
    """An arch as the CLI takes it (see :meth:`ArchConfig.parse`: ``min``/``max``, compact
    string, JSON, a JSON file, a ``net.config`` file or directory) with its space: ``space``
    if given, otherwise the one a ``net.config`` identifies (other forms need ``space``)."""
    sp = get_space(space) if space is not None else net_config_space(text)
    if sp is None:
        raise ArchError("give the space (--space) for an arch that is not a net.config")
    return sp, ArchConfig.parse(text, sp)
