"""Search spaces as data.

A space is a frozen dataclass; adding a space means registering a new entry, never a new
class. Every derived quantity (block strides, middle widths, SE widths) is computed here so
the supernet, the cost model and the op enumeration read the same numbers.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

from .errors import OfaDeployError

__all__ = [
    "Space",
    "SPACES",
    "register_space",
    "get_space",
    "list_spaces",
    "make_divisible",
    "BlockSpec",
    "SpaceError",
    "Family",
    "FAMILIES",
    "FAMILY_MODULES",
    "register_family",
    "get_family",
]


class SpaceError(OfaDeployError, KeyError):
    """Unknown space name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round to the nearest multiple of ``divisor`` without losing more than 10%.

    This is the rounding rule of the MobileNet family; keeping it bit-exact is what makes the
    channel counts (and so checkpoints and published tables) line up with the reference.
    """
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return int(new_v)


@dataclass(frozen=True)
class BlockSpec:
    """Static facts about one elastic block of a space (everything but the choices)."""

    index: int  # 0-based among elastic blocks
    stage: int  # 0-based elastic stage
    position: int  # 0-based position inside its stage
    in_channels: int
    out_channels: int
    stride: int
    act: str
    se: bool

    @property
    def identity_skip(self) -> bool:
        """True when the block adds an identity shortcut: stride 1 and equal input and output
        widths."""
        return self.stride == 1 and self.in_channels == self.out_channels


@dataclass(frozen=True)
class Family:
    """What differs between OFA families (MobileNetV3, ProxylessNAS, ...), as hooks.

    The space dataclass describes stem, first block and elastic blocks for every family; a
    family supplies the rest: the fixed layers after the last block (modules, their forward
    and their op keys). Adding a family is one module that builds a ``Family``, calls
    :func:`register_family` and registers its spaces, plus its line in :data:`FAMILY_MODULES`.
    """

    name: str
    description: str
    # (space, h) -> the op keys after the last elastic block, for input size h
    head_ops: Callable
    # (net, space) -> None: adds the head modules to a Supernet or Subnet
    build_head: Callable
    # (net, x) -> logits, from the last block's output
    head_forward: Callable
    # names of the head modules, in execution order (copied one-to-one at extraction)
    head_modules: Tuple[str, ...]


FAMILIES: Dict[str, Family] = {}

# The module of each family, imported on first need (it registers its Family and its spaces),
# so that importing this module stays light. Adding a family: one module, one line here.
FAMILY_MODULES: Dict[str, str] = {
    "mbv3": "supernet.mbv3",
    "proxyless": "supernet.proxyless",
}
_families_loaded = False


def _load_families() -> None:
    global _families_loaded
    if _families_loaded:
        return
    _families_loaded = True  # set first: the modules call back into this one
    import importlib

    for module in FAMILY_MODULES.values():
        importlib.import_module(module)


def register_family(family: Family) -> Family:
    """Register a :class:`Family` under its name (once)."""
    if family.name in FAMILIES:
        raise ValueError(f"family {family.name!r} registered twice")
    FAMILIES[family.name] = family
    return family


def get_family(space_or_name: "Space | str") -> Family:
    """The :class:`Family` of a space (or a family name)."""
    name = space_or_name.family if isinstance(space_or_name, Space) else space_or_name
    _load_families()
    try:
        return FAMILIES[name]
    except KeyError:
        raise SpaceError(f"unknown family {name!r}; known families: {', '.join(FAMILIES)}") from None


@dataclass(frozen=True)
class Space:
    """An OFA elastic space of inverted-residual blocks, fully described by data.

    ``family`` names the :class:`Family` that builds the layers after the last block.
    ``fixed_stage_depths`` (one entry per stage, or empty) marks stages whose depth is not
    elastic: 0 = elastic over ``depth_choices``, n > 0 = always n blocks (ProxylessNAS's
    last stage has a single block).
    """

    name: str
    description: str
    stem_width: int
    stem_stride: int
    first_block_width: int
    first_block_act: str
    first_block_se: bool
    stage_widths: Tuple[int, ...]
    stage_strides: Tuple[int, ...]
    stage_acts: Tuple[str, ...]
    stage_se: Tuple[bool, ...]
    final_expand_width: int
    feature_mix_width: int
    num_classes: int
    resolutions: Tuple[int, ...]
    kernel_choices: Tuple[int, ...] = (3, 5, 7)
    expand_choices: Tuple[int, ...] = (3, 4, 6)
    depth_choices: Tuple[int, ...] = (2, 3, 4)
    se_reduction: int = 4
    channel_divisible: int = 8
    dropout: float = 0.1
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    stem_act: str = "h_swish"
    head_act: str = "h_swish"
    family: str = "mbv3"
    fixed_stage_depths: Tuple[int, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.stage_widths)
        if self.fixed_stage_depths and len(self.fixed_stage_depths) != n:
            raise ValueError(f"space {self.name!r}: fixed_stage_depths must have {n} entries")
        if any(d < 0 for d in self.fixed_stage_depths):
            raise ValueError(f"space {self.name!r}: fixed_stage_depths must be >= 0")
        for fname in ("stage_strides", "stage_acts", "stage_se"):
            if len(getattr(self, fname)) != n:
                raise ValueError(f"space {self.name!r}: {fname} must have {n} entries")
        for fname in ("kernel_choices", "expand_choices", "depth_choices", "resolutions"):
            vals = getattr(self, fname)
            if not vals or list(vals) != sorted(set(vals)):
                raise ValueError(f"space {self.name!r}: {fname} must be non-empty, sorted, unique")
        if any(k % 2 == 0 for k in self.kernel_choices):
            raise ValueError(f"space {self.name!r}: kernel sizes must be odd")
        for a in (*self.stage_acts, self.first_block_act, self.stem_act, self.head_act):
            if a not in ("relu", "h_swish", "relu6"):
                raise ValueError(f"space {self.name!r}: unknown activation {a!r}")

    # -- derived structure -------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        """Number of elastic stages (the fixed first block is not one)."""
        return len(self.stage_widths)

    @property
    def max_depth(self) -> int:
        """The largest elastic depth choice."""
        return max(self.depth_choices)

    def stage_depth_choices(self, stage: int) -> Tuple[int, ...]:
        """Depths stage ``stage`` can take: the elastic choices, or its one fixed depth."""
        fixed = self.fixed_stage_depths[stage] if self.fixed_stage_depths else 0
        return (fixed,) if fixed else self.depth_choices

    def fit_depths(self, d) -> Tuple[int, ...]:
        """``d`` (one depth per stage) with every fixed-depth stage set to its one depth, so
        that a depth drawn or written for all stages alike fits the space."""
        return tuple(int(v) if el else self.stage_depth_choices(s)[0]
                     for s, (v, el) in enumerate(zip(d, self.elastic_depth_stages)))

    @functools.cached_property  # the space is frozen: derived once
    def elastic_depth_stages(self) -> Tuple[bool, ...]:
        """Per stage, whether its depth is elastic."""
        return tuple(not (self.fixed_stage_depths and self.fixed_stage_depths[s])
                     for s in range(self.num_stages))

    @functools.cached_property  # the space is frozen: derived once
    def stage_block_counts(self) -> Tuple[int, ...]:
        """Blocks the supernet holds per stage (the largest depth of each stage)."""
        return tuple(max(self.stage_depth_choices(s)) for s in range(self.num_stages))

    @functools.cached_property  # the space is frozen: derived once
    def stage_offsets(self) -> Tuple[int, ...]:
        """Index of each stage's first block among the elastic blocks."""
        out, acc = [], 0
        for n in self.stage_block_counts:
            out.append(acc)
            acc += n
        return tuple(out)

    @functools.cached_property  # the space is frozen: derived once
    def block_stages(self) -> Tuple[int, ...]:
        """Stage of each elastic block."""
        return tuple(s for s, n in enumerate(self.stage_block_counts) for _ in range(n))

    @functools.cached_property  # the space is frozen: derived once
    def block_positions(self) -> Tuple[int, ...]:
        """Position of each elastic block inside its stage (a block runs iff position < d)."""
        return tuple(p for n in self.stage_block_counts for p in range(n))

    @property
    def num_blocks(self) -> int:
        """Number of elastic blocks in the supernet (sum of the stages' largest depths)."""
        return sum(self.stage_block_counts)

    @property
    def blocks(self) -> Tuple[BlockSpec, ...]:
        """A :class:`BlockSpec` for every elastic block of the supernet, in network order."""
        out = []
        cin = self.first_block_width
        for s in range(self.num_stages):
            for p in range(self.stage_block_counts[s]):
                out.append(
                    BlockSpec(
                        index=len(out),
                        stage=s,
                        position=p,
                        in_channels=cin,
                        out_channels=self.stage_widths[s],
                        stride=self.stage_strides[s] if p == 0 else 1,
                        act=self.stage_acts[s],
                        se=self.stage_se[s],
                    )
                )
                cin = self.stage_widths[s]
        return tuple(out)

    @property
    def first_block_skip(self) -> bool:
        """True when the fixed first block has an identity shortcut (its width equals the stem's)."""
        return self.stem_width == self.first_block_width

    @property
    def downsample(self) -> int:
        """Total stride from input to the last block's feature map (stem stride times stage
        strides)."""
        f = self.stem_stride
        for s in self.stage_strides:
            f *= s
        return f

    def middle_channels(self, in_channels: int, expand: int) -> int:
        """Width inside a block with ``in_channels`` inputs at expand ratio ``expand``, rounded to
        ``channel_divisible``."""
        return make_divisible(round(in_channels * expand), self.channel_divisible)

    def max_middle_channels(self, in_channels: int) -> int:
        """Middle width at the largest expand ratio: the width the supernet's weights are allocated
        at."""
        return self.middle_channels(in_channels, max(self.expand_choices))

    def se_channels(self, middle: int) -> int:
        """Hidden width of the squeeze-and-excitation of a block with ``middle`` middle channels
        (``middle // se_reduction``, rounded to ``channel_divisible``)."""
        return make_divisible(middle // self.se_reduction, self.channel_divisible)

    def num_subnets(self, per_resolution: bool = True) -> int:
        """Distinct (kernel, expand) x depth combinations, optionally times resolutions."""
        per_block = len(self.kernel_choices) * len(self.expand_choices)
        n = 1
        for s in range(self.num_stages):
            n *= sum(per_block**d for d in self.stage_depth_choices(s))
        return n if per_resolution else n * len(self.resolutions)

    def summary(self) -> str:
        """One human-readable line: widths, kernel, expand and depth choices, resolutions, classes."""
        res = self.resolutions
        res_s = f"{res[0]}..{res[-1]} ({len(res)})" if len(res) > 1 else str(res[0])
        return (
            f"{self.description}; widths {self.stem_width}/{self.first_block_width}/"
            f"{'/'.join(map(str, self.stage_widths))}/{self.final_expand_width}"
            f"{'/' + str(self.feature_mix_width) if self.feature_mix_width else ''}; "
            f"k{self.kernel_choices} e{self.expand_choices} d{self.depth_choices}"
            f"{' blocks ' + '/'.join(map(str, self.stage_block_counts)) if self.fixed_stage_depths else ''}"
            f"; res {res_s}; {self.num_classes} classes"
        )

    # -- state -------------------------------------------------------------------------
    def get_state(self) -> dict:
        """JSON-ready dict of every field (tuples as lists); :meth:`from_state` rebuilds an equal
        space from it."""
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_state(cls, state: dict) -> "Space":
        """Rebuild a space from :meth:`get_state`'s dict; raises ValueError naming unknown fields or
        any field the space's checks reject."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(state) - set(fields))
        if unknown:
            raise ValueError(f"unknown space fields: {', '.join(unknown)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in state.items()}
        return cls(**kw)

    from_config = from_state


SPACES: Dict[str, Callable[[], Space]] = {}


def register_space(fn: Callable[[], Space]) -> Callable[[], Space]:
    """Decorator: register a zero-argument space factory under the name it returns."""
    space = fn()
    if space.name in SPACES:
        raise ValueError(f"space {space.name!r} registered twice")
    SPACES[space.name] = fn
    return fn


def list_spaces() -> Tuple[str, ...]:
    """Names of every registered space (those of every family in :data:`FAMILY_MODULES`)."""
    _load_families()
    return tuple(SPACES)


# Spaces of families whose arch record is not ArchConfig (their own module serves them), so
# that commands built on ArchConfig can say so instead of "unknown space".
OTHER_SPACES: Dict[str, str] = {
    "ofa-resnet50": "of the ResNet50 family, served so far by `spaces`, `inspect`, `search` "
                    "(latency / MACs / params budgets), `profile`, `lut` (tables of its ops), "
                    "`export` (from a checkpoint file) and the Python API (supernet.resnet, "
                    "supernet.resnet_ops, ofa_deploy.accuracy_resnet); not by this command yet",
}


def get_space(name: "str | Space") -> Space:
    """The registered :class:`Space` called ``name`` (a Space is returned as is)."""
    if isinstance(name, Space):
        return name
    if name not in SPACES:
        _load_families()
    try:
        return SPACES[name]()
    except KeyError:
        if name in OTHER_SPACES:
            raise SpaceError(f"space {name!r} is {OTHER_SPACES[name]}") from None
        raise SpaceError(
            f"unknown space {name!r}; known spaces: {', '.join(SPACES)}"
        ) from None


_OFA_BASE = (16, 16, 24, 40, 80, 112, 160, 960, 1280)


def _ofa_mbv3(width_mult: float, resolutions: Tuple[int, ...], name: str) -> Space:
    w = [make_divisible(b * width_mult, 8) for b in _OFA_BASE]
    return Space(
        name=name,
        description=f"OFA MobileNetV3 w{width_mult} (ImageNet, reference layout)",
        stem_width=w[0],
        stem_stride=2,
        first_block_width=w[1],
        first_block_act="relu",
        first_block_se=False,
        stage_widths=tuple(w[2:7]),
        stage_strides=(2, 2, 2, 1, 2),
        stage_acts=("relu", "relu", "h_swish", "h_swish", "h_swish"),
        stage_se=(False, True, False, True, True),
        final_expand_width=w[7],
        feature_mix_width=w[8],
        num_classes=1000,
        resolutions=resolutions,
    )


@register_space
def ofa_mbv3_w10() -> Space:
    """The reference OFA MobileNetV3 space at width 1.0 (``ofa-mbv3-w1.0``), resolutions 128..224 in
    steps of 4."""
    return _ofa_mbv3(1.0, tuple(range(128, 225, 4)), "ofa-mbv3-w1.0")


@register_space
def ofa_mbv3_w12() -> Space:
    """The reference OFA MobileNetV3 space at width 1.2 (``ofa-mbv3-w1.2``), resolutions 160..224 in
    steps of 4."""
    return _ofa_mbv3(1.2, tuple(range(160, 225, 4)), "ofa-mbv3-w1.2")


@register_space
def ofa_mbv3_tiny() -> Space:
    # Same topology as the ImageNet spaces, narrower, and a stride-1 stem so that 32..64 px
    # inputs (Fashion-MNIST upscaled) still end at 2x2..4x4 before pooling.
    """``ofa-mbv3-tiny``: the MobileNetV3 topology, narrow, 10 classes, 32..64 px inputs: the
    default space for Fashion-MNIST training on a CPU."""
    return Space(
        name="ofa-mbv3-tiny",
        description="OFA MobileNetV3 topology for small CPU work (Fashion-MNIST default)",
        stem_width=16,
        stem_stride=1,
        first_block_width=16,
        first_block_act="relu",
        first_block_se=False,
        stage_widths=(16, 24, 32, 48, 64),
        stage_strides=(2, 2, 2, 1, 2),
        stage_acts=("relu", "relu", "h_swish", "h_swish", "h_swish"),
        stage_se=(False, True, False, True, True),
        final_expand_width=256,
        feature_mix_width=512,
        num_classes=10,
        resolutions=(32, 40, 48, 56, 64),
    )
