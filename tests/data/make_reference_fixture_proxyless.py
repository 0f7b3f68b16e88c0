"""Regenerate ``reference_ofa_proxyless.json`` from the reference OFA implementation.

Runs ONLY in a separate environment that has the reference package (PyPI ``ofa``) installed,
never in the test suite, e.g.::

    python3 -m venv /tmp/ofa-ref
    /tmp/ofa-ref/bin/pip install torch==2.13.0 numpy ofa==0.1.0.post202307202001
    /tmp/ofa-ref/bin/python tests/data/make_reference_fixture_proxyless.py

The same facts as ``reference_ofa_mbv3.json`` (see ``make_reference_fixture.py``, whose
weight fill, input, MAC counter and layer summaries this script reuses), for the reference's
``ofa_proxyless_d234_e346_k357_w1.3`` supernet.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_reference_fixture import (  # noqa: E402
    N_LOGITS, _import_reference, exact_macs, fill, fill_tensor, make_input, sig6, summarize,
)

OUT = Path(__file__).with_name("reference_ofa_proxyless.json")
RESOLUTIONS = (128, 224)


def trace(net, x: torch.Tensor, active: list) -> tuple:
    """Logits plus summaries of the stem, every active block and the feature mix layer."""
    seen = {}
    named = [("first_conv", net.first_conv), ("feature_mix_layer", net.feature_mix_layer)]
    named += [(f"blocks.{i}", net.blocks[i]) for i in [0] + active]
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: seen.__setitem__(n, summarize(o)))
             for n, m in named]
    with torch.no_grad():
        y = net(x)[0].double()
    for h in hooks:
        h.remove()
    return y, seen


def archs_for(rng: np.random.Generator, n_blocks: int, n_stages: int) -> list:
    # the last stage has one block; the reference's sampler writes d=1 there
    out = [
        {"name": "max", "ks": [7] * n_blocks, "e": [6] * n_blocks, "d": [4] * (n_stages - 1) + [1]},
        {"name": "min", "ks": [3] * n_blocks, "e": [3] * n_blocks, "d": [2] * (n_stages - 1) + [1]},
    ]
    for i in range(3):
        out.append({
            "name": f"random{i}",
            "ks": rng.choice([3, 5, 7], n_blocks).tolist(),
            "e": rng.choice([3, 4, 6], n_blocks).tolist(),
            "d": rng.choice([2, 3, 4], n_stages - 1).tolist() + [1],
        })
    return out


def main() -> None:
    _import_reference()
    from ofa.imagenet_classification.elastic_nn.networks import OFAProxylessNASNets
    from ofa.utils import count_net_flops

    torch.set_num_threads(2)
    rng = np.random.default_rng(2025)
    result = {
        "about": "Facts measured on the reference OFA implementation (PyPI ofa "
                 "0.1.0.post202307202001, OFAProxylessNASNets as ofa_net builds "
                 "ofa_proxyless_d234_e346_k357_w1.3); regenerate with "
                 "tests/data/make_reference_fixture_proxyless.py.",
        "fill": "weights: fill() in make_reference_fixture.py; input: default_rng(r)."
                "standard_normal((1,3,r,r)) as float32; eval mode; 6 significant digits; "
                "layers: sum, abs_sum and N_SAMPLES evenly spaced values of each layer output",
        "n_logits": N_LOGITS,
        "widths": {},
    }
    for width, space in ((1.3, "ofa-proxyless-w1.3"),):
        net = OFAProxylessNASNets(dropout_rate=0, width_mult=width, ks_list=[3, 5, 7],
                                  expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
        sd = net.state_dict()
        filled = {k: fill_tensor(k, v.shape) for k, v in sd.items()}
        checksum = float(sum(float(fill(k, v.shape).sum()) for k, v in sd.items()))
        torch.nn.Module.load_state_dict(net, filled, strict=True)
        net.eval()
        n_blocks, n_stages = len(net.blocks) - 1, len(net.block_group_info)
        archs = []
        for a in archs_for(rng, n_blocks, n_stages):
            net.set_active_subnet(ks=a["ks"], e=a["e"], d=a["d"])
            sub = net.get_active_subnet(preserve_weight=True).eval()
            per_res = {}
            active = [i for grp, d in zip(net.block_group_info, a["d"]) for i in grp[:d]]
            for r in RESOLUTIONS:
                x = make_input(r)
                y, layers = trace(net, x, active)
                with torch.no_grad():
                    y_sub = sub(x)[0].double()
                assert torch.allclose(y, y_sub, atol=1e-4 * float(y.abs().max()) + 1e-5), a
                per_res[str(r)] = {
                    "logits_head": sig6(y[:N_LOGITS].tolist()),
                    "logits_sum": float(f"{float(y.sum()):.9g}"),
                    "logits_abs_sum": float(f"{float(y.abs().sum()):.9g}"),
                    "argmax": int(y.argmax()),
                    "macs": exact_macs(sub, r),
                    "reference_flops_counter": float(count_net_flops(sub, (1, 3, r, r))),
                    "layers": layers,
                }
            archs.append({**a, "params": sum(p.numel() for p in sub.parameters()),
                          "resolutions": per_res})
        result["widths"][space] = {
            "width_mult": width,
            "supernet_params": sum(p.numel() for p in net.parameters()),
            "fill_checksum": checksum,
            "state_dict": {k: list(v.shape) for k, v in sd.items()},
            "archs": archs,
        }
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]",
                  lambda m: "[" + " ".join(m.group(1).split()) + "]",
                  json.dumps(result, indent=1))
    OUT.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(text) // 1024} KiB)")


if __name__ == "__main__":
    main()
