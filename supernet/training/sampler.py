"""Which subnets a training step runs: per-phase constraints and the two sampling strategies.

Every rank of a data-parallel run builds the sampler from the same seed and calls it the same
number of times, so all ranks train the same subnets at the same resolution without talking.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from ..arch import ArchConfig
from ..space import Space, get_space

__all__ = ["PhaseChoices", "phase_choices", "SubnetSampler", "arch_digest", "STRATEGIES"]

STRATEGIES = ("uniform", "sandwich")


@dataclass(frozen=True)
class PhaseChoices:
    """Allowed choices per elastic dimension during one stage (all sorted ascending)."""

    ks: Tuple[int, ...]
    e: Tuple[int, ...]
    d: Tuple[int, ...]

    @property
    def elastic(self) -> Tuple[str, ...]:
        """The dimensions with more than one choice in this stage."""
        return tuple(n for n in ("ks", "e", "d") if len(getattr(self, n)) > 1)

    def largest(self, space: Space, r: int) -> ArchConfig:
        """The largest subnet this stage allows, at resolution ``r``."""
        return ArchConfig((self.ks[-1],) * space.num_blocks, (self.e[-1],) * space.num_blocks,
                          space.fit_depths((self.d[-1],) * space.num_stages), r).canonical(space)

    def smallest(self, space: Space, r: int) -> ArchConfig:
        """The smallest subnet this stage allows, at resolution ``r``."""
        return ArchConfig((self.ks[0],) * space.num_blocks, (self.e[0],) * space.num_blocks,
                          space.fit_depths((self.d[0],) * space.num_stages), r).canonical(space)

    def corners(self, space: Space, resolutions: Sequence[int]) -> List[ArchConfig]:
        """min/max of every elastic dimension of the stage, at each resolution."""
        out = []
        for r in resolutions:
            for d in sorted({self.d[0], self.d[-1]}):
                for e in sorted({self.e[0], self.e[-1]}):
                    for k in sorted({self.ks[0], self.ks[-1]}):
                        out.append(ArchConfig((k,) * space.num_blocks, (e,) * space.num_blocks,
                                              space.fit_depths((d,) * space.num_stages),
                                              r).canonical(space))
        return out


def phase_choices(space: "Space | str", phase: str, stage: int = 1) -> PhaseChoices:
    """Progressive shrinking: the largest network first, then kernel, then depth and expand
    opened one smaller choice per stage (stage 1 of depth allows the two deepest, ...)."""
    sp = get_space(space)
    K, E, D = sp.kernel_choices, sp.expand_choices, sp.depth_choices
    top = lambda xs: (xs[-1],)
    if phase == "teacher":
        return PhaseChoices(top(K), top(E), top(D))
    if phase == "kernel":
        return PhaseChoices(K, top(E), top(D))
    if phase == "depth":
        return PhaseChoices(K, top(E), D[max(0, len(D) - 1 - stage):])
    if phase == "expand":
        return PhaseChoices(K, E[max(0, len(E) - 1 - stage):], D)
    if phase == "full":
        return PhaseChoices(K, E, D)
    raise ValueError(f"unknown phase {phase!r}")


def arch_digest(archs: Sequence[ArchConfig]) -> int:
    """A 63-bit digest of a list of archs, for cheap cross-rank agreement checks."""
    h = hashlib.sha256()
    for a in archs:
        h.update(a.to_json().encode())
    return int.from_bytes(h.digest()[:8], "little") >> 1


class SubnetSampler:
    """Draws (resolution, archs) for each step from its own ``numpy.random.Generator``.

    ``uniform``: ``n`` subnets drawn uniformly per dimension within the stage's choices.
    ``sandwich``: the largest, the smallest and ``n - 2`` random subnets (BigNAS); the caller
    distils the others from the largest (in-place distillation).
    """

    def __init__(self, space: "Space | str", seed: int, *, strategy: str = "uniform",
                 resolutions: Sequence[int] | None = None,
                 resolution_probs: Sequence[float] | None = None):
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown sampling strategy {strategy!r} ({', '.join(STRATEGIES)})")
        self.space = get_space(space)
        self.strategy = strategy
        self.resolutions = list(self.space.resolutions if resolutions is None else resolutions)
        self.resolution_probs = None if resolution_probs is None else list(resolution_probs)
        self.seed = int(seed)
        self.rng = np.random.default_rng([self.seed, 0x5A3])

    def sample_resolution(self) -> int:
        """One training resolution (weighted if the config gives weights)."""
        if self.resolution_probs is None:
            return int(self.resolutions[int(self.rng.integers(len(self.resolutions)))])
        return int(self.rng.choice(self.resolutions, p=self.resolution_probs))

    def sample_arch(self, choices: PhaseChoices, r: int) -> ArchConfig:
        """A subnet drawn uniformly per block/stage within ``choices``, at resolution ``r``."""
        sp, rng = self.space, self.rng
        return ArchConfig(
            ks=tuple(rng.choice(choices.ks, size=sp.num_blocks).tolist()),
            e=tuple(rng.choice(choices.e, size=sp.num_blocks).tolist()),
            d=sp.fit_depths(rng.choice(choices.d, size=sp.num_stages).tolist()),
            r=r,
        ).canonical(sp)

    def sample_step(self, choices: PhaseChoices, n: int) -> Tuple[int, List[ArchConfig]]:
        """The resolution and the ``n`` subnets of one step (just the largest subnet when the
        stage has nothing elastic)."""
        r = self.sample_resolution()
        if not choices.elastic:
            return r, [choices.largest(self.space, r)]
        if self.strategy == "sandwich":
            archs = [choices.largest(self.space, r), choices.smallest(self.space, r)]
            archs += [self.sample_arch(choices, r) for _ in range(max(0, n - 2))]
            return r, archs
        return r, [self.sample_arch(choices, r) for _ in range(n)]

    # -- state -------------------------------------------------------------------------
    def get_state(self) -> dict:
        """Settings and generator state, for a checkpoint."""
        return {"strategy": self.strategy, "seed": self.seed, "resolutions": self.resolutions,
                "resolution_probs": self.resolution_probs,
                "rng": self.rng.bit_generator.state}

    def set_state(self, state: dict) -> None:
        """Continue the draws of a :meth:`get_state` (settings come from the constructor)."""
        self.rng.bit_generator.state = state["rng"]

    @classmethod
    def from_state(cls, space: "Space | str", state: dict) -> "SubnetSampler":
        """A sampler with the settings and generator position of a :meth:`get_state`."""
        s = cls(space, state["seed"], strategy=state["strategy"],
                resolutions=state["resolutions"], resolution_probs=state["resolution_probs"])
        s.set_state(state)
        return s
