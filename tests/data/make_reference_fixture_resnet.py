"""Regenerate ``reference_ofa_resnet50.json`` from the reference OFA implementation.

Runs ONLY in a separate environment that has the reference package (PyPI ``ofa``) installed,
never in the test suite, e.g.::

    python3 -m venv /tmp/ofa-ref
    /tmp/ofa-ref/bin/pip install torch==2.13.0 numpy tqdm ofa==0.1.0.post202307202001
    /tmp/ofa-ref/bin/python tests/data/make_reference_fixture_resnet.py \\
        ofa_deploy/assets/ofa-resnet50-imagenet-acc-predictor.pth

The same facts as ``reference_ofa_mbv3.json`` (weights from ``fill`` in
``make_reference_fixture.py``, same input, MAC counter and layer summaries) for the reference's
``ofa_resnet50`` supernet, plus the outputs of the reference ResNet50 accuracy predictor
(its ``AccuracyPredictor`` and ``ResNetArchEncoder``; their package imports tqdm) for a set
of archs.
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

OUT = Path(__file__).with_name("reference_ofa_resnet50.json")
RESOLUTIONS = (128, 176)
# the image sizes the reference's ResNet50 predictor was built with (its tutorials' list)
PREDICTOR_IMAGE_SIZES = [128, 144, 160, 176, 192, 224, 240, 256]
E_CHOICES, D_CHOICES, N_WIDTHS = [0.2, 0.25, 0.35], [0, 1, 2], 3


def trace(net, x: torch.Tensor, active: list, skip_stem: bool) -> tuple:
    seen = {}
    named = [("input_stem.0", net.input_stem[0]), ("input_stem.2", net.input_stem[2])]
    if not skip_stem:
        named.append(("input_stem.1", net.input_stem[1]))
    named += [(f"blocks.{i}", net.blocks[i]) for i in active]
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: seen.__setitem__(n, summarize(o)))
             for n, m in named]
    with torch.no_grad():
        y = net(x)[0].double()
    for h in hooks:
        h.remove()
    return y, seen


def random_arch(rng: np.random.Generator, n_blocks: int) -> dict:
    return {"d": [int(rng.choice([0, 2]))] + rng.choice(D_CHOICES, 4).tolist(),
            "e": rng.choice(E_CHOICES, n_blocks).tolist(),
            "w": rng.integers(N_WIDTHS, size=6).tolist()}


def main() -> None:
    _import_reference()
    from ofa.imagenet_classification.elastic_nn.networks import OFAResNets
    from ofa.nas.accuracy_predictor import AccuracyPredictor, ResNetArchEncoder
    from ofa.utils import count_net_flops

    torch.set_num_threads(2)
    rng = np.random.default_rng(2026)
    net = OFAResNets(dropout_rate=0, depth_list=D_CHOICES, expand_ratio_list=E_CHOICES,
                     width_mult_list=[0.65, 0.8, 1.0])
    sd = net.state_dict()
    filled = {k: fill_tensor(k, v.shape) for k, v in sd.items()}
    checksum = float(sum(float(fill(k, v.shape).sum()) for k, v in sd.items()))
    torch.nn.Module.load_state_dict(net, filled, strict=True)
    net.eval()
    n_blocks = len(net.blocks)
    archs = [{"name": "max", "d": [2] * 5, "e": [0.35] * n_blocks, "w": [2] * 6},
             {"name": "min", "d": [0] * 5, "e": [0.2] * n_blocks, "w": [0] * 6}]
    archs += [{"name": f"random{i}", **random_arch(rng, n_blocks)} for i in range(3)]
    out_archs = []
    for a in archs:
        net.set_active_subnet(d=a["d"], e=a["e"], w=a["w"])
        sub = net.get_active_subnet(preserve_weight=True).eval()
        active = [i for s, grp in enumerate(net.grouped_block_index)
                  for i in grp[:len(grp) - net.runtime_depth[s]]]
        per_res = {}
        for r in RESOLUTIONS:
            x = make_input(r)
            y, layers = trace(net, x, active, bool(net.input_stem_skipping))
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
        out_archs.append({**a, "params": sum(p.numel() for p in sub.parameters()),
                          "resolutions": per_res})
    result = {
        "about": "Facts measured on the reference OFA implementation (PyPI ofa "
                 "0.1.0.post202307202001, OFAResNets as ofa_net builds ofa_resnet50: "
                 "depth_list=[0,1,2], expand_ratio_list=[0.2,0.25,0.35], "
                 "width_mult_list=[0.65,0.8,1.0]); regenerate with "
                 "tests/data/make_reference_fixture_resnet.py.",
        "fill": "weights: fill() in make_reference_fixture.py; input: default_rng(r)."
                "standard_normal((1,3,r,r)) as float32; eval mode; 6 significant digits",
        "n_logits": N_LOGITS,
        "space": "ofa-resnet50",
        "supernet_params": sum(p.numel() for p in net.parameters()),
        "fill_checksum": checksum,
        "state_dict": {k: list(v.shape) for k, v in sd.items()},
        "archs": out_archs,
    }
    if len(sys.argv) > 1:  # the published predictor: its outputs for seeded archs
        enc = ResNetArchEncoder(image_size_list=PREDICTOR_IMAGE_SIZES, depth_list=D_CHOICES,
                                expand_list=E_CHOICES, width_mult_list=[0.65, 0.8, 1.0],
                                base_depth_list=[2, 2, 4, 2])
        pred = AccuracyPredictor(enc, hidden_size=400, n_layers=3, device="cpu")
        pred.load_state_dict(torch.load(sys.argv[1], map_location="cpu", weights_only=True))
        pred.eval()
        samples = []
        for i in range(24):
            a = random_arch(rng, n_blocks)
            a["image_size"] = PREDICTOR_IMAGE_SIZES[i % len(PREDICTOR_IMAGE_SIZES)]
            samples.append(a)
        with torch.no_grad():
            accs = pred.predict_acc(samples).double().tolist()
        feats = [np.nonzero(enc.arch2feature(a))[0].tolist() for a in samples[:3]]
        result["predictor"] = {
            "n_dim": enc.n_dim, "image_size_list": PREDICTOR_IMAGE_SIZES,
            "archs": [{**a, "acc": float(f"{acc:.9g}")} for a, acc in zip(samples, accs)],
            "feature_ones": feats,
        }
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]",
                  lambda m: "[" + " ".join(m.group(1).split()) + "]",
                  json.dumps(result, indent=1))
    OUT.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(text) // 1024} KiB)")


if __name__ == "__main__":
    main()
