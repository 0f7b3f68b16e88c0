"""BatchNorm re-calibration and subnet evaluation.

Running statistics in a supernet are a blend over every subnet trained; a subnet's own
statistics must be re-estimated before its accuracy means anything. The subnet is extracted
first (plain ``BatchNorm2d`` layers), its statistics reset and re-estimated as a cumulative
average (``momentum=None``) over a fixed set of batches.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn as nn

from .arch import ArchConfig
from .model import Supernet, extract_subnet

__all__ = ["calibrate_bn", "evaluate_subnet", "evaluate_module", "calibration_batches", "eval_batches",
           "autocast_for"]


def _bns(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def calibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor], *,
                 autocast=contextlib.nullcontext) -> nn.Module:
    """Reset every BN layer of ``model`` and re-estimate its statistics over ``batches``.

    Only the BN layers run in training mode, so dropout draws no random numbers. Returns the
    model in eval mode. ``model`` must hold plain BN layers (an extracted subnet).
    """
    bns = _bns(model)
    saved = [bn.momentum for bn in bns]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch weighs the same
        bn.train()
    seen = 0
    try:
        for x in batches:
            with autocast():
                model(x)
            seen += 1
    finally:
        for bn, m in zip(bns, saved):
            bn.momentum = m
        model.eval()
    if seen == 0 and bns:
        raise ValueError("BN calibration needs at least one batch")
    return model


def _chunks(n: int, batch_size: int) -> Iterator[np.ndarray]:
    for i in range(0, n, batch_size):
        yield np.arange(i, min(n, i + batch_size))


def eval_batches(source, resolution: int, batch_size: int, *, limit: int | None = None,
                 device="cpu", channels_last: bool = True):
    """Deterministic (no augmentation) batches of the first ``limit`` images of ``source``."""
    n = len(source) if limit is None else min(limit, len(source))
    for idx in _chunks(n, batch_size):
        x, y = source.batch(idx, resolution, train=False)
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, y.to(device, non_blocking=True)


def calibration_batches(source, resolution: int, images: int, batch_size: int, **kw):
    """Input tensors only (labels dropped) of the first ``images`` images of ``source`` at
    ``resolution``, unaugmented, for re-estimating BN statistics; ``kw`` goes to
    :func:`eval_batches`."""
    return (x for x, _ in eval_batches(source, resolution, batch_size, limit=images, **kw))


def autocast_for(device: "torch.device | str", enabled: bool):
    """A zero-argument factory of the context to run the forward pass in: fp16 autocast on CUDA when
    ``enabled``, else a no-op context (autocast is not used on CPU)."""
    dev = torch.device(device)
    if enabled and dev.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext


@torch.no_grad()
def evaluate_subnet(net: Supernet, arch: ArchConfig, eval_source, calib_source, *,
                    calib_images: int = 2000, images: int | None = None, batch_size: int = 256,
                    device="cpu", amp: bool = False, channels_last: bool = True) -> dict:
    """Extract ``arch``, re-calibrate its BN on ``calib_source`` and measure top-1 accuracy on
    the first ``images`` images of ``eval_source`` (all when None) at ``arch.r``."""
    return evaluate_module(extract_subnet(net, arch), arch.r, eval_source, calib_source,
                           calib_images=calib_images, images=images, batch_size=batch_size,
                           device=device, amp=amp, channels_last=channels_last)


@torch.no_grad()
def evaluate_module(model: nn.Module, resolution: int, eval_source, calib_source, *,
                    calib_images: int = 2000, images: int | None = None, batch_size: int = 256,
                    device="cpu", amp: bool = False, channels_last: bool = True) -> dict:
    """BN re-calibration then accuracy of a static network (plain BN layers) at ``resolution``.
    ``model`` is modified in place (its BN statistics) and left in eval mode."""
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ac = autocast_for(device, amp)
    kw = dict(device=device, channels_last=channels_last)
    calibrate_bn(model, calibration_batches(calib_source, resolution, calib_images, batch_size,
                                            **kw), autocast=ac)
    correct = total = 0
    loss_sum = 0.0
    for x, y in eval_batches(eval_source, resolution, batch_size, limit=images, **kw):
        with ac():
            out = model(x)
        out = out.float()
        loss_sum += float(nn.functional.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
        total += int(y.numel())
    if total == 0:
        raise ValueError("evaluation set is empty")
    return {"accuracy": correct / total, "samples": total, "loss": loss_sum / total}
