"""The OFA MobileNetV3 family's hooks (its spaces are the built-in ones in :mod:`supernet.space`).

Importing this module stays light: the head modules are built by :mod:`supernet.model`,
imported when a network is first built.
"""
from __future__ import annotations

from .ops import mbv3_head_ops
from .space import Family, register_family

__all__ = ["MBV3"]


def _build_head(net, space) -> None:
    from .model import mbv3_head

    mbv3_head(net, space)


def _head_forward(net, x):
    from .model import mbv3_head_forward

    return mbv3_head_forward(net, x)


MBV3 = register_family(Family(
    name="mbv3",
    description="OFA MobileNetV3: final expand -> pool -> feature mix (no BN) -> classifier",
    head_ops=mbv3_head_ops,
    build_head=_build_head,
    head_forward=_head_forward,
    head_modules=("final_expand_layer", "feature_mix_layer", "classifier"),
))
