"""The ops of the OFA ResNet family, for latency tables and the search's cost grid.

Unlike a MobileNet block, a bottleneck's shape depends on its input width, which is the
previous stage's width choice (or the stem's, for stage 0), so its op key carries the input,
middle and output channels, and the grid that prices populations is indexed per block by
(input width choice, own width choice, expand choice). Ops, in execution order:

* ``resnet_stem`` (input size ``h`` = the resolution): 3x3 s2 conv to ``mid`` (``w[0]``),
  the residual 3x3 conv when it runs (``skip`` = True, ``d[0] > 0``), 3x3 conv to ``cout``
  (``w[1]``), then the 3x3 s2 max pool (so ``stride`` 4); one op, so the stem's internal
  tensors never cross an op boundary;
* one ``bottleneck`` per running block (``skip`` = identity shortcut, i.e. not the first
  block of its stage; the first has the avgpool -> 1x1 conv -> BN shortcut);
* ``pool`` (global average) and ``classifier`` (linear), as in the MobileNet head.

:func:`arch_ops` is the single source of the ops of an arch: :func:`enumerate_ops` and
:class:`ResNetOpGrid` are tested against it, and MACs / params counted from these ops equal
:func:`supernet.resnet_space.resnet_arch_cost`. Torch-free (op models are built lazily).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from .arch import ArchError
from .ops import OpKey, conv_out
from .resnet_space import (RESNET_SPACES, ResNetArch, ResNetSpace, _block_shapes,
                           get_resnet_space)

__all__ = ["resnet_arch_ops", "resnet_enumerate_ops", "ResNetBatch", "resnet_batch",
           "ResNetOpGrid", "resnet_op_grid", "RESNET_OPS"]


def _stem_op(sp: ResNetSpace, r: int, a: int, b: int, keep: bool) -> OpKey:
    return OpKey("resnet_stem", r, 3, sp.stem_widths[b], mid=sp.stem_mid_widths[a], kernel=3,
                 stride=4, act="relu", skip=bool(keep))


def _block_op(sp: ResNetSpace, h: int, cin: int, cout: int, e: float, stride: int,
              identity: bool) -> OpKey:
    return OpKey("bottleneck", h, cin, cout, mid=sp.middle_channels(cout, e), kernel=3,
                 stride=stride, act="relu", skip=identity)


def _head_ops(sp: ResNetSpace, h: int, c: int) -> List[OpKey]:
    return [OpKey("pool", h, c, c), OpKey("classifier", 1, c, sp.num_classes)]


def resnet_arch_ops(space: "ResNetSpace | str", arch: ResNetArch) -> List[OpKey]:
    """The ops of ``arch`` in execution order (any input size)."""
    sp = get_resnet_space(space)
    arch = arch.validate(sp, any_resolution=True)
    ops = [_stem_op(sp, arch.r, arch.w[0], arch.w[1], not arch.skip_stem)]
    h, cin = ops[0].out_h, ops[0].cout
    for (cout, _mid, stride, identity), i in zip(_block_shapes(sp, arch), arch.active_blocks(sp)):
        op = _block_op(sp, h, cin, cout, arch.e[i], stride, identity)
        ops.append(op)
        h, cin = op.out_h, cout
    return ops + _head_ops(sp, h, cin)


def _check_layout(sp: ResNetSpace) -> None:
    # the grid prices a stage's first block unconditionally, and the next stage reads its width
    if min(sp.base_depths) + min(sp.depth_choices) < 1:
        raise ValueError(f"space {sp.name}: every stage must run at least one block")


def _stage_walk(sp: ResNetSpace, r: int):
    """Per stage: (input size, output size, input width choices, own width choices)."""
    h = conv_out(r, 4)
    for s in range(sp.num_stages):
        ins = sp.stem_widths if s == 0 else sp.stage_widths(s - 1)
        ho = conv_out(h, sp.stage_strides[s])
        yield s, h, ho, ins, sp.stage_widths(s)
        h = ho


def resnet_enumerate_ops(space: "ResNetSpace | str",
                         resolutions: Sequence[int] | None = None) -> List[OpKey]:
    """Every distinct op a subnet of ``space`` can run at ``resolutions`` (sorted): per
    resolution, 2 x W x W stems, per stage W x W x E first blocks and W x E others, W heads
    (W width, E expand choices)."""
    sp = get_resnet_space(space)
    _check_layout(sp)
    out = set()
    W = range(len(sp.width_mult_choices))
    for r in (sp.resolutions if resolutions is None else resolutions):
        out.update(_stem_op(sp, r, a, b, keep) for a in W for b in W for keep in (0, 1))
        h = conv_out(r, 4)
        for s, h, ho, ins, outs in _stage_walk(sp, r):
            for cout in outs:
                for e in sp.expand_choices:
                    out.update(_block_op(sp, h, cin, cout, e, sp.stage_strides[s], False)
                               for cin in ins)
                    out.add(_block_op(sp, ho, cout, cout, e, 1, True))
            h = ho
        for c in sp.stage_widths(sp.num_stages - 1):
            out.update(_head_ops(sp, h, c))
    return sorted(out)


@dataclass(frozen=True)
class ResNetBatch:
    """N ResNet archs as index arrays: ``r`` (N,) resolutions, ``keep`` (N,) 1 where the stem's
    residual conv runs, ``w`` (N, widths) width indices, ``e`` (N, blocks) expand indices
    (0 where a block is skipped), ``active`` (N, blocks) booleans."""

    space: ResNetSpace
    r: np.ndarray
    keep: np.ndarray
    w: np.ndarray
    e: np.ndarray
    active: np.ndarray

    def __len__(self) -> int:
        return int(self.r.shape[0])


def resnet_batch(space: "ResNetSpace | str", archs) -> ResNetBatch:
    """A :class:`ResNetBatch` of ``archs`` (a batch, one :class:`ResNetArch` or a list), each
    validated against ``space`` (any resolution: the grid checks its own)."""
    sp = get_resnet_space(space)
    if isinstance(archs, ResNetBatch):
        if archs.space.name != sp.name:
            raise ArchError(f"archs are of space {archs.space.name}, not {sp.name}")
        return archs
    archs = [archs] if isinstance(archs, ResNetArch) else list(archs)
    bad = next((a for a in archs if not isinstance(a, ResNetArch)), None)
    if bad is not None:
        raise ArchError(f"space {sp.name} takes ResNet archs (ResNetArch), got "
                        f"{type(bad).__name__}")
    n, nb = len(archs), sp.num_blocks
    r, keep = np.zeros(n, np.int64), np.zeros(n, np.intp)
    w, e = np.zeros((n, sp.num_widths), np.intp), np.zeros((n, nb), np.intp)
    act = np.zeros((n, nb), bool)
    ev = np.asarray(sp.expand_choices)
    for i, a in enumerate(archs):
        a = a.validate(sp, any_resolution=True)
        r[i], keep[i], w[i] = a.r, int(not a.skip_stem), a.w
        act[i] = a.active_mask(sp)
        e[i] = np.where(act[i], np.abs(np.asarray(a.e)[:, None] - ev).argmin(axis=1), 0)
    return ResNetBatch(sp, r, keep, w, e, act)


class ResNetOpGrid:
    """Any per-op quantity (latency, MACs, params) of a ResNet space laid out for vectorised
    pricing: ``stem[ri, a, b, keep]`` (stem mid / out width choice, residual conv on),
    ``first[ri, s, a, b, k]`` (stage ``s``'s first block: input width choice ``a`` = the
    stem's or previous stage's, own width ``b``, expand ``k``), ``other[ri, s, b, k]`` (every
    later block of the stage: same shape at every position), ``head[ri, b]`` (pool and
    classifier after a last stage of width ``b``). ``value_at(op, r)`` is called once per
    distinct (op, resolution)."""

    def __init__(self, space: "ResNetSpace | str", value_at,
                 resolutions: Sequence[int] | None = None):
        sp = get_resnet_space(space)
        _check_layout(sp)
        self.space = sp
        self.resolutions = tuple(sorted(sp.resolutions if resolutions is None else resolutions))
        R, S = len(self.resolutions), sp.num_stages
        W, E = len(sp.width_mult_choices), len(sp.expand_choices)
        self.stem = np.zeros((R, W, W, 2))
        self.first = np.zeros((R, S, W, W, E))
        self.other = np.zeros((R, S, W, E))
        self.head = np.zeros((R, W))
        for ri, r in enumerate(self.resolutions):
            cache: dict = {}

            def val(op: OpKey, r=r) -> float:
                if op not in cache:
                    cache[op] = float(value_at(op, r))
                return cache[op]

            for a in range(W):
                for b in range(W):
                    for keep in (0, 1):
                        self.stem[ri, a, b, keep] = val(_stem_op(sp, r, a, b, keep))
            h = conv_out(r, 4)
            for s, h, ho, ins, outs in _stage_walk(sp, r):
                for b, cout in enumerate(outs):
                    for k, e in enumerate(sp.expand_choices):
                        for a, cin in enumerate(ins):
                            self.first[ri, s, a, b, k] = val(
                                _block_op(sp, h, cin, cout, e, sp.stage_strides[s], False))
                        self.other[ri, s, b, k] = val(_block_op(sp, ho, cout, cout, e, 1, True))
                h = ho
            for b, c in enumerate(sp.stage_widths(S - 1)):
                self.head[ri, b] = sum(val(op) for op in _head_ops(sp, h, c))
        self._r_index = {r: i for i, r in enumerate(self.resolutions)}

    def resolution_index(self, r) -> np.ndarray:
        """Index into ``resolutions`` of each value of ``r``; raises
        :class:`~supernet.errors.OfaDeployError` naming those the grid does not cover."""
        from .errors import OfaDeployError

        r = np.asarray(r, dtype=np.int64).ravel()
        bad = sorted({int(v) for v in r if int(v) not in self._r_index})
        if bad:
            raise OfaDeployError(f"resolution(s) {bad} not covered (covered: "
                                 f"{list(self.resolutions)})")
        return np.array([self._r_index[int(v)] for v in r], dtype=np.intp)

    def evaluate_indices(self, ri, keep, w, e, active) -> np.ndarray:
        """Values of N archs given as index arrays (resolution index ``ri`` (N,), ``keep`` (N,),
        width indices ``w`` (N, widths), expand indices ``e`` and ``active`` (N, blocks))."""
        sp = self.space
        ri = np.asarray(ri, dtype=np.intp)
        w, e = np.asarray(w, dtype=np.intp), np.asarray(e, dtype=np.intp)
        out = self.stem[ri, w[:, 0], w[:, 1], np.asarray(keep, dtype=np.intp)] \
            + self.head[ri, w[:, -1]]
        for s in range(sp.num_stages):
            off, cnt = sp.stage_offsets[s], sp.stage_block_counts[s]
            wi, ws = w[:, s + 1], w[:, s + 2]  # input width (stem's or previous stage's), own
            out = out + self.first[ri, s, wi, ws, e[:, off]]
            rest = self.other[ri[:, None], s, ws[:, None], e[:, off + 1:off + cnt]]
            out = out + (rest * active[:, off + 1:off + cnt]).sum(axis=1)
        return out

    def evaluate(self, batch: ResNetBatch) -> np.ndarray:
        """Values of a :class:`ResNetBatch` (shape ``(N,)``)."""
        return self.evaluate_indices(self.resolution_index(batch.r), batch.keep, batch.w,
                                     batch.e, batch.active)

    def affine(self, scale: Sequence[float], add: Sequence[float]) -> "ResNetOpGrid":
        """A copy holding ``scale[ri] * value`` for every op and ``add[ri]`` more per network
        (on the stem, which every network runs once), per resolution index ``ri``."""
        out = object.__new__(ResNetOpGrid)
        out.__dict__.update(self.__dict__)
        s = np.asarray(scale, dtype=np.float64)
        out.stem = s[:, None, None, None] * self.stem + np.asarray(add, np.float64)[:, None, None, None]
        out.first = s[:, None, None, None, None] * self.first
        out.other = s[:, None, None, None] * self.other
        out.head = s[:, None] * self.head
        return out

    def extreme(self, ri: int, cheapest: bool = True) -> Tuple[float, ResNetArch]:
        """The exact smallest (or largest) value at resolution index ``ri`` over every subnet,
        and a subnet that has it: values are >= 0, so the shallowest (deepest) stages win, and
        the width chain (stem -> stage 0 -> ... -> head) is solved by dynamic programming over
        the width choice of each stage."""
        sp = self.space
        pick = np.min if cheapest else np.max
        arg = np.argmin if cheapest else np.argmax
        depth = min(sp.depth_choices) if cheapest else max(sp.depth_choices)
        stem = self.stem[ri].reshape(-1, self.stem.shape[2], 2)  # (a, b, keep)
        flat = stem.transpose(1, 0, 2).reshape(stem.shape[1], -1)  # (b, a*2+keep)
        best, back = pick(flat, axis=1), [arg(flat, axis=1)]
        for s in range(sp.num_stages):
            n_rest = sp.base_depths[s] + depth - 1
            f = pick(self.first[ri, s], axis=2)  # (a, b)
            o = pick(self.other[ri, s], axis=1)  # (b,)
            tot = best[:, None] + f + n_rest * o[None, :]
            back.append(arg(tot, axis=0))
            best = pick(tot, axis=0)
        tot = best + self.head[ri]
        b = int(arg(tot))
        value = float(tot[b])
        widths = [b]
        for s in range(sp.num_stages - 1, -1, -1):
            widths.append(int(back[s + 1][widths[-1]]))
        widths.reverse()  # stem out, stage 0 .. stage S-1
        ak = int(back[0][widths[0]])
        a, keep = divmod(ak, 2)
        w = [a] + widths
        e = [sp.expand_choices[0]] * sp.num_blocks
        for s in range(sp.num_stages):
            off = sp.stage_offsets[s]
            ai, bi = w[s + 1], w[s + 2]
            e[off] = sp.expand_choices[int(arg(self.first[ri, s, ai, bi]))]
            for p in range(1, sp.base_depths[s] + depth):
                e[off + p] = sp.expand_choices[int(arg(self.other[ri, s, bi]))]
        d = [max(sp.depth_choices) if keep else min(sp.depth_choices)] + [depth] * sp.num_stages
        return value, ResNetArch(d, e, w, self.resolutions[ri]).canonical(sp)

    def min_max(self, resolutions: Sequence[int] | None = None) -> tuple:
        """Exact smallest and largest value over every subnet at ``resolutions`` (default all)."""
        rs = self.resolutions if resolutions is None else resolutions
        idx = self.resolution_index(list(rs))
        return (min(self.extreme(int(i), True)[0] for i in idx),
                max(self.extreme(int(i), False)[0] for i in idx))


def resnet_op_grid(space: "ResNetSpace | str", value_at,
                   resolutions: Sequence[int] | None = None) -> ResNetOpGrid:
    """:class:`ResNetOpGrid` of ``value_at(op, r)``."""
    return ResNetOpGrid(space, value_at, resolutions)


# ---------------------------------------------------------------------------- torch side
def _fold_sequential_bn(module):
    """Fold each ``conv`` -> ``bn`` pair of the ResNet layers (children named so) in place."""
    import torch
    import torch.nn as nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    with torch.no_grad():
        for sub in module.modules():
            conv, bn = getattr(sub, "conv", None), getattr(sub, "bn", None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                sub.conv = fuse_conv_bn_eval(conv.eval(), bn.eval())
                sub.bn = nn.Identity()
    return module


def _op_model(op: OpKey, space: ResNetSpace, *, seed: int = 0, fold_bn: bool = True):
    """An eval-mode module computing a ResNet op with the subnet's own layers (random weights
    from ``seed``); BN folded into the convs unless ``fold_bn`` is False."""
    import torch
    import torch.nn as nn

    from .op_models import _Linear, _Pool, randomize_
    from .resnet import _conv_bn, _StaticBottleneck, _StaticStemResidual

    bn = dict(momentum=space.bn_momentum, eps=space.bn_eps)
    if op.kind == "resnet_stem":
        layers = [_conv_bn(op.cin, op.mid, op.kernel, 2, True, bn)]
        if op.skip:
            layers.append(_StaticStemResidual(_conv_bn(op.mid, op.mid, op.kernel, 1, True, bn)))
        layers += [_conv_bn(op.mid, op.cout, op.kernel, 1, True, bn), nn.MaxPool2d(3, 2, 1)]
        m: nn.Module = nn.Sequential(*layers)
    elif op.kind == "bottleneck":
        m = _StaticBottleneck(op.cin, op.cout, op.mid, op.stride, op.skip, bn)
    elif op.kind == "pool":
        m = _Pool()
    elif op.kind == "classifier":
        m = _Linear(op.cin, op.cout)
    else:
        raise ValueError(f"op kind {op.kind!r} is not an op of the ResNet family")
    randomize_(m, torch.Generator().manual_seed(int(seed)))
    m.eval()
    return _fold_sequential_bn(m) if fold_bn else m


def _random_subnets(space: ResNetSpace, archs, seed: int = 0):
    """Extracted (:func:`~supernet.resnet.extract_resnet_subnet`) from one supernet drawn from a
    forked RNG, so the caller's global torch RNG is left as it was."""
    import torch

    from .resnet import ResNetSupernet, extract_resnet_subnet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ResNetSupernet(space).eval()
    for arch in archs:
        yield extract_resnet_subnet(net, arch).eval()


def _sample(space: ResNetSpace, rng, resolutions):
    a = ResNetArch.sample(space, rng)
    if resolutions is not None:
        res = list(resolutions)
        a = ResNetArch(a.d, a.e, a.w, int(res[int(rng.integers(len(res)))]))
    return a


def _register():
    from .op_families import OpFamily, register_op_family

    return register_op_family(OpFamily(
        name="resnet",
        description="OFA ResNet spaces: a bottleneck's op depends on the previous stage's width",
        space_type=ResNetSpace, arch_type=ResNetArch,
        space_names=lambda: tuple(RESNET_SPACES), get_space=get_resnet_space,
        arch_ops=resnet_arch_ops, enumerate_ops=resnet_enumerate_ops, grid=resnet_op_grid,
        batch=resnet_batch, sample_arch=_sample,
        parse_arch=lambda text, space: ResNetArch.parse(text, space),
        build_op_model=_op_model, random_subnets=_random_subnets))


# the ResNet family's hooks, as the LUT code sees them (supernet.op_families)
RESNET_OPS = _register()
