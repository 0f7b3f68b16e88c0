"""The OFA ProxylessNAS family: space ``ofa-proxyless-w1.3`` and its head.

Layout of the reference ``OFAProxylessNASNets`` (``ofa_proxyless_d234_e346_k357_w1.3``):
a 3x3 stride-2 stem and an expand-1 first block as in MobileNetV3, then six stages of
inverted-residual blocks with ReLU6 and no SE, the last stage a single block whose depth is
not elastic (21 elastic blocks in all), then the head: a 1x1 conv *with* BN and ReLU6
(``feature_mix_layer``), global pooling and the classifier. BN eps is 1e-3.

The blocks, stem, first block and their state_dict names are shared with MobileNetV3
(:mod:`supernet.model`); this module only adds the head and the space. It is imported by
:func:`supernet.space.get_space` on first need, so it imports torch only when a network is built.
"""
from __future__ import annotations

from typing import List

from .ops import OpKey
from .space import Family, Space, make_divisible, register_family, register_space

__all__ = ["PROXYLESS", "proxyless_head_ops", "ofa_proxyless_w13"]

# ProxylessNAS stage widths (stem, first block, six stages, head) of the reference
_BASE = (32, 16, 24, 40, 80, 96, 192, 320, 1280)


def proxyless_head_ops(space: Space, h: int) -> List[OpKey]:
    """feature mix (1x1 conv + BN + act, at the last block's resolution) -> pool -> classifier.

    The feature mix has the shape (and op kind) of MobileNetV3's final expand layer, so op
    models, tables and costs treat it alike."""
    c, fm = space.stage_widths[-1], space.final_expand_width
    return [
        OpKey("final_expand", h, c, fm, act=space.head_act),
        OpKey("pool", h, fm, fm),
        OpKey("classifier", 1, fm, space.num_classes),
    ]


def _build_head(net, space: Space) -> None:
    from .layers import ConvBNAct
    from .model import _Classifier

    net.feature_mix_layer = ConvBNAct(space.stage_widths[-1], space.final_expand_width, 1,
                                      act=space.head_act, bn_momentum=space.bn_momentum,
                                      bn_eps=space.bn_eps)
    net.classifier = _Classifier(space.final_expand_width, space.num_classes, space.dropout)


def _head_forward(net, x):
    x = net.feature_mix_layer(x)
    return net.classifier(x.mean((2, 3)))


PROXYLESS = register_family(Family(
    name="proxyless",
    description="OFA ProxylessNAS: feature mix (1x1 conv, BN) -> pool -> classifier",
    head_ops=proxyless_head_ops,
    build_head=_build_head,
    head_forward=_head_forward,
    head_modules=("feature_mix_layer", "classifier"),
))


def _ofa_proxyless(width_mult: float, name: str) -> Space:
    w = [make_divisible(b * width_mult, 8) for b in _BASE]
    return Space(
        name=name,
        description=f"OFA ProxylessNAS w{width_mult} (ImageNet, reference layout)",
        stem_width=w[0],
        stem_stride=2,
        first_block_width=w[1],
        first_block_act="relu6",
        first_block_se=False,
        stage_widths=tuple(w[2:8]),
        stage_strides=(2, 2, 2, 1, 2, 1),
        stage_acts=("relu6",) * 6,
        stage_se=(False,) * 6,
        final_expand_width=w[8],
        feature_mix_width=0,  # no layer after the pool but the classifier
        num_classes=1000,
        resolutions=tuple(range(128, 225, 4)),
        dropout=0.0,  # the reference's ofa_net builds this supernet with dropout_rate=0
        bn_eps=1e-3,
        stem_act="relu6",
        head_act="relu6",
        family="proxyless",
        fixed_stage_depths=(0, 0, 0, 0, 0, 1),
    )


@register_space
def ofa_proxyless_w13() -> Space:
    """The OFA ProxylessNAS space at width multiplier 1.3 (``ofa-proxyless-w1.3``), as the
    reference's ``ofa_proxyless_d234_e346_k357_w1.3`` supernet."""
    return _ofa_proxyless(1.3, "ofa-proxyless-w1.3")
