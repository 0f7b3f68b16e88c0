"""Progressive shrinking vs. no progressive shrinking vs. training each subnet alone.

Arms, all on the same fixed Fashion-MNIST training subset, the same batch size, optimizer,
augmentation and total number of epochs:

  (a) ps        teacher -> kernel -> depth (2 stages) -> expand (2 stages), KD from the teacher
  (b) no_ps     one `full` phase: every elastic dimension sampled from the first step
                (cross-entropy only: without a teacher phase there is no teacher to distil)
  (c) alone     each of the four subnets extracted from a freshly initialised supernet and
                trained by itself, cross-entropy only

Four fixed subnets are evaluated after each arm (BN re-calibrated on the held-out split, then
top-1 on the first N test images): smallest, two middle, largest, all at the training
resolution. Also: training throughput (images/s) of one supernet step at the largest and the
smallest subnet vs. the extracted static subnet's own step.

    python benchmarks/progressive_shrinking/run.py               # reduced scale (see --help)
    python benchmarks/progressive_shrinking/run.py --quick       # smoke run on synthetic data

Writes results.json and README.md next to this file (or into --out).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from supernet import ArchConfig, Supernet, extract_subnet, get_space  # noqa: E402
from supernet.bn import evaluate_module, evaluate_subnet  # noqa: E402
from supernet.training.data import load_dataset  # noqa: E402
from supernet.training.components import WarmupCosine, init_weights  # noqa: E402
from supernet.training.trainer import Trainer  # noqa: E402
from supernet.training.config import TrainConfig  # noqa: E402

SPACE = "ofa-mbv3-tiny"
HERE = Path(__file__).resolve().parent
WORK = "/tmp/ofa-ps-bench"


def subnets(space, r: int) -> dict:
    sp = get_space(space)
    nb, ns = sp.num_blocks, sp.num_stages
    mid_a = ArchConfig((5,) * nb, (4,) * nb, (3,) * ns, r).canonical(sp)
    mid_b = ArchConfig.sample(sp, np.random.default_rng(2024), resolutions=[r])
    return {"smallest": ArchConfig.min(sp, r), "middle_a": mid_a, "middle_b": mid_b,
            "largest": ArchConfig.max(sp, r)}


def base_config(args) -> dict:
    return {
        "batch_size": args.batch_size, "resolutions": [args.resolution],
        "checkpoint_every": 10**6, "log_every": 50,
        "data": {"train_subset": args.subset},
        "eval": {"images": args.eval_images, "calib_images": args.calib_images,
                 "resolutions": [args.resolution]},
    }


def ps_schedule(e: float, lr: float) -> dict:
    """The PS arm's stages as fractions of the total epochs ``e``."""
    f = {"teacher": 0.4, "kernel": 0.1, "depth": [0.1, 0.1], "expand": [0.1, 0.2]}
    out = {}
    for k, v in f.items():
        ep = [round(x * e, 4) for x in v] if isinstance(v, list) else round(v * e, 4)
        out[k] = {"epochs": ep, "lr": lr if k == "teacher" else lr * 0.4, "warmup_epochs": 0.0,
                  "subnets_per_step": 1 if k in ("teacher", "kernel") else 2}
    out["teacher"]["warmup_epochs"] = round(0.05 * e, 4)
    return out


def evaluate_all(net, archs, ds, args) -> dict:
    test = ds.split("test")
    return {name: evaluate_subnet(net, a, test, ds.holdout, calib_images=args.calib_images,
                                  images=args.test_images)["accuracy"]
            for name, a in archs.items()}


def run_supernet_arm(name, ds, overrides, phases, archs, args) -> dict:
    out = Path(args.work) / name
    if out.exists():
        import shutil

        shutil.rmtree(out)
    cfg = TrainConfig.for_space(SPACE, overrides=overrides)
    t = Trainer(None, ds, cfg, out, phases=phases, data_spec=args.data, progress=args.progress)
    t0 = time.time()
    t.run()
    secs = time.time() - t0
    steps = t.pos["global_step"]
    return {"accuracy": evaluate_all(t.net, archs, ds, args), "train_seconds": round(secs, 1),
            "steps": steps}


def train_alone(arch, ds, args) -> dict:
    """One static subnet, same data order, augmentation, optimizer and schedule shape."""
    sp = get_space(SPACE)
    sup = Supernet(sp)
    init_weights(sup, torch.Generator().manual_seed(args.seed))
    net = extract_subnet(sup, arch).train().to(memory_format=torch.channels_last)
    bs = args.batch_size
    pool = np.arange(len(ds.train))
    if args.subset < len(pool):
        pool = np.sort(np.random.default_rng(1).permutation(len(pool))[:args.subset])
    spe = len(pool) // bs
    steps = max(1, int(round(args.epochs * spe)))
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 3e-5},
                           {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, momentum=0.9,
                          nesterov=True)
    sched = WarmupCosine(opt, args.lr, steps, int(round(0.05 * args.epochs * spe)))
    aug = np.random.default_rng([args.seed, 0xA06, 0])
    t0 = time.time()
    for step in range(steps):
        epoch, pos = divmod(step, spe)
        perm = np.random.default_rng([args.seed, 0xDA7A, 0, epoch]).permutation(pool)
        x, y = ds.train.batch(perm[pos * bs:(pos + 1) * bs], arch.r, train=True, rng=aug,
                              crop_padding=2, flip=True)
        x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    secs = time.time() - t0
    acc = evaluate_module(net, arch.r, ds.split("test"), ds.holdout,
                          calib_images=args.calib_images, images=args.test_images)["accuracy"]
    return {"accuracy": acc, "train_seconds": round(secs, 1), "steps": steps}


def throughput(archs, args) -> dict:
    """images/s of one training step (forward, backward, SGD) at batch ``batch_size``."""
    sp = get_space(SPACE)
    sup = Supernet(sp).to(memory_format=torch.channels_last).train()
    g = torch.Generator().manual_seed(0)
    out = {}
    for name in ("largest", "smallest"):
        arch = archs[name]
        x = torch.randn(args.batch_size, 3, arch.r, arch.r, generator=g).contiguous(
            memory_format=torch.channels_last)
        y = torch.randint(0, 10, (args.batch_size,), generator=g)
        static = extract_subnet(sup, arch).train().to(memory_format=torch.channels_last)
        row = {}
        for kind, fwd, params in (("supernet", lambda: sup(x, arch), sup.parameters()),
                                  ("static", lambda: static(x), static.parameters())):
            opt = torch.optim.SGD(list(params), lr=0.01, momentum=0.9)
            times = []
            for i in range(args.tp_steps + 2):
                t0 = time.perf_counter()
                loss = F.cross_entropy(fwd(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if i >= 2:
                    times.append(time.perf_counter() - t0)
            row[kind] = round(args.batch_size / float(np.median(times)), 1)
        row["supernet_over_static"] = round(row["supernet"] / row["static"], 3)
        out[name] = row
    return out


def markdown(res: dict) -> str:
    a = res["setup"]
    names = list(res["subnets"])
    lines = [
        f"# Progressive shrinking benchmark (ofa-mbv3-tiny, {a['data']}, reduced scale)",
        "",
        f"Generated by `benchmarks/progressive_shrinking/run.py` on {res['machine']}.",
        "",
        f"Scale (same for every arm): {a['subset']} training images, {a['epochs']} epochs in "
        f"total, batch {a['batch_size']}, resolution {a['resolution']} px, seed {a['seed']}; "
        f"accuracy = top-1 on the first {a['test_images']} Fashion-MNIST test images after BN "
        f"re-calibration on {a['calib_images']} held-out training images. CPU, 1 thread, on a "
        "machine shared with other jobs (timings are noisy).",
        "",
        "| subnet | MACs | (a) progressive shrinking | (b) no PS (all elastic from the start) "
        "| (c) trained alone |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        acc = [res["arms"][k]["accuracy"][n] if k != "alone" else res["arms"]["alone"][n]["accuracy"]
               for k in ("ps", "no_ps", "alone")]
        lines.append(f"| {n} `{res['subnets'][n]['arch']}` | {res['subnets'][n]['macs'] / 1e6:.1f}M "
                     + "".join(f"| {x:.4f} " for x in acc) + "|")
    lines += ["", "Training time per arm (s): "
              + ", ".join(f"{k} {v}" for k, v in res["train_seconds"].items()), ""]
    tp = res["throughput"]
    lines += ["## Training throughput (images/s, one step: forward + backward + SGD)", "",
              "| subnet | supernet step | static subnet step | ratio |", "|---|---|---|---|"]
    for n, row in tp.items():
        lines.append(f"| {n} | {row['supernet']} | {row['static']} | "
                     f"{row['supernet_over_static']} |")
    lines += ["", "## Reading", "", res.get("notes", ""), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--subset", type=int, default=3000, help="training images (fixed subset)")
    ap.add_argument("--epochs", type=float, default=5.0, help="total epochs per arm")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--test-images", type=int, default=2000)
    ap.add_argument("--eval-images", type=int, default=200, help="per-stage grid (metrics only)")
    ap.add_argument("--calib-images", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tp-steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default=WORK)
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--quick", action="store_true", help="tiny synthetic smoke run")
    ap.add_argument("--render", metavar="NOTES.md", default=None,
                    help="only re-render README.md from results.json with this reading text")
    args = ap.parse_args(argv)
    if args.render:
        out = Path(args.out)
        res = json.loads((out / "results.json").read_text())
        res["notes"] = Path(args.render).read_text().strip()
        (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
        (out / "README.md").write_text(markdown(res))
        return 0
    if args.quick:
        args.data, args.subset, args.epochs, args.batch_size = "synthetic", 256, 0.5, 16
        args.test_images, args.calib_images, args.eval_images, args.tp_steps = 64, 32, 16, 2
        if args.work == WORK:  # never clear the work dirs of a full run going on beside it
            args.work = WORK + "-quick"
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.data)
    archs = subnets(SPACE, args.resolution)
    from supernet.cost import arch_cost

    res = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip() +
                      f", torch {torch.__version__}",
           "setup": {k: getattr(args, k) for k in ("data", "subset", "epochs", "batch_size", "lr",
                                                     "resolution", "test_images", "calib_images",
                                                     "seed")},
           "subnets": {n: {"arch": a.to_string(SPACE), **arch_cost(SPACE, a)}
                       for n, a in archs.items()},
           "arms": {}, "train_seconds": {}}
    base = base_config(args)
    base["seed"] = args.seed
    ps = dict(base, phases=ps_schedule(args.epochs, args.lr))
    res["arms"]["ps"] = run_supernet_arm("ps", ds, ps, ("teacher", "kernel", "depth", "expand"),
                                         archs, args)
    nops = dict(base, loss={"kd_weight": 0.0},
                phases={"full": {"epochs": args.epochs, "lr": args.lr,
                                 "warmup_epochs": round(0.05 * args.epochs, 4),
                                 "subnets_per_step": 2}})
    res["arms"]["no_ps"] = run_supernet_arm("no_ps", ds, nops, ("full",), archs, args)
    res["arms"]["alone"] = {n: train_alone(a, ds, args) for n, a in archs.items()}
    res["train_seconds"] = {
        "ps": res["arms"]["ps"]["train_seconds"], "no_ps": res["arms"]["no_ps"]["train_seconds"],
        "alone (4 subnets)": round(sum(v["train_seconds"] for v in res["arms"]["alone"].values()),
                                   1)}
    res["throughput"] = throughput(archs, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "README.md").write_text(markdown(res))
    print(json.dumps({k: res["arms"][k]["accuracy"] for k in ("ps", "no_ps")}, indent=1))
    print({n: v["accuracy"] for n, v in res["arms"]["alone"].items()})
    print(json.dumps(res["throughput"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
