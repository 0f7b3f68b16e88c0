"""The ops a space can produce: one enumeration shared by the cost model, the LUT builder and
the LUT predictor, so the three can never disagree about which shapes exist."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from .arch import ArchConfig
from .space import Space, get_family, get_space

__all__ = ["OpKey", "OP_KINDS", "OpGrid", "arch_ops", "enumerate_ops", "conv_out", "op_grid",
           "MOBILENET_OPS"]

OP_KINDS = ("stem", "first_block", "block", "final_expand", "pool", "feature_mix", "classifier",
            # the ResNet family (supernet.resnet_ops): the input stem (its convs and the max
            # pool, ``skip`` = the residual conv runs) and a bottleneck block
            "resnet_stem", "bottleneck")


def conv_out(h: int, stride: int) -> int:
    """Output size of a 'same'-padded odd-kernel conv: independent of the kernel size."""
    return (h - 1) // stride + 1


@dataclass(frozen=True, order=True)
class OpKey:
    """Hashable shape of one op. ``h`` is the (square) input size; ``mid`` the middle channels
    of an inverted-residual block; ``skip`` whether it has an identity shortcut."""

    kind: str
    h: int
    cin: int
    cout: int
    mid: int = 0
    kernel: int = 1
    stride: int = 1
    se: int = 0  # SE hidden width, 0 = no SE
    act: str = ""
    skip: bool = False

    def __post_init__(self) -> None:
        if self.kind not in OP_KINDS:
            raise ValueError(f"unknown op kind {self.kind!r}")

    @property
    def out_h(self) -> int:
        """Output height and width: 1 for pooling and the layers after it, else the input size
        divided by the stride, rounded up."""
        if self.kind in ("pool", "feature_mix", "classifier"):
            return 1
        return conv_out(self.h, self.stride)

    def to_string(self) -> str:
        """Stable text form of every field (e.g. ``block-h56-i24-o24-m72-k5-s1-se0-relu-skip1``),
        the key LUT files store; :meth:`from_string` reads it back."""
        return (f"{self.kind}-h{self.h}-i{self.cin}-o{self.cout}-m{self.mid}-k{self.kernel}"
                f"-s{self.stride}-se{self.se}-{self.act or 'none'}-skip{int(self.skip)}")

    _RE = re.compile(r"^([a-z_]+)-h(\d+)-i(\d+)-o(\d+)-m(\d+)-k(\d+)-s(\d+)-se(\d+)-(\w+)-skip([01])$")

    @classmethod
    def from_string(cls, text: str) -> "OpKey":
        """Parse :meth:`to_string`'s form; raises ValueError for any other text."""
        m = cls._RE.match(text)
        if not m:
            raise ValueError(f"not an op key: {text!r}")
        g = m.groups()
        return cls(kind=g[0], h=int(g[1]), cin=int(g[2]), cout=int(g[3]), mid=int(g[4]),
                   kernel=int(g[5]), stride=int(g[6]), se=int(g[7]),
                   act="" if g[8] == "none" else g[8], skip=g[9] == "1")

    def __str__(self) -> str:
        return self.to_string()

    # -- analytic cost (reference convention: MACs of convs, linears and SE only) -------
    @property
    def params(self) -> int:
        """Parameters of the op (conv and linear weights, biases, BN scale and shift), counted as
        the reference counts them."""
        k, ci, co, m, se = self.kernel, self.cin, self.cout, self.mid, self.se
        if self.kind == "stem":
            return ci * co * k * k + 2 * co
        if self.kind == "first_block":
            p = ci * k * k + 2 * ci + ci * co + 2 * co
            return p + (2 * ci * se + se + ci if se else 0)
        if self.kind == "block":
            p = ci * m + 2 * m + m * k * k + 2 * m + m * co + 2 * co
            return p + (2 * m * se + se + m if se else 0)
        if self.kind == "final_expand":
            return ci * co + 2 * co
        if self.kind == "resnet_stem":
            return ci * m * k * k + 2 * m + m * co * k * k + 2 * co + (
                m * m * k * k + 2 * m if self.skip else 0)
        if self.kind == "bottleneck":
            p = ci * m + m * m * k * k + m * co + 2 * (2 * m + co)
            return p + (0 if self.skip else ci * co + 2 * co)
        if self.kind == "feature_mix":
            return ci * co
        if self.kind == "classifier":
            return ci * co + co
        return 0

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the op on one image, counting convs, linears and SE layers only
        (the reference's convention: BN, activations and pooling are free)."""
        k, ci, co, m, se = self.kernel, self.cin, self.cout, self.mid, self.se
        hi, ho = self.h * self.h, self.out_h * self.out_h
        if self.kind == "stem":
            return ho * co * ci * k * k
        if self.kind == "first_block":
            return ho * ci * k * k + ho * ci * co + 2 * ci * se
        if self.kind == "block":
            return hi * ci * m + ho * m * k * k + ho * m * co + 2 * m * se
        if self.kind == "final_expand":
            return hi * ci * co
        if self.kind in ("feature_mix", "classifier"):
            return ci * co
        if self.kind == "resnet_stem":  # three convs at half the input size, then the pool
            h2 = conv_out(self.h, 2) ** 2
            return h2 * (ci * m * k * k + m * co * k * k + (m * m * k * k if self.skip else 0))
        if self.kind == "bottleneck":  # 1x1 at the input size, the strided 3x3, 1x1, shortcut
            return hi * ci * m + ho * (m * m * k * k + m * co + (0 if self.skip else ci * co))
        return 0


def mbv3_head_ops(space: Space, h: int) -> List[OpKey]:
    """MobileNetV3 head: final expand (1x1 conv, BN) -> pool -> feature mix (1x1 conv, no BN)
    -> classifier."""
    c = space.stage_widths[-1]
    fe, fm = space.final_expand_width, space.feature_mix_width
    return [
        OpKey("final_expand", h, c, fe, act=space.head_act),
        OpKey("pool", h, fe, fe),
        OpKey("feature_mix", 1, fe, fm, act=space.head_act),
        OpKey("classifier", 1, fm, space.num_classes),
    ]


def _fixed_head(space: Space, h: int) -> List[OpKey]:
    return get_family(space).head_ops(space, h)


def _stem(space: Space, r: int) -> Tuple[List[OpKey], int]:
    h = conv_out(r, space.stem_stride)
    c0, c1 = space.stem_width, space.first_block_width
    se0 = space.se_channels(c0) if space.first_block_se else 0
    return [
        OpKey("stem", r, 3, c0, kernel=3, stride=space.stem_stride, act=space.stem_act),
        OpKey("first_block", h, c0, c1, mid=c0, kernel=3, stride=1, se=se0,
              act=space.first_block_act, skip=space.first_block_skip),
    ], h


def _block(space: Space, spec, h: int, kernel: int, expand: int) -> OpKey:
    mid = space.middle_channels(spec.in_channels, expand)
    return OpKey("block", h, spec.in_channels, spec.out_channels, mid=mid, kernel=kernel,
                 stride=spec.stride, se=space.se_channels(mid) if spec.se else 0, act=spec.act,
                 skip=spec.identity_skip)


def arch_ops(space: "Space | str", arch: ArchConfig) -> List[OpKey]:
    """The ops of ``arch`` in execution order."""
    space = get_space(space)
    ops, h = _stem(space, arch.r)
    specs = space.blocks
    for i in arch.active_blocks(space):
        op = _block(space, specs[i], h, arch.ks[i], arch.e[i])
        ops.append(op)
        h = op.out_h
    return ops + _fixed_head(space, h)


def enumerate_ops(space: "Space | str", resolutions: Sequence[int] | None = None) -> List[OpKey]:
    """Every distinct op any subnet of ``space`` can run at ``resolutions`` (sorted)."""
    space = get_space(space)
    out = set()
    for r in (space.resolutions if resolutions is None else resolutions):
        stem, h = _stem(space, r)
        out.update(stem)
        for spec in space.blocks:
            for k in space.kernel_choices:
                for e in space.expand_choices:
                    out.add(_block(space, spec, h, k, e))
            h = conv_out(h, spec.stride)
        out.update(_fixed_head(space, h))
    return sorted(out)


class OpGrid:
    """Any per-op quantity (latency, MACs, params) laid out for vectorised arch scoring.

    ``fixed[ri]`` is the sum over the ops every subnet at resolution ``resolutions[ri]`` runs
    (stem, first block, head); ``blocks[ri, b, ki, ei]`` the value of elastic block ``b`` with
    kernel ``kernel_choices[ki]`` and expand ``expand_choices[ei]``. ``value_fn`` is called once
    per distinct op, so a missing LUT entry surfaces here, naming the op.
    """

    def __init__(self, space: "Space | str", value_fn, resolutions: Sequence[int] | None = None):
        space = get_space(space)
        self.space = space
        self.resolutions = tuple(sorted(space.resolutions if resolutions is None else resolutions))
        nk, ne = len(space.kernel_choices), len(space.expand_choices)
        self.fixed = np.zeros(len(self.resolutions))
        self.blocks = np.zeros((len(self.resolutions), space.num_blocks, nk, ne))
        cache: dict = {}

        def val(op: OpKey) -> float:
            if op not in cache:
                cache[op] = float(value_fn(op))
            return cache[op]

        for ri, r in enumerate(self.resolutions):
            stem, h = _stem(space, r)
            total = sum(val(o) for o in stem)
            for b, spec in enumerate(space.blocks):
                for ki, k in enumerate(space.kernel_choices):
                    for ei, e in enumerate(space.expand_choices):
                        self.blocks[ri, b, ki, ei] = val(_block(space, spec, h, k, e))
                h = conv_out(h, spec.stride)
            self.fixed[ri] = total + sum(val(o) for o in _fixed_head(space, h))
        self._r_index = {r: i for i, r in enumerate(self.resolutions)}
        self._k_lut = np.full(max(space.kernel_choices) + 1, -1)
        self._k_lut[list(space.kernel_choices)] = np.arange(nk)
        self._e_lut = np.full(max(space.expand_choices) + 1, -1)
        self._e_lut[list(space.expand_choices)] = np.arange(ne)

    def resolution_index(self, r) -> "np.ndarray":
        """Index into ``resolutions`` of each value of ``r`` (scalar or array); raises
        :class:`OfaDeployError` naming the resolutions the grid does not cover."""
        r = np.asarray(r, dtype=np.int64)
        res = np.asarray(self.resolutions)
        idx = np.clip(np.searchsorted(res, r), 0, len(res) - 1)
        bad = res[idx] != r
        if bad.any():
            from .errors import OfaDeployError

            raise OfaDeployError(f"resolution(s) {sorted(set(r[bad].tolist()))} not covered "
                                 f"(covered: {list(self.resolutions)})")
        return idx

    def evaluate(self, batch) -> "np.ndarray":
        """Values for an :class:`~supernet.batch.ArchBatch` (shape ``(N,)``)."""
        ri = self.resolution_index(batch.r)
        ki = self._k_lut[batch.ks]
        ei = self._e_lut[batch.e]
        per_block = self.blocks[ri[:, None], np.arange(self.space.num_blocks)[None, :], ki, ei]
        return self.fixed[ri] + (per_block * batch.active).sum(axis=1)

    def affine(self, scale: Sequence[float], add: Sequence[float]) -> "OpGrid":
        """A copy holding ``scale[ri] * value`` for every op and ``add[ri]`` more per network
        (in the fixed part), per resolution index ``ri``: a linear correction stays a grid."""
        out = object.__new__(OpGrid)
        out.__dict__.update(self.__dict__)
        s = np.asarray(scale, dtype=np.float64)
        out.fixed = s * self.fixed + np.asarray(add, dtype=np.float64)
        out.blocks = s[:, None, None, None] * self.blocks
        return out

    def min_max(self, resolutions: Sequence[int] | None = None) -> tuple:
        """Exact smallest and largest value over every subnet (values assumed >= 0, so fewer
        blocks never cost more): per resolution, the fixed part plus the cheapest/dearest
        choice of each block at the smallest/largest depth."""
        sp = self.space
        stage = np.asarray(sp.block_stages, dtype=np.intp)
        dmin = np.array([min(sp.stage_depth_choices(s)) for s in range(sp.num_stages)])[stage]
        dmax = np.array([max(sp.stage_depth_choices(s)) for s in range(sp.num_stages)])[stage]
        pos = np.asarray(sp.block_positions)
        rs = self.resolutions if resolutions is None else resolutions
        lo, hi = [], []
        for r in rs:
            ri = self._r_index[int(r)]
            flat = self.blocks[ri].reshape(sp.num_blocks, -1)
            lo.append(self.fixed[ri] + flat.min(axis=1)[pos < dmin].sum())
            hi.append(self.fixed[ri] + flat.max(axis=1)[pos < dmax].sum())
        return float(min(lo)), float(max(hi))


def op_grid(space: "Space | str", value_at, resolutions: Sequence[int] | None = None) -> OpGrid:
    """An :class:`OpGrid` of ``value_at(op, r)``: the value of an op may depend on the
    resolution of the network it runs in (tables with per-resolution entries)."""
    space = get_space(space)
    res = tuple(sorted(space.resolutions if resolutions is None else resolutions))
    full = OpGrid(space, lambda op: 0.0, res)
    for ri, r in enumerate(res):
        sub = OpGrid(space, lambda op, r=r: value_at(op, r), [r])
        full.fixed[ri], full.blocks[ri] = sub.fixed[0], sub.blocks[0]
    return full


def mobilenet_batch(space: "Space | str", archs):
    """A canonical :class:`~supernet.batch.ArchBatch` of ``archs`` (an ArchBatch, an
    :class:`ArchConfig` or a list of them), checked against ``space``; raises
    :class:`~supernet.arch.ArchError` naming the first arch that does not fit."""
    from .arch import ArchError
    from .batch import ArchBatch

    sp = get_space(space)
    if isinstance(archs, ArchBatch):
        if archs.space.name != sp.name:
            raise ArchError(f"archs are of space {archs.space.name}, not {sp.name}")
        batch = archs
    elif isinstance(archs, ArchConfig):
        batch = ArchBatch.from_archs(sp, [archs])
    else:
        archs = list(archs)
        bad = next((a for a in archs if not isinstance(a, ArchConfig)), None)
        if bad is not None:
            raise ArchError(f"space {sp.name} takes MobileNet archs (ArchConfig), got "
                            f"{type(bad).__name__}")
        batch = ArchBatch.from_archs(sp, archs)
    if batch.ks.shape[1:] != (sp.num_blocks,) or batch.d.shape[1:] != (sp.num_stages,):
        raise ArchError(f"archs do not have the shape of space {sp.name} "
                        f"({sp.num_blocks} blocks, {sp.num_stages} stages)")
    act = batch.active
    k_ok, e_ok = np.isin(batch.ks, sp.kernel_choices), np.isin(batch.e, sp.expand_choices)
    d_ok = np.stack([np.isin(batch.d[:, s], sp.stage_depth_choices(s))
                     for s in range(sp.num_stages)], axis=1)
    ok = ((k_ok & e_ok) | ~act).all(axis=1) & d_ok.all(axis=1)
    if not ok.all():
        i = int(np.argmin(ok))
        raise ArchError(f"arch #{i} has kernel/expand/depth values outside space {sp.name}")
    if not (k_ok.all() and e_ok.all()):
        # skipped blocks may hold anything, but the grid indexes them: make them valid
        batch = batch.canonical()
    return batch


def _sample(space: Space, rng, resolutions):
    return ArchConfig.sample(space, rng, resolutions=resolutions)


def _op_model(op: OpKey, space: Space, *, seed: int = 0, fold_bn: bool = True):
    from .op_models import mobilenet_op_model

    return mobilenet_op_model(op, space, seed=seed, fold_bn=fold_bn)


def _random_subnets(space: Space, archs, seed: int = 0):
    """Extracted from one supernet drawn from a forked RNG (the caller's global torch RNG is
    left as it was): what ``specialize`` ships, with random weights."""
    import torch

    from .model import Supernet, extract_subnet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Supernet(space).eval()
    for arch in archs:
        yield extract_subnet(net, arch).eval()


def _register():
    from .op_families import OpFamily, register_op_family
    from .space import list_spaces

    return register_op_family(OpFamily(
        name="mobilenet",
        description="MobileNetV3 / ProxylessNAS spaces: one op per block, from its own genes",
        space_type=Space, arch_type=ArchConfig, space_names=list_spaces, get_space=get_space,
        arch_ops=arch_ops, enumerate_ops=enumerate_ops, grid=op_grid, batch=mobilenet_batch,
        sample_arch=_sample, parse_arch=lambda text, space: ArchConfig.parse(text, space),
        build_op_model=_op_model, random_subnets=_random_subnets))


# the MobileNet family's hooks, as the LUT code sees them (supernet.op_families)
MOBILENET_OPS = _register()
