"""The gradient of one training step: every sampled subnet runs forward and backward on the
same batch, their gradients add up, and under DDP they are averaged over ranks once, on the
step's last backward."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import torch
import torch.nn.functional as F

from ..arch import ArchConfig
from .components import kd_loss
from .distributed import gradient_sync

__all__ = ["StepLoss", "LossSettings", "backward_subnets"]


@dataclass(frozen=True)
class LossSettings:
    """How a subnet's loss is formed (the ``loss`` section of the config plus the sampler)."""

    label_smoothing: float = 0.0
    kd_weight: float = 0.0
    kd_temperature: float = 1.0
    # sandwich sampling: subnets after the first distil from the first (in-place distillation)
    inplace_distillation: bool = False

    @classmethod
    def from_config(cls, loss: dict, sampler: str) -> "LossSettings":
        """From the config's ``loss`` section and its ``sampler`` field."""
        return cls(label_smoothing=loss["label_smoothing"], kd_weight=loss["kd_weight"],
                   kd_temperature=loss["kd_temperature"],
                   inplace_distillation=sampler == "sandwich")


@dataclass(frozen=True)
class StepLoss:
    """Loss and top-1 accuracy of the step's first subnet on this rank's batch."""

    loss: float
    acc: float


def backward_subnets(model: torch.nn.Module, archs: Sequence[ArchConfig], x: torch.Tensor,
                     y: torch.Tensor, settings: LossSettings, *,
                     teacher_logits: torch.Tensor | None = None,
                     autocast: Callable[[], ContextManager] = contextlib.nullcontext,
                     scale: Callable[[torch.Tensor], torch.Tensor] = lambda loss: loss,
                     ) -> StepLoss:
    """Run forward and backward of every subnet in ``archs`` on ``(x, y)``, adding their
    gradients into ``.grad`` (the caller zeroes them first).

    ``model`` is the supernet or its DDP wrapper (:meth:`DistContext.wrap_for_training`); with
    DDP the summed gradient ends up averaged over ranks, equal to the gradient of the
    concatenated global batch when every rank's batch has the same size. ``teacher_logits``
    adds knowledge distillation from a fixed teacher; ``scale`` is the AMP loss scaler's."""
    first = None
    first_logits = None
    for j, arch in enumerate(archs):
        with gradient_sync(model, last=j == len(archs) - 1):
            with autocast():
                out = model(x, arch)
            out = out.float()
            if settings.inplace_distillation and j > 0:
                loss = kd_loss(out, first_logits, settings.kd_temperature)
            else:
                loss = F.cross_entropy(out, y, label_smoothing=settings.label_smoothing)
                if teacher_logits is not None:
                    loss = loss + settings.kd_weight * kd_loss(out, teacher_logits,
                                                               settings.kd_temperature)
            scale(loss).backward()
        if j == 0:
            first_logits = out.detach()
            first = StepLoss(loss=float(loss.detach()),
                             acc=float((first_logits.argmax(1) == y).float().mean()))
    return first
