"""Building blocks of the trainer: distillation loss, seeded dropout and initialisation, the
learning-rate schedule, and model digests for comparing runs and ranks."""
from __future__ import annotations

import hashlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["kd_loss", "ExplicitDropout", "init_weights", "WarmupCosine", "digest_tensors",
           "model_digest"]


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0
            ) -> torch.Tensor:
    """Cross-entropy against the teacher's softened distribution (soft targets), scaled by
    T^2 so the gradient size does not depend on the temperature."""
    t = float(temperature)
    target = F.softmax(teacher.detach().float() / t, dim=1)
    logp = F.log_softmax(student.float() / t, dim=1)
    return -(target * logp).sum(dim=1).mean() * (t * t)


class ExplicitDropout(nn.Module):
    """Dropout drawing its mask from a given ``torch.Generator`` instead of the global RNG."""

    def __init__(self, p: float, generator: torch.Generator):
        super().__init__()
        self.p = float(p)
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Zero a random fraction ``p`` of ``x`` in training mode, scaling the rest by 1/(1-p)."""
        if not self.training or self.p <= 0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty_like(x).bernoulli_(keep, generator=self.generator)
        return x * mask / keep


@torch.no_grad()
def init_weights(net: nn.Module, generator: torch.Generator) -> None:
    """The reference initialisation (He fan-out convs, unit BN, uniform linear) drawn from an
    explicit generator. Kernel-transformation matrices keep their identity init."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            m.weight.normal_(0.0, math.sqrt(2.0 / n), generator=generator)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.weight.size(1))
            m.weight.uniform_(-bound, bound, generator=generator)
            if m.bias is not None:
                m.bias.zero_()


class WarmupCosine:
    """Linear warm-up from ``warmup_lr`` then cosine decay to zero, stepped per batch."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, total_steps: int,
                 warmup_steps: int = 0, warmup_lr: float = 0.0):
        self.optimizer = optimizer
        self.lr, self.total, self.warmup, self.warmup_lr = lr, total_steps, warmup_steps, warmup_lr
        self.last_step = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        """The learning rate after ``step`` scheduler steps."""
        if step < self.warmup:
            return self.warmup_lr + (self.lr - self.warmup_lr) * step / self.warmup
        t = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * self.lr * (1.0 + math.cos(math.pi * min(1.0, t)))

    def _apply(self) -> None:
        lr = self.lr_at(self.last_step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def step(self) -> None:
        """Advance one batch and set the optimizer's learning rate for the next."""
        self.last_step += 1
        self._apply()

    def state_dict(self) -> dict:
        """Position and settings, for a checkpoint."""
        return {"last_step": self.last_step, "lr": self.lr, "total": self.total,
                "warmup": self.warmup, "warmup_lr": self.warmup_lr}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a :meth:`state_dict` (the settings come from the constructor)."""
        self.last_step = int(state["last_step"])
        self._apply()



def digest_tensors(tensors) -> str:
    """SHA-256 of the tensors' float32 values, in order."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def model_digest(net: nn.Module) -> str:
    """Hash of every parameter and floating buffer, for cross-run/cross-rank comparisons."""
    return digest_tensors([*net.parameters(), *(b for b in net.buffers()
                                                 if b.is_floating_point())])
