"""Data parallelism with ``torch.distributed`` (launched by ``torchrun``).

Gradients are averaged by ``DistributedDataParallel`` (bucketed all-reduces that overlap the
backward pass), see :meth:`DistContext.wrap_for_training`. The other collectives here run
rarely: BN statistics are averaged and generator states gathered at checkpoints, and the
module states are broadcast once, when DDP wraps the network.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, ContextManager, List

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..errors import OfaDeployError

__all__ = ["DistContext", "DistError", "init_distributed", "gradient_sync"]


class DistError(OfaDeployError, RuntimeError):
    """Ranks that disagree, or a launch that cannot form a process group."""


@dataclass
class DistContext:
    """Where this process stands in the process group (a single process by default)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        """Whether more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run's files."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.enabled:
            dist.barrier()

    def wrap_for_training(self, net: torch.nn.Module) -> torch.nn.Module:
        """The module the training forward/backward runs through: ``net`` itself in a single
        process, else ``net`` in ``DistributedDataParallel`` (which first broadcasts rank 0's
        parameters and buffers, so every rank starts from the same weights).

        ``find_unused_parameters=True``: every step trains other subnets (kernel sizes,
        depths and widths), so the set of parameters that get a gradient changes from step
        to step; DDP must find it after each forward. ``static_graph`` assumes the same
        graph every iteration and does not fit. Parameters that no rank used keep no
        gradient, as in a single process. ``broadcast_buffers=False``: each rank keeps its
        own BN running statistics (they are averaged at checkpoints, see
        :meth:`average_buffers`) instead of taking rank 0's before every forward.
        ``device_ids`` stays unset because the trainer moves batches itself and the arch
        argument of the forward is no tensor to move.
        """
        if not self.enabled:
            return net
        return DistributedDataParallel(net, find_unused_parameters=True,
                                       broadcast_buffers=False)

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

    def all_gather_object(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
        if not self.enabled:
            return [obj]
        out: List[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """Leave the process group if this context joined it."""
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def gradient_sync(model: torch.nn.Module, last: bool) -> ContextManager:
    """Context for one forward+backward of a step that runs several subnets: DDP averages
    gradients only on the step's ``last`` backward; the earlier ones accumulate locally
    (``no_sync``), so a step costs one round of all-reduces however many subnets it trains."""
    if isinstance(model, DistributedDataParallel) and not last:
        return model.no_sync()
    return contextlib.nullcontext()


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
                       initialized_here=here)
