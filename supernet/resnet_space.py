"""The OFA ResNet50 family's records, without torch: :class:`ResNetSpace` (the searchable
choices), :class:`ResNetArch` (the reference's ``{"d", "e", "w"}`` plus the resolution, with a
compact string) and the analytic params/MACs of a subnet. The network itself (supernet,
extraction, reference checkpoints) is in :mod:`supernet.resnet`; see its docstring for the
layout."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from .arch import ArchError
from .space import make_divisible

__all__ = ["ResNetSpace", "ResNetArch", "RESNET_SPACES", "get_resnet_space", "resnet_arch_cost",
           "resnet_supernet_params", "resnet_space_stats", "inspect_resnet"]


@dataclass(frozen=True)
class ResNetSpace:
    """An OFA ResNet (bottleneck) elastic space, described by data."""

    name: str
    description: str
    resolutions: Tuple[int, ...]
    width_mult_choices: Tuple[float, ...] = (0.65, 0.8, 1.0)
    expand_choices: Tuple[float, ...] = (0.2, 0.25, 0.35)
    depth_choices: Tuple[int, ...] = (0, 1, 2)  # extra blocks per stage beyond base_depths
    base_depths: Tuple[int, ...] = (2, 2, 4, 2)
    base_stage_widths: Tuple[int, ...] = (256, 512, 1024, 2048)
    stage_strides: Tuple[int, ...] = (1, 2, 2, 2)
    stem_base_width: int = 64
    num_classes: int = 1000
    channel_divisible: int = 8
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    family: str = "resnet"

    # -- derived ---------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        """Number of bottleneck stages (4 for ResNet50)."""
        return len(self.base_depths)

    @property
    def stem_widths(self) -> Tuple[int, ...]:
        """Output widths of the last stem conv, one per width multiplier."""
        return tuple(make_divisible(self.stem_base_width * w, self.channel_divisible)
                     for w in self.width_mult_choices)

    @property
    def stem_mid_widths(self) -> Tuple[int, ...]:
        """Widths of the first two stem convs (half the stem width, rounded)."""
        return tuple(make_divisible(c // 2, self.channel_divisible) for c in self.stem_widths)

    def stage_widths(self, stage: int) -> Tuple[int, ...]:
        """Output widths of stage ``stage``'s blocks, one per width multiplier, rounded to
        ``channel_divisible``."""
        return tuple(make_divisible(self.base_stage_widths[stage] * w, self.channel_divisible)
                     for w in self.width_mult_choices)

    @property
    def stage_block_counts(self) -> Tuple[int, ...]:
        """Blocks the supernet holds per stage: the base depth plus the largest extra depth."""
        return tuple(b + max(self.depth_choices) for b in self.base_depths)

    @property
    def stage_offsets(self) -> Tuple[int, ...]:
        """Index of each stage's first block in the flat block list (and in ``ResNetArch.e``)."""
        return tuple(int(v) for v in np.cumsum((0,) + self.stage_block_counts[:-1]))

    @property
    def num_blocks(self) -> int:
        """Blocks in the supernet, over all stages (the length of ``ResNetArch.e``)."""
        return sum(self.stage_block_counts)

    @property
    def num_widths(self) -> int:
        """Entries of ``w``: two stem widths, then one per stage."""
        return self.num_stages + 2

    def middle_channels(self, out_channels: int, expand: float) -> int:
        """Bottleneck width of a block with ``out_channels`` outputs at expand ratio ``expand``,
        rounded to ``channel_divisible``."""
        return make_divisible(round(out_channels * expand), self.channel_divisible)

    def num_subnets(self, per_resolution: bool = True) -> int:
        """Distinct subnets (expand ratios of skipped blocks not counted) at one resolution, or over
        all resolutions when ``per_resolution`` is False."""
        nw, ne = len(self.width_mult_choices), len(self.expand_choices)
        n = 2 * nw * nw  # stem skip or not, two stem widths
        for b in self.base_depths:
            n *= nw * sum(ne ** (b + d) for d in self.depth_choices)
        return n if per_resolution else n * len(self.resolutions)

    def summary(self) -> str:
        """One human-readable line: widths, expand and depth choices, block counts, resolutions,
        classes."""
        res = self.resolutions
        return (f"{self.description}; widths x{self.width_mult_choices} of "
                f"{self.stem_base_width}/{'/'.join(map(str, self.base_stage_widths))}; "
                f"e{self.expand_choices} d+{self.depth_choices} blocks "
                f"{'/'.join(map(str, self.stage_block_counts))}; res {res[0]}..{res[-1]} "
                f"({len(res)}); {self.num_classes} classes")


RESNET_SPACES: Dict[str, ResNetSpace] = {
    "ofa-resnet50": ResNetSpace(
        name="ofa-resnet50",
        description="OFA ResNet50 (ImageNet, reference layout)",
        # the sizes the reference's ResNet50 accuracy predictor encodes
        resolutions=(128, 144, 160, 176, 192, 224, 240, 256),
    ),
}


def get_resnet_space(name: "str | ResNetSpace") -> ResNetSpace:
    """The registered ResNet space of that name (a :class:`ResNetSpace` passes through); raises
    :class:`ArchError` listing the known names."""
    if isinstance(name, ResNetSpace):
        return name
    try:
        return RESNET_SPACES[name]
    except KeyError:
        raise ArchError(f"unknown ResNet space {name!r}; known: {', '.join(RESNET_SPACES)}") from None


# ---------------------------------------------------------------------------- arch
@dataclass(frozen=True)
class ResNetArch:
    """One subnet: ``d`` (stem depth 0 = skip / 2 = keep, then extra blocks per stage), ``e``
    (expand ratio per block, all blocks of the supernet), ``w`` (width-multiplier *index* of
    the two stem convs and of each stage), ``r``. The reference's dict form, as its
    ``sample_active_subnet`` returns it."""

    d: Tuple[int, ...]
    e: Tuple[float, ...]
    w: Tuple[int, ...]
    r: int

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "d", tuple(int(v) for v in self.d))
            object.__setattr__(self, "w", tuple(int(v) for v in self.w))
            object.__setattr__(self, "e", tuple(float(v) for v in self.e))
            object.__setattr__(self, "r", int(self.r))
        except (TypeError, ValueError):
            raise ArchError(f"a ResNet arch needs integer d, w, r and numeric e, got "
                            f"d={self.d!r} e={self.e!r} w={self.w!r} r={self.r!r}") from None

    def validate(self, space: "ResNetSpace | str", *, any_resolution: bool = False) -> "ResNetArch":
        """Return ``self`` if the arch fits ``space``, else raise :class:`ArchError` naming the
        field; ``any_resolution`` accepts input sizes outside the space's search range."""
        sp = get_resnet_space(space)
        if len(self.d) != sp.num_stages + 1:
            raise ArchError(f"d has {len(self.d)} entries, space {sp.name} needs "
                            f"{sp.num_stages + 1} (stem, then one per stage)")
        if len(self.e) != sp.num_blocks:
            raise ArchError(f"e has {len(self.e)} entries, space {sp.name} has {sp.num_blocks} blocks")
        if len(self.w) != sp.num_widths:
            raise ArchError(f"w has {len(self.w)} entries, space {sp.name} needs {sp.num_widths}")
        stem_ok = (min(sp.depth_choices), max(sp.depth_choices))
        if self.d[0] not in stem_ok:
            raise ArchError(f"d[0]={self.d[0]} (input stem) must be {stem_ok[0]} (skip) or "
                            f"{stem_ok[1]} (keep)")
        for i, v in enumerate(self.d[1:], start=1):
            if v not in sp.depth_choices:
                raise ArchError(f"d[{i}]={v} not in depth choices {list(sp.depth_choices)}")
        for i, v in enumerate(self.w):
            if not 0 <= v < len(sp.width_mult_choices):
                raise ArchError(f"w[{i}]={v} is not a width index (0..{len(sp.width_mult_choices) - 1})")
        active = self.active_mask(sp)
        for i, v in enumerate(self.e):
            if active[i] and not any(abs(v - c) < 1e-9 for c in sp.expand_choices):
                raise ArchError(f"e[{i}]={v} not in expand choices {list(sp.expand_choices)}")
        if any_resolution:
            if self.r < 1:
                raise ArchError(f"resolution must be positive, got {self.r}")
        elif self.r not in sp.resolutions:
            raise ArchError(f"resolution {self.r} not in space {sp.name} resolutions "
                            f"({sp.resolutions[0]}..{sp.resolutions[-1]}, {len(sp.resolutions)} values)")
        return self

    @property
    def skip_stem(self) -> bool:
        """True when the input stem's residual conv is skipped (``d[0] == 0``)."""
        return self.d[0] == 0

    def active_mask(self, space: "ResNetSpace | str") -> Tuple[bool, ...]:
        """One boolean per supernet block: True where the block runs under its stage's depth."""
        sp = get_resnet_space(space)
        return tuple(p < b + self.d[s + 1] for s, (b, n) in
                     enumerate(zip(sp.base_depths, sp.stage_block_counts)) for p in range(n))

    def active_blocks(self, space: "ResNetSpace | str") -> Tuple[int, ...]:
        """Indices (into ``e``) of the blocks that run, in network order."""
        return tuple(i for i, a in enumerate(self.active_mask(space)) if a)

    def canonical(self, space: "ResNetSpace | str") -> "ResNetArch":
        """The same network with skipped blocks' expand reset to the first choice, so equal networks
        compare equal."""
        sp = get_resnet_space(space)
        e = tuple(v if a else sp.expand_choices[0] for v, a in zip(self.e, self.active_mask(sp)))
        return ResNetArch(self.d, e, self.w, self.r)

    def with_resolution(self, r: int) -> "ResNetArch":
        """The same subnet at input size ``r`` (not validated)."""
        return ResNetArch(self.d, self.e, self.w, r)

    @classmethod
    def max(cls, space: "ResNetSpace | str", r: int | None = None) -> "ResNetArch":
        """The largest subnet: stem kept, deepest stages, largest expand and widths; the largest
        resolution unless ``r`` is given."""
        sp = get_resnet_space(space)
        return cls((max(sp.depth_choices),) * (sp.num_stages + 1),
                   (max(sp.expand_choices),) * sp.num_blocks,
                   (len(sp.width_mult_choices) - 1,) * sp.num_widths,
                   max(sp.resolutions) if r is None else r)

    @classmethod
    def min(cls, space: "ResNetSpace | str", r: int | None = None) -> "ResNetArch":
        """The smallest subnet: stem skipped, shallowest stages, smallest expand and widths; the
        smallest resolution unless ``r`` is given."""
        sp = get_resnet_space(space)
        return cls((min(sp.depth_choices),) * (sp.num_stages + 1),
                   (min(sp.expand_choices),) * sp.num_blocks, (0,) * sp.num_widths,
                   min(sp.resolutions) if r is None else r)

    @classmethod
    def sample(cls, space: "ResNetSpace | str", rng: np.random.Generator) -> "ResNetArch":
        """Uniform per dimension (the stem: keep or skip), all randomness from ``rng``."""
        sp = get_resnet_space(space)
        dmin, dmax = min(sp.depth_choices), max(sp.depth_choices)
        d = [dmax if rng.random() < 0.5 else dmin] + \
            rng.choice(sp.depth_choices, sp.num_stages).tolist()
        e = rng.choice(sp.expand_choices, sp.num_blocks).tolist()
        w = rng.integers(len(sp.width_mult_choices), size=sp.num_widths).tolist()
        r = int(sp.resolutions[int(rng.integers(len(sp.resolutions)))])
        return cls(d, e, w, r).canonical(sp)

    def to_dict(self) -> dict:
        """JSON-ready ``{"d", "e", "w", "r"}`` dict of lists; :meth:`from_dict` reads it back."""
        return {"d": list(self.d), "e": list(self.e), "w": list(self.w), "r": self.r}

    @classmethod
    def from_dict(cls, data: Mapping, space: "ResNetSpace | str") -> "ResNetArch":
        """The reference's ``{"d", "e", "w"}`` dict with ``image_size`` (or ``r``)."""
        if not isinstance(data, Mapping):
            raise ArchError(f"an arch must be a JSON object, got {type(data).__name__}")
        if "arch" in data and isinstance(data["arch"], Mapping):  # e.g. a report.json
            data = data["arch"]
        missing = [k for k in ("d", "e", "w") if k not in data]
        if missing:
            raise ArchError(f"ResNet arch is missing field(s): {', '.join(missing)}")
        sp = get_resnet_space(space)
        r = data.get("image_size", data.get("r", max(sp.resolutions)))
        if isinstance(r, (list, tuple)):
            r = r[0] if len(r) == 1 else r
        return cls(data["d"], data["e"], data["w"], r).validate(sp)

    def to_string(self, space: "ResNetSpace | str") -> str:
        """``r224-d2.2.1.0.2-w2.1.2.0.1.2-e0120.21.012210.0`` (e: expand-choice index of each
        running block, stages separated by dots)."""
        sp = get_resnet_space(space)
        es = []
        for s in range(sp.num_stages):
            off, n = sp.stage_offsets[s], sp.base_depths[s] + self.d[s + 1]
            es.append("".join(str(_index(sp.expand_choices, v)) for v in self.e[off:off + n]))
        return (f"r{self.r}-d{'.'.join(map(str, self.d))}-w{'.'.join(map(str, self.w))}"
                f"-e{'.'.join(es)}")

    _STR_RE = re.compile(r"^r(\d+)-d([\d.]+)-w([\d.]+)-e([\d.]+)$")

    @classmethod
    def from_string(cls, text: str, space: "ResNetSpace | str") -> "ResNetArch":
        """Parse :meth:`to_string`'s compact form and validate it against ``space``; raises
        :class:`ArchError` naming the part that does not fit."""
        sp = get_resnet_space(space)
        m = cls._STR_RE.match(text.strip())
        if not m:
            raise ArchError(f"cannot parse ResNet arch string {text!r} "
                            f"(expected r<R>-d<..>-w<..>-e<..>)")
        d = [int(x) for x in m.group(2).split(".")]
        w = [int(x) for x in m.group(3).split(".")]
        est = m.group(4).split(".")
        if len(d) != sp.num_stages + 1 or len(est) != sp.num_stages:
            raise ArchError(f"arch string {text!r} must have {sp.num_stages + 1} depths and "
                            f"{sp.num_stages} expand groups")
        e = [sp.expand_choices[0]] * sp.num_blocks
        for s, digits in enumerate(est):
            n = sp.base_depths[s] + d[s + 1]
            if len(digits) != n:
                raise ArchError(f"arch string {text!r}: stage {s} runs {n} blocks but has "
                                f"{len(digits)} expands")
            for p, c in enumerate(digits):
                if int(c) >= len(sp.expand_choices):
                    raise ArchError(f"arch string {text!r}: expand index {c} out of range")
                e[sp.stage_offsets[s] + p] = sp.expand_choices[int(c)]
        return cls(d, e, w, int(m.group(1))).validate(sp)

    @classmethod
    def parse(cls, text: str, space: "ResNetSpace | str") -> "ResNetArch":
        """``min``, ``max``, a compact string, inline JSON, or a path to a JSON file; a
        reference ``net.config`` (file, its directory, or inline) must describe a subnet of
        ``space`` and may have any resolution (see :mod:`supernet.net_config_resnet`)."""
        from .arch import parse_arch_text

        return parse_arch_text(cls, text, get_resnet_space(space))


def _index(choices: Sequence[float], v: float) -> int:
    for i, c in enumerate(choices):
        if abs(c - v) < 1e-9:
            return i
    raise ArchError(f"{v} not among {list(choices)}")


# ---------------------------------------------------------------------------- layers


def _stage_of(sp: ResNetSpace, block: int) -> int:
    return int(np.searchsorted(np.asarray(sp.stage_offsets), block, side="right")) - 1


# ---------------------------------------------------------------------------- static subnet


def _block_shapes(sp: ResNetSpace, arch: ResNetArch) -> List[Tuple[int, int, int, bool]]:
    """(out, middle, stride, identity shortcut) of each running block, in order."""
    out = []
    for i in arch.active_blocks(sp):
        s = _stage_of(sp, i)
        cout = sp.stage_widths(s)[arch.w[s + 2]]
        first = i == sp.stage_offsets[s]
        stride = sp.stage_strides[s] if first else 1
        # the supernet's first block of a stage always has the conv shortcut
        out.append((cout, sp.middle_channels(cout, arch.e[i]), stride, not first))
    return out


def _out(h: int, stride: int) -> int:
    return (h - 1) // stride + 1


def resnet_arch_cost(space: "ResNetSpace | str", arch: ResNetArch) -> Dict[str, int]:
    """Params and MACs of ``arch`` counted the reference's way (convs and the linear)."""
    sp = get_resnet_space(space)
    arch = arch.validate(sp, any_resolution=True)
    m0, c0 = sp.stem_mid_widths[arch.w[0]], sp.stem_widths[arch.w[1]]
    h = _out(arch.r, 2)
    params = 27 * m0 + 2 * m0 + 9 * m0 * c0 + 2 * c0
    macs = h * h * (27 * m0 + 9 * m0 * c0)
    if not arch.skip_stem:
        params += 9 * m0 * m0 + 2 * m0
        macs += h * h * 9 * m0 * m0
    h = _out(h, 2)  # max pool
    cin = c0
    for cout, mid, stride, identity in _block_shapes(sp, arch):
        ho = _out(h, stride)
        params += cin * mid + 9 * mid * mid + mid * cout + 2 * (2 * mid + cout)
        macs += h * h * cin * mid + ho * ho * (9 * mid * mid + mid * cout)
        if not identity:
            params += cin * cout + 2 * cout
            macs += ho * ho * cin * cout
        h, cin = ho, cout
    params += cin * sp.num_classes + sp.num_classes
    macs += cin * sp.num_classes
    return {"params": int(params), "macs": int(macs)}


def resnet_supernet_params(space: "ResNetSpace | str") -> int:
    """Every parameter of the supernet is in its largest subnet (no kernel transforms)."""
    return resnet_arch_cost(space, ResNetArch.max(space))["params"]


def resnet_space_stats(space: "ResNetSpace | str") -> dict:
    """What ``inspect`` reports for a space (same keys as :func:`supernet.cost.space_stats`)."""
    sp = get_resnet_space(space)
    lo, hi = ResNetArch.min(sp), ResNetArch.max(sp)
    per_res = sp.num_subnets(per_resolution=True)
    return {
        "space": sp.name,
        "family": sp.family,
        "supernet_params": resnet_supernet_params(sp),
        "num_subnets": {"per_resolution": per_res, "resolutions": len(sp.resolutions),
                        "total": per_res * len(sp.resolutions)},
        "min": {"arch": lo.to_dict(), **resnet_arch_cost(sp, lo)},
        "max": {"arch": hi.to_dict(), **resnet_arch_cost(sp, hi)},
        "macs_by_resolution": {
            str(r): {"min": resnet_arch_cost(sp, ResNetArch.min(sp, r))["macs"],
                     "max": resnet_arch_cost(sp, ResNetArch.max(sp, r))["macs"]}
            for r in sp.resolutions},
    }


def inspect_resnet(space: "ResNetSpace | str", arch: "str | None" = None,
                   resolution: "int | None" = None) -> dict:
    """``inspect``'s document for a ResNet space and optionally one arch (CLI form)."""
    sp = get_resnet_space(space)
    data = resnet_space_stats(sp)
    if arch is not None:
        a = ResNetArch.parse(arch, sp)
        if resolution is not None:
            a = ResNetArch(a.d, a.e, a.w, resolution).validate(sp)
        data.update({"arch": a.to_dict(), "arch_string": a.to_string(sp),
                     **resnet_arch_cost(sp, a)})
    return data
