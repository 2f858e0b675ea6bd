"""Learning-rate schedules, epoch-wise or per batch, and how Lightning steps them.

Every group's rate is re-derived from the head's before each step (``FreezingStrategy``), so a
schedule only has to drive the head's: the discriminative ratios hold under all of them. A schedule
over the run's optimizer steps takes ``total_steps`` (Lightning's ``estimated_stepping_batches``, which
counts ``trainer.accumulate_grad_batches``) and returns a ``StepwiseSchedule``, stepped after every
optimizer step; any other scheduler is stepped once per epoch.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import lightning as L
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR


@dataclass(frozen=True)
class StepwiseSchedule:
    """A scheduler that Lightning steps after every optimizer step (its ``interval: step``)."""

    scheduler: LRScheduler


def lightning_scheduler(factory: Any, optimizer: Optimizer, trainer: L.Trainer) -> dict[str, Any]:
    """Lightning's scheduler config for ``factory`` (a ``functools.partial``) completed with ``optimizer``, and
    with the run's optimizer steps when it takes ``total_steps``."""
    arguments: dict[str, Any] = {"optimizer": optimizer}
    if "total_steps" in inspect.signature(factory).parameters:
        arguments["total_steps"] = int(trainer.estimated_stepping_batches)
    made = factory(**arguments)
    if isinstance(made, StepwiseSchedule):
        return {"scheduler": made.scheduler, "interval": "step"}
    return {"scheduler": made, "interval": "epoch"}


def cosine_with_warmup(
    optimizer: Optimizer,
    max_epochs: int,
    warmup_epochs: int = 0,
    min_lr_ratio: float = 0.0,
    warmup_steps: int = 0,
    total_steps: int | None = None,
) -> LambdaLR | StepwiseSchedule:
    """Linear warm-up over ``warmup_epochs`` then cosine decay to ``min_lr_ratio`` x the base lr, per epoch;
    with ``warmup_steps`` the warm-up counts optimizer steps and the cosine runs over the remaining steps.

    A ``LambdaLR`` multiplies each group's own base learning rate by the same factor, so
    discriminative (per-stage) learning rates keep their ratios at every step.
    """

    def cosine(progress: float) -> float:
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    if warmup_steps:
        steps = total_steps or warmup_steps + 1

        def per_step(step: int) -> float:
            if step < warmup_steps:
                return (step + 1) / (warmup_steps + 1)
            return cosine((step - warmup_steps) / max(1, steps - warmup_steps))

        return StepwiseSchedule(LambdaLR(optimizer, per_step))

    def per_epoch(epoch: int) -> float:
        if epoch < warmup_epochs:
            return (epoch + 1) / (warmup_epochs + 1)
        return cosine((epoch - warmup_epochs) / max(1, max_epochs - warmup_epochs))

    return LambdaLR(optimizer, per_epoch)


def one_cycle(
    optimizer: Optimizer,
    max_epochs: int,
    total_steps: int,
    pct_start: float = 0.3,
    warmup_epochs: int | None = None,
    warmup_steps: int | None = None,
    div_factor: float = 5.0,
    final_div_factor: float = 1e5,
    anneal_strategy: str = "cos",
    cycle_momentum: bool = True,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
) -> StepwiseSchedule:
    """torch's ``OneCycleLR`` over the run's ``total_steps`` optimizer steps, peaking at each group's rate.

    The rising part is ``pct_start`` of the run, or ``warmup_steps`` steps, or ``warmup_epochs`` epochs
    (``total_steps / max_epochs`` steps each).
    """
    rising = warmup_steps if warmup_steps else warmup_epochs * total_steps / max_epochs if warmup_epochs else None
    if rising is not None:
        pct_start = min(max(rising / total_steps, 1e-6), 1 - 1e-6)  # OneCycleLR wants a share strictly inside (0, 1)
    return StepwiseSchedule(
        OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total_steps,
            pct_start=pct_start,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
            anneal_strategy=anneal_strategy,
            cycle_momentum=cycle_momentum,
            base_momentum=base_momentum,
            max_momentum=max_momentum,
        )
    )
