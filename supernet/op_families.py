"""What latency tables need from a family of spaces, as one record per family.

A latency table prices a subnet as the sum of its ops' entries. Which ops exist, which ops an
arch runs and how a population is priced fast differ between families: a MobileNet block's op
depends only on its own genes (:mod:`supernet.ops`), a ResNet bottleneck's also on the width
of the block before it (:mod:`supernet.resnet_ops`). The LUT builder, the table's predictor,
calibration, validation and the search read those facts through an :class:`OpFamily`, so that
the three can never disagree about an op and adding a family is one module (it builds an
``OpFamily`` and calls :func:`register_op_family`) plus its line in :data:`OP_FAMILY_MODULES`.

Kept free of torch and numpy at import: the hooks import what they need when called.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple

from .space import SpaceError

__all__ = ["OpFamily", "OP_FAMILIES", "OP_FAMILY_MODULES", "register_op_family",
           "op_family", "resolve_space", "all_space_names"]


@dataclass(frozen=True)
class OpFamily:
    """The hooks of one family (every callable takes the family's space record first).

    ``space_names()`` -> names served; ``get_space(name)`` -> the space record;
    ``arch_ops(space, arch)`` -> the ops ``arch`` runs, in order (:class:`~supernet.ops.OpKey`);
    ``enumerate_ops(space, resolutions)`` -> every distinct op any subnet can run there (sorted);
    ``grid(space, value_at, resolutions)`` -> a grid of ``value_at(op, r)`` per op with
    ``evaluate(batch)``, ``min_max(resolutions)``, ``affine(scale, add)`` and ``resolutions``;
    ``batch(space, archs)`` -> the validated batch ``grid.evaluate`` takes (a batch passes
    through after a check); ``sample_arch(space, rng, resolutions)`` -> one uniform random arch;
    ``parse_arch(text, space)`` -> an arch from the CLI's forms; ``build_op_model(op, space,
    seed, fold_bn)`` -> a torch module computing ``op``; ``random_subnets(space, archs, seed)``
    -> one static torch subnet per arch, extracted from one supernet with random weights.
    """

    name: str
    description: str
    space_type: type
    arch_type: type
    space_names: Callable[[], Tuple[str, ...]]
    get_space: Callable[[str], Any]
    arch_ops: Callable
    enumerate_ops: Callable
    grid: Callable
    batch: Callable
    sample_arch: Callable
    parse_arch: Callable
    build_op_model: Callable
    random_subnets: Callable


OP_FAMILIES: Dict[str, OpFamily] = {}

# The module of each family's hooks, imported on first need (it registers its OpFamily).
OP_FAMILY_MODULES: Dict[str, str] = {
    "mobilenet": "supernet.ops",  # MobileNetV3 and ProxylessNAS (supernet.space.Space)
    "resnet": "supernet.resnet_ops",
}


def _load() -> None:
    import importlib

    for module in OP_FAMILY_MODULES.values():
        importlib.import_module(module)


def register_op_family(family: OpFamily) -> OpFamily:
    """Register ``family`` under its name (once)."""
    if family.name in OP_FAMILIES:
        raise ValueError(f"op family {family.name!r} registered twice")
    OP_FAMILIES[family.name] = family
    return family


def all_space_names() -> Tuple[str, ...]:
    """Names of every space of every family."""
    _load()
    return tuple(n for f in OP_FAMILIES.values() for n in f.space_names())


def op_family(space: Any) -> OpFamily:
    """The :class:`OpFamily` of a space record or space name; an unknown name is a
    :class:`~supernet.space.SpaceError` listing every known space."""
    _load()
    for fam in OP_FAMILIES.values():
        if isinstance(space, fam.space_type) or (isinstance(space, str)
                                                  and space in fam.space_names()):
            return fam
    if isinstance(space, str):
        raise SpaceError(f"unknown space {space!r}; known spaces: {', '.join(all_space_names())}")
    raise SpaceError(f"not a space record: {type(space).__name__}")


def resolve_space(space: Any) -> Tuple[OpFamily, Any]:
    """``(family, space record)`` of a space record or name."""
    fam = op_family(space)
    return fam, (space if isinstance(space, fam.space_type) else fam.get_space(space))
