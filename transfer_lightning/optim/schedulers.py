"""Epoch-wise schedules as multiplicative factors, so every parameter group keeps its ratio."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def cosine_with_warmup(
    optimizer: Optimizer, max_epochs: int, warmup_epochs: int = 0, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """Linear warm-up over ``warmup_epochs`` then cosine decay to ``min_lr_ratio`` x the base lr.

    A ``LambdaLR`` multiplies each group's own base learning rate by the same factor, so
    discriminative (per-stage) learning rates keep their ratios at every step.
    """

    def factor(epoch: int) -> float:
        if epoch < warmup_epochs:
            return (epoch + 1) / (warmup_epochs + 1)
        span = max(1, max_epochs - warmup_epochs)
        progress = min(1.0, (epoch - warmup_epochs) / span)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
