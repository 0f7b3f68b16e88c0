"""Regenerate ``reference_ofa_mbv3.json`` from the reference OFA implementation.

Runs ONLY in a separate environment that has the reference package (PyPI ``ofa``) installed,
never in the test suite, e.g.::

    python3 -m venv /work/refvenv
    /work/refvenv/bin/pip install torch==2.13.0 numpy
    /work/refvenv/bin/pip install --no-deps ofa
    /work/refvenv/bin/python tests/data/make_reference_fixture.py

The JSON holds facts only (key names and shapes, counts, logits) so that the test suite can
check our supernet against the reference without the reference being installed.

Weights are not random: every state_dict tensor is a deterministic function of its key and
shape (:func:`fill`), re-implemented in ``tests/supernet/test_reference_compat.py``; the
per-width ``fill_checksum`` lets the test prove that both implementations agree.
"""
from __future__ import annotations

import json
import re
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).with_name("reference_ofa_mbv3.json")
N_LOGITS = 50
N_SAMPLES = 8
RESOLUTIONS = (160, 224)


def fill(key: str, shape) -> np.ndarray:
    """Deterministic tensor for a state_dict entry (float64; num_batches_tracked -> int64 0)."""
    shape = tuple(int(s) for s in shape)
    if key.endswith("num_batches_tracked"):
        return np.zeros(shape, dtype=np.int64)
    rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")))
    z = rng.standard_normal(shape)
    if key.endswith("_matrix"):  # kernel transformation: near identity
        return np.eye(shape[0]) + 0.05 * z
    if key.endswith("running_var"):
        return np.abs(z) + 0.5
    if key.endswith("running_mean") or key.endswith("bias"):
        return 0.05 * z
    if len(shape) == 1:  # BN affine weight
        return 1.0 + 0.1 * z
    fan_in = int(np.prod(shape[1:]))
    return z * np.sqrt(1.5 / fan_in)


def fill_tensor(key: str, shape) -> torch.Tensor:
    a = fill(key, shape)
    return torch.from_numpy(a) if a.dtype == np.int64 else torch.from_numpy(a.astype(np.float32))


def make_input(r: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(r).standard_normal((1, 3, r, r)).astype(np.float32))


def _import_reference():
    # The reference package imports its data-loading helpers at import time, and they need
    # torchvision, PIL and the long-gone torch._six; none of them is part of the network, so
    # a blank module stands in for the whole data-loader subpackage.
    stub = types.ModuleType("ofa.utils.my_dataloader")
    stub.__all__ = []
    sys.modules.setdefault("ofa.utils.my_dataloader", stub)
    from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3
    from ofa.utils import count_net_flops

    return OFAMobileNetV3, count_net_flops


def exact_macs(net: torch.nn.Module, r: int) -> int:
    """The reference counting rule (Conv2d: cin*out_elements*kh*kw/groups; Linear: in*out),
    summed in Python ints: the reference counter sums in float32 and rounds large totals."""
    total = [0]

    def conv_hook(m, _i, y):
        total[0] += m.in_channels * y.numel() * m.weight.shape[2] * m.weight.shape[3] // m.groups

    def lin_hook(m, _i, _y):
        total[0] += m.in_features * m.out_features

    hooks = []
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, torch.nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
    with torch.no_grad():
        net(torch.zeros(1, 3, r, r))
    for h in hooks:
        h.remove()
    return total[0]


def sig6(values) -> list:
    return [float(f"{float(v):.6g}") for v in values]


def summarize(t: torch.Tensor) -> dict:
    """A few numbers that pin down one activation tensor: pooled logits hide a wrong block,
    these do not (and they say which block went wrong first)."""
    flat = t.detach().double().reshape(-1)
    idx = np.linspace(0, flat.numel() - 1, N_SAMPLES).astype(np.int64)
    return {"shape": list(t.shape), "sum": float(f"{float(flat.sum()):.9g}"),
            "abs_sum": float(f"{float(flat.abs().sum()):.9g}"),
            "sample": sig6(flat[torch.from_numpy(idx)].tolist())}


def trace(net, x: torch.Tensor, active: list) -> tuple:
    """Logits plus summaries of the stem, every active block and the head layers, by the
    index the block has in the reference's ``blocks`` list (the first block is 0)."""
    seen = {}
    named = [("first_conv", net.first_conv), ("final_expand_layer", net.final_expand_layer),
             ("feature_mix_layer", net.feature_mix_layer)]
    named += [(f"blocks.{i}", net.blocks[i]) for i in [0] + active]
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: seen.__setitem__(n, summarize(o)))
             for n, m in named]
    with torch.no_grad():
        y = net(x)[0].double()
    for h in hooks:
        h.remove()
    return y, seen


def archs_for(rng: np.random.Generator, n_blocks: int, n_stages: int) -> list:
    out = [
        {"name": "max", "ks": [7] * n_blocks, "e": [6] * n_blocks, "d": [4] * n_stages},
        {"name": "min", "ks": [3] * n_blocks, "e": [3] * n_blocks, "d": [2] * n_stages},
    ]
    for i in range(2):
        out.append({
            "name": f"random{i}",
            "ks": rng.choice([3, 5, 7], n_blocks).tolist(),
            "e": rng.choice([3, 4, 6], n_blocks).tolist(),
            "d": rng.choice([2, 3, 4], n_stages).tolist(),
        })
    return out


def main() -> None:
    OFAMobileNetV3, count_net_flops = _import_reference()
    torch.set_num_threads(2)
    rng = np.random.default_rng(2024)
    result = {
        "about": "Facts measured on the reference OFA implementation (PyPI ofa, "
                 "OFAMobileNetV3 ks_list=[3,5,7] expand_ratio_list=[3,4,6] depth_list=[2,3,4]); "
                 "regenerate with tests/data/make_reference_fixture.py.",
        "fill": "weights: fill() in make_reference_fixture.py; input: default_rng(r)."
                "standard_normal((1,3,r,r)) as float32; eval mode; 6 significant digits; "
                "layers: sum, abs_sum and N_SAMPLES evenly spaced values of each layer output",
        "n_logits": N_LOGITS,
        "widths": {},
    }
    for width, space in ((1.0, "ofa-mbv3-w1.0"), (1.2, "ofa-mbv3-w1.2")):
        net = OFAMobileNetV3(ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                             depth_list=[2, 3, 4], width_mult=width)
        sd = net.state_dict()
        filled = {k: fill_tensor(k, v.shape) for k, v in sd.items()}
        checksum = float(sum(float(fill(k, v.shape).sum()) for k, v in sd.items()))
        # nn.Module's own loader: the reference override remaps names we want to keep as is.
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
                # The reference's own extraction must agree with its dynamic forward.
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
    # One JSON line per list keeps the file small and its diffs readable.
    text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]",
                  lambda m: "[" + " ".join(m.group(1).split()) + "]",
                  json.dumps(result, indent=1))
    OUT.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(text) // 1024} KiB)")


if __name__ == "__main__":
    main()
