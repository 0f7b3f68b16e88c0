"""Two spawned CPU processes (gloo): the trainer's averaged gradient equals the gradient a single
process computes on the two ranks' batches concatenated."""
from __future__ import annotations

import copy
import json

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from supernet import ArchConfig, Supernet, get_space
from supernet.training.components import init_weights
from supernet.training.distributed import DistContext
from supernet.training.step import LossSettings, backward_subnets

from .conftest import SPACE

WORLD = 2
GLOBAL_BATCH = 8
SETTINGS = LossSettings(label_smoothing=0.1, kd_weight=0.5, kd_temperature=2.0,
                        inplace_distillation=True)


def _grads(net: torch.nn.Module) -> dict:
    return {n: None if p.grad is None else p.grad.detach().clone()
            for n, p in net.named_parameters()}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        sp = get_space(SPACE)
        net = Supernet(sp)
        init_weights(net, torch.Generator().manual_seed(3))
        # Eval mode: BN normalises with its running statistics, so every image's loss is
        # independent of the others in its batch and the mean over two half batches is the
        # mean over the whole batch. (Train-mode BN uses per-rank batch statistics, with which
        # no data-parallel gradient equals the full-batch one.)
        net.eval()
        reference = copy.deepcopy(net)
        g = torch.Generator().manual_seed(11)
        x = torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g)
        y = torch.randint(0, sp.num_classes, (GLOBAL_BATCH,), generator=g)
        teacher = torch.randn(GLOBAL_BATCH, sp.num_classes, generator=g)
        # Largest first, smallest last: the deep blocks' and large kernels' parameters get a
        # gradient only from the first subnet, under no_sync, and DDP must still average them.
        archs = [ArchConfig.max(sp, 32), ArchConfig.min(sp, 32)]

        backward_subnets(reference, archs, x, y, SETTINGS, teacher_logits=teacher)
        want = _grads(reference)

        smallest_only = copy.deepcopy(net)
        backward_subnets(smallest_only, archs[1:], x, y, SETTINGS)
        first_only = [n for n, gr in _grads(smallest_only).items()
                      if gr is None and want[n] is not None]

        model = DistContext(rank=rank, world_size=WORLD).wrap_for_training(net)
        local = slice(rank * GLOBAL_BATCH // WORLD, (rank + 1) * GLOBAL_BATCH // WORLD)
        backward_subnets(model, archs, x[local], y[local], SETTINGS, teacher_logits=teacher[local])
        got = _grads(net)

        none_differs = sorted(n for n in want if (want[n] is None) != (got[n] is None))
        value_differs = sorted(n for n in want if want[n] is not None and got[n] is not None
                               and not torch.allclose(got[n], want[n], rtol=1e-4, atol=1e-6))
        max_abs_diff = max(float((got[n] - want[n]).abs().max()) for n in want
                           if want[n] is not None and got[n] is not None)
        report = {"none_differs": none_differs, "value_differs": value_differs,
                  "max_abs_diff": max_abs_diff, "first_only": len(first_only),
                  "without_grad": sum(v is None for v in want.values()),
                  "with_grad": sum(v is not None for v in want.values())}
        with open(f"{out_dir}/rank{rank}.json", "w", encoding="utf-8") as fh:
            json.dump(report, fh)
    finally:
        dist.destroy_process_group()


def test_two_rank_gradient_equals_full_batch_gradient(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        rep = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert rep["with_grad"] > 0 and rep["without_grad"] > 0  # an elastic step, some unused
        assert rep["first_only"] > 0  # the case no_sync + unused-parameter search must handle
        assert rep["none_differs"] == [], rep
        assert rep["value_differs"] == [], rep
