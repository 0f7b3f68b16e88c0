"""ArchConfig: one subnet of a space (kernel and expand per block, depth per stage, resolution)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence, Tuple

import numpy as np

from .errors import OfaDeployError
from .space import Space, get_space

__all__ = ["ArchConfig", "ArchError"]


class ArchError(OfaDeployError, ValueError):
    """An arch that does not fit its space; the message names the offending field."""


def _ints(name: str, values) -> Tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ArchError(f"{name} must be a list of integers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) and not (
            isinstance(v, float) and float(v).is_integer()
        ):
            raise ArchError(f"{name} must contain integers, got {v!r}")
        out.append(int(v))
    return tuple(out)


@dataclass(frozen=True)
class ArchConfig:
    """Immutable subnet description.

    ``ks`` and ``e`` hold one entry per elastic block of the supernet (the sum of the stages'
    largest depths), as in the reference; entries of blocks skipped by ``d`` are kept but carry no meaning, and
    :meth:`canonical` resets them so that equal networks compare equal.
    """

    ks: Tuple[int, ...]
    e: Tuple[int, ...]
    d: Tuple[int, ...]
    r: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "ks", _ints("ks", self.ks))
        object.__setattr__(self, "e", _ints("e", self.e))
        object.__setattr__(self, "d", _ints("d", self.d))
        if isinstance(self.r, bool) or not isinstance(self.r, (int, np.integer)):
            raise ArchError(f"resolution must be an integer, got {self.r!r}")
        object.__setattr__(self, "r", int(self.r))

    # -- validation --------------------------------------------------------------------
    def validate(self, space: "Space | str", *, any_resolution: bool = False) -> "ArchConfig":
        """Raise :class:`ArchError` unless the arch fits ``space``; ``any_resolution`` accepts
        input sizes outside the space's search range (extraction, export and analytic costs
        work at any size; LUTs and predictors check resolutions themselves)."""
        space = get_space(space)
        nb, ns = space.num_blocks, space.num_stages
        if len(self.d) != ns:
            raise ArchError(f"d has {len(self.d)} entries, space {space.name} has {ns} stages")
        if len(self.ks) != nb:
            raise ArchError(f"ks has {len(self.ks)} entries, space {space.name} has {nb} blocks")
        if len(self.e) != nb:
            raise ArchError(f"e has {len(self.e)} entries, space {space.name} has {nb} blocks")
        for i, v in enumerate(self.d):
            if v not in space.stage_depth_choices(i):
                raise ArchError(f"d[{i}]={v} not in depth choices "
                                f"{list(space.stage_depth_choices(i))} of stage {i}")
        active = self.active_mask(space)
        for i, (k, e) in enumerate(zip(self.ks, self.e)):
            if not active[i]:
                continue
            if k not in space.kernel_choices:
                raise ArchError(f"ks[{i}]={k} not in kernel choices {list(space.kernel_choices)}")
            if e not in space.expand_choices:
                raise ArchError(f"e[{i}]={e} not in expand choices {list(space.expand_choices)}")
        if any_resolution:
            if self.r < 1:
                raise ArchError(f"resolution must be positive, got {self.r}")
        elif self.r not in space.resolutions:
            lo, hi = space.resolutions[0], space.resolutions[-1]
            raise ArchError(
                f"resolution {self.r} not in space {space.name} resolutions ({lo}..{hi}, "
                f"{len(space.resolutions)} values)"
            )
        return self

    def active_mask(self, space: "Space | str") -> Tuple[bool, ...]:
        """One boolean per elastic block of ``space``: True where the block runs (its position in
        the stage is below the stage's depth ``d``)."""
        space = get_space(space)
        return tuple(p < self.d[s] for s, p in zip(space.block_stages, space.block_positions))

    def active_blocks(self, space: "Space | str") -> Tuple[int, ...]:
        """Indices (into ``ks``/``e``) of the blocks that run, in network order."""
        return tuple(i for i, a in enumerate(self.active_mask(space)) if a)

    def canonical(self, space: "Space | str") -> "ArchConfig":
        """The same network with the kernel and expand of skipped blocks reset to the space's first
        choice, so that two archs describing one network compare and hash equal."""
        space = get_space(space)
        mask = self.active_mask(space)
        k0, e0 = space.kernel_choices[0], space.expand_choices[0]
        return ArchConfig(
            ks=tuple(k if m else k0 for k, m in zip(self.ks, mask)),
            e=tuple(e if m else e0 for e, m in zip(self.e, mask)),
            d=self.d,
            r=self.r,
        )

    def with_resolution(self, r: int) -> "ArchConfig":
        """A copy with input resolution ``r`` (pixels); not validated against the space."""
        return ArchConfig(self.ks, self.e, self.d, r)

    # -- construction ------------------------------------------------------------------
    @classmethod
    def max(cls, space: "Space | str", r: int | None = None) -> "ArchConfig":
        """The largest subnet: largest kernel and expand in every block, deepest stages, and the
        largest resolution of ``space`` unless ``r`` is given."""
        space = get_space(space)
        return cls(
            ks=(max(space.kernel_choices),) * space.num_blocks,
            e=(max(space.expand_choices),) * space.num_blocks,
            d=tuple(max(space.stage_depth_choices(s)) for s in range(space.num_stages)),
            r=max(space.resolutions) if r is None else r,
        ).validate(space)

    @classmethod
    def min(cls, space: "Space | str", r: int | None = None) -> "ArchConfig":
        """The smallest subnet: smallest kernel and expand in every block, shallowest stages, and
        the smallest resolution of ``space`` unless ``r`` is given."""
        space = get_space(space)
        return cls(
            ks=(min(space.kernel_choices),) * space.num_blocks,
            e=(min(space.expand_choices),) * space.num_blocks,
            d=tuple(min(space.stage_depth_choices(s)) for s in range(space.num_stages)),
            r=min(space.resolutions) if r is None else r,
        ).validate(space)

    @classmethod
    def sample(
        cls,
        space: "Space | str",
        rng: np.random.Generator,
        *,
        resolutions: Sequence[int] | None = None,
    ) -> "ArchConfig":
        """Uniform sample per dimension; all randomness comes from ``rng``."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError("rng must be a numpy.random.Generator (use numpy.random.default_rng(seed))")
        space = get_space(space)
        res = list(space.resolutions if resolutions is None else resolutions)
        # every stage draws a depth (so the random stream does not depend on which stages
        # are fixed); fixed stages then take their one value
        d = rng.choice(space.depth_choices, size=space.num_stages).tolist()
        arch = cls(
            ks=tuple(rng.choice(space.kernel_choices, size=space.num_blocks).tolist()),
            e=tuple(rng.choice(space.expand_choices, size=space.num_blocks).tolist()),
            d=space.fit_depths(d),
            r=int(res[int(rng.integers(len(res)))]),
        )
        return arch.canonical(space)

    # -- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready ``{"ks", "e", "d", "r"}`` dict of lists; :meth:`from_dict` reads it back."""
        return {"ks": list(self.ks), "e": list(self.e), "d": list(self.d), "r": self.r}

    @classmethod
    def from_dict(cls, data: Mapping, space: "Space | str | None" = None) -> "ArchConfig":
        """Read our dicts and the reference's ``{"ks","e","d","image_size"|"r"}`` dicts."""
        if not isinstance(data, Mapping):
            raise ArchError(f"an arch must be a JSON object, got {type(data).__name__}")
        if "arch" in data and isinstance(data["arch"], Mapping):  # e.g. a report.json
            data = data["arch"]
        missing = [k for k in ("ks", "e", "d") if k not in data]
        if missing:
            raise ArchError(f"arch is missing field(s): {', '.join(missing)}")
        r = None
        for key in ("r", "image_size", "resolution"):
            if key in data and data[key] is not None:
                r = data[key]
                break
        if isinstance(r, (list, tuple)):  # the reference sometimes stores [r]
            r = r[0] if len(r) == 1 else r
        if r is None:
            if space is None:
                raise ArchError("arch has no resolution (r or image_size)")
            r = max(get_space(space).resolutions)
        wid = data.get("wid")
        if wid not in (None, [], 0):
            raise ArchError("width multiplier choices (wid) are not elastic in these spaces")
        d = data["d"]
        if space is not None:
            sp = get_space(space)
            if not isinstance(d, (str, bytes)) and isinstance(d, Iterable):
                d = list(d)
                # the reference clamps a fixed stage's depth to its block count
                # (runtime_depth = min(len(stage), d)) and its sampler writes any value there
                for s, el in enumerate(sp.elastic_depth_stages[: len(d)]):
                    if not el and isinstance(d[s], (int, np.integer)) and not isinstance(d[s], bool):
                        d[s] = min(int(d[s]), sp.stage_block_counts[s])
        arch = cls(ks=data["ks"], e=data["e"], d=d, r=r)
        return arch.validate(space) if space is not None else arch

    def to_json(self) -> str:
        """The :meth:`to_dict` form as a JSON string."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str, space: "Space | str | None" = None) -> "ArchConfig":
        """Parse a JSON object in any form :meth:`from_dict` reads; raises :class:`ArchError` for
        invalid JSON, and validates against ``space`` when one is given."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArchError(f"arch is not valid JSON: {exc}") from None
        return cls.from_dict(data, space)

    def to_string(self, space: "Space | str") -> str:
        """Compact form for logs and file names: ``r224-d4.3.2.4.4-k3575.357...-e6436.346...``."""
        space = get_space(space)
        off = space.stage_offsets
        ks, es = [], []
        for s, depth in enumerate(self.d):
            blk = range(off[s], off[s] + depth)
            ks.append("".join(str(self.ks[i]) for i in blk))
            es.append("".join(str(self.e[i]) for i in blk))
        return f"r{self.r}-d{'.'.join(map(str, self.d))}-k{'.'.join(ks)}-e{'.'.join(es)}"

    _STR_RE = re.compile(r"^r(\d+)-d([\d.]+)-k([\d.]+)-e([\d.]+)$")

    @classmethod
    def from_string(cls, text: str, space: "Space | str") -> "ArchConfig":
        """Parse the compact :meth:`to_string` form (kernels and expands listed only for the blocks
        that run); raises :class:`ArchError` naming the stage that does not fit ``space``."""
        space = get_space(space)
        m = cls._STR_RE.match(text.strip())
        if not m:
            raise ArchError(f"cannot parse arch string {text!r} (expected r<R>-d<..>-k<..>-e<..>)")
        r = int(m.group(1))
        d = [int(x) for x in m.group(2).split(".") if x]
        kst, est = m.group(3).split("."), m.group(4).split(".")
        if not (len(d) == len(kst) == len(est) == space.num_stages):
            raise ArchError(f"arch string {text!r} must have {space.num_stages} stages")
        off, counts = space.stage_offsets, space.stage_block_counts
        ks = [space.kernel_choices[0]] * space.num_blocks
        e = [space.expand_choices[0]] * space.num_blocks
        for s, (depth, kss, ess) in enumerate(zip(d, kst, est)):
            if len(kss) != depth or len(ess) != depth:
                raise ArchError(f"arch string {text!r}: stage {s} has depth {depth} but "
                                f"{len(kss)} kernels and {len(ess)} expands")
            if depth > counts[s]:
                raise ArchError(f"arch string {text!r}: stage {s} has depth {depth}, the space "
                                f"has {counts[s]} blocks there")
            for p in range(depth):
                ks[off[s] + p] = int(kss[p])
                e[off[s] + p] = int(ess[p])
        return cls(ks=ks, e=e, d=d, r=r).validate(space)

    @classmethod
    def parse(cls, text: str, space: "Space | str") -> "ArchConfig":
        """``min``, ``max``, a compact string, inline JSON, or a path to a JSON file; a
        reference ``net.config`` (file, its directory, or inline) must describe a subnet of
        ``space`` and may have any resolution (see :mod:`supernet.net_config`)."""
        return parse_arch_text(cls, text, get_space(space))


def parse_arch_text(cls, text: str, space):
    """What ``ArchConfig.parse`` and ``ResNetArch.parse`` accept, for the arch class ``cls``
    (its ``min``/``max``, ``_STR_RE`` + ``from_string`` and ``from_dict``) of the resolved
    ``space``: ``min``, ``max``, a compact string, inline JSON, a JSON file, or a reference
    ``net.config`` (inline, a file, or its directory; a file's sibling run.config gives the
    image size)."""
    import os

    from .net_config import arch_from_net_config, is_net_config, read_net_config

    t = text.strip()
    if t in ("min", "max"):
        return getattr(cls, t)(space).validate(space)
    if cls._STR_RE.match(t):
        return cls.from_string(t, space)
    path = None
    if not t.startswith("{"):  # inline JSON is never tried as a path (too long a name)
        if os.path.isdir(t):
            return read_net_config(t, space)[1]
        if not os.path.exists(t):
            raise ArchError(f"arch {text!r} is not min, max, an arch string, JSON, or an "
                            f"existing file")
        path = t
        try:
            with open(t, encoding="utf-8") as fh:
                t = fh.read()
        except OSError as exc:
            raise ArchError(f"cannot read arch file {path}: {exc.strerror}") from None
    try:
        data = json.loads(t)
    except json.JSONDecodeError as exc:
        raise ArchError(f"arch is not valid JSON: {exc}") from None
    if is_net_config(data):
        if path is not None:
            return read_net_config(path, space)[1]
        return arch_from_net_config(data, space, source="inline net.config")[1]
    return cls.from_dict(data, space)
