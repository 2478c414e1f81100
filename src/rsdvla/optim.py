"""Optimizer and schedule wiring shared by the LightningModules."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.05,
    min_ratio: float = 0.05,
):
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to ``min_ratio``."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def configure_optimizers(module, optimizer: Callable, scheduler: Callable | None):
    """Lightning ``configure_optimizers`` from Hydra partials; the schedule steps every batch."""
    opt = optimizer(params=module.parameters())
    if scheduler is None:
        return opt
    total = int(module.trainer.estimated_stepping_batches)
    return {
        "optimizer": opt,
        "lr_scheduler": {
            "scheduler": scheduler(optimizer=opt, total_steps=total),
            "interval": "step",
        },
    }
