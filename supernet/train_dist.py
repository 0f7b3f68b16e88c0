"""Data parallelism with ``torch.distributed`` (launched by ``torchrun``).

Gradients are averaged by hand with one flat all-reduce after all the subnets of a step have
run backward: the elastic supernet leaves different parameters unused on different steps,
which ``DistributedDataParallel`` handles only with costly unused-parameter scans.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist

from .errors import OfaDeployError

__all__ = ["DistContext", "init_distributed"]


class DistError(OfaDeployError, RuntimeError):
    """Ranks that disagree, or a launch that cannot form a process group."""


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False
    device: str = "cpu"  # where collective tensors live (nccl needs CUDA tensors)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def average_gradients(self, params: List[torch.nn.Parameter]) -> None:
        """Average ``.grad`` of ``params`` over ranks (parameters without a gradient on every
        rank stay without one: ranks train the same subnet, so the sets agree)."""
        if self.enabled:
            self._average([p.grad for p in params if p.grad is not None])

    def average_buffers(self, module: torch.nn.Module) -> None:
        """BN running statistics drift apart per rank (each sees its own shard); averaging
        them before a checkpoint keeps every rank's copy identical."""
        if self.enabled:
            self._average([b for b in module.buffers() if b.is_floating_point()])

    def _average(self, tensors: List[torch.Tensor]) -> None:
        # one all-reduce over a flat copy: far fewer collective calls than one per tensor
        if not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(self.world_size)
        off = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[off:off + n].view_as(t))
            off += n

    def broadcast_module(self, module: torch.nn.Module) -> None:
        if not self.enabled:
            return
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)

    def check_agree(self, value: int, what: str) -> None:
        """Raise on every rank when ranks hold different ``value`` (e.g. an arch digest)."""
        if not self.enabled:
            return
        t = torch.tensor([value, -value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if int(t[0]) != value or -int(t[1]) != value:
            raise DistError(f"rank {self.rank}: ranks disagree on {what}")

    def all_gather_object(self, obj: Any) -> List[Any]:
        if not self.enabled:
            return [obj]
        out: List[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str) -> DistContext:
    """Join the process group described by torchrun's environment (single process if absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    here = False
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(minutes=60))
        except (RuntimeError, ValueError) as exc:
            raise DistError(f"cannot join the process group ({backend}): {exc}") from None
        here = True
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local,
                       initialized_here=here, device=f"cuda:{local}" if backend == "nccl" else "cpu")
