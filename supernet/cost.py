"""Analytic params and MACs, counted the reference's way, without building any network."""
from __future__ import annotations

from typing import Dict

from .arch import ArchConfig
from .ops import arch_ops
from .space import Space, get_space

__all__ = ["arch_params", "arch_macs", "arch_cost", "supernet_params", "space_stats"]


def arch_cost(space: "Space | str", arch: ArchConfig) -> Dict[str, int]:
    """``{"params", "macs"}`` of ``arch`` at its resolution ``arch.r`` (any size, not only the
    space's), counted from the op list as the reference counts them; raises :class:`ArchError`
    for an arch that does not fit ``space``."""
    space = get_space(space)
    ops = arch_ops(space, arch.validate(space, any_resolution=True))  # costs exist at any size
    return {"params": sum(o.params for o in ops), "macs": sum(o.macs for o in ops)}


def arch_params(space: "Space | str", arch: ArchConfig) -> int:
    """Parameter count of ``arch`` (see :func:`arch_cost`)."""
    return arch_cost(space, arch)["params"]


def arch_macs(space: "Space | str", arch: ArchConfig) -> int:
    """Multiply-accumulates of one forward pass of ``arch`` on one image at ``arch.r`` (see
    :func:`arch_cost`)."""
    return arch_cost(space, arch)["macs"]


def supernet_params(space: "Space | str") -> int:
    """Largest subnet plus the kernel-transformation matrices of every elastic block."""
    space = get_space(space)
    ks = sorted(space.kernel_choices)
    per_block = sum(k**4 for k in ks[:-1])
    return arch_params(space, ArchConfig.max(space)) + per_block * space.num_blocks


def space_stats(space: "Space | str") -> dict:
    """JSON-ready summary of a space: supernet parameters, subnet counts, the smallest and largest
    subnets with their costs, and their MACs at every resolution."""
    space = get_space(space)
    lo, hi = ArchConfig.min(space), ArchConfig.max(space)
    lo_cost, hi_cost = arch_cost(space, lo), arch_cost(space, hi)
    per_res = space.num_subnets(per_resolution=True)
    return {
        "space": space.name,
        "supernet_params": supernet_params(space),
        "num_subnets": {"per_resolution": per_res, "resolutions": len(space.resolutions),
                        "total": per_res * len(space.resolutions)},
        "min": {"arch": lo.to_dict(), **lo_cost},
        "max": {"arch": hi.to_dict(), **hi_cost},
        "macs_by_resolution": {
            str(r): {"min": arch_macs(space, lo.with_resolution(r)),
                     "max": arch_macs(space, hi.with_resolution(r))}
            for r in space.resolutions
        },
    }
