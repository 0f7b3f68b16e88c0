"""Regenerate ``ofa-resnet50-netconfig/``: ResNet50 subnets of the reference's ``ofa_resnet50``
saved as the reference saves a specialized net (``net.config``: ``ResNets.config`` of
``get_active_subnet()``; ``run.config``: ``image_size``), plus ``arch.json`` (the reference
arch dict they were built from) for the tests to compare with.

Runs ONLY with the reference package (PyPI ``ofa``), never in the test suite, e.g.::

    pip install --no-deps --target /tmp/ofa-ref ofa==0.1.0.post202307202001
    PYTHONPATH=/tmp/ofa-ref python tests/data/make_resnet_net_configs.py

(torch, numpy and tqdm from the project's environment; no weights are needed.)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_reference_fixture import _import_reference  # noqa: E402

OUT = Path(__file__).with_name("ofa-resnet50-netconfig")
E_CHOICES, D_CHOICES, WIDTHS = [0.2, 0.25, 0.35], [0, 1, 2], [0.65, 0.8, 1.0]


def main() -> None:
    _import_reference()  # stubs the reference's data loaders
    from ofa.imagenet_classification.elastic_nn.networks import OFAResNets

    net = OFAResNets(dropout_rate=0, depth_list=D_CHOICES, expand_ratio_list=E_CHOICES,
                     width_mult_list=WIDTHS)
    n = len(net.blocks)
    rng = np.random.default_rng(0)
    cases = {
        "resnet50_max_r224": ({"d": [2] * 5, "e": [0.35] * n, "w": [2] * 6}, 224),
        "resnet50_min_r128": ({"d": [0] * 5, "e": [0.2] * n, "w": [0] * 6}, 128),
        # stem kept, mixed widths, at a size outside the search range
        "resnet50_mixed_r288": ({"d": [2, 0, 1, 2, 1], "e": rng.choice(E_CHOICES, n).tolist(),
                                 "w": [1, 0, 2, 1, 0, 2]}, 288),
        "resnet50_mixed_r160": ({"d": [0, 2, 0, 1, 2], "e": rng.choice(E_CHOICES, n).tolist(),
                                 "w": [0, 2, 1, 0, 2, 1]}, 160),
    }
    for name, (arch, r) in cases.items():
        net.set_active_subnet(**arch)
        cfg = net.get_active_subnet(preserve_weight=False).config
        d = OUT / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "net.config").write_text(json.dumps(cfg, indent=1) + "\n")
        (d / "run.config").write_text(json.dumps({"image_size": r}) + "\n")
        (d / "arch.json").write_text(json.dumps({**arch, "r": r}) + "\n")
        print(name, len(cfg["blocks"]), "blocks")


if __name__ == "__main__":
    main()
