"""An exponential moving average of the weights (``ema.enabled=true``): Lightning's ``EMAWeightAveraging``.

Lightning swaps the averaged weights in for every validation (so ``val/acc`` and the best checkpoint
are the average's) and puts them into the module when training ends; every checkpoint holds them as
its ``state_dict`` (what ``evaluate``, ``predict``, ``export`` and the test load) with the raw
weights beside them (``current_model_state``) and the averaging state (``averaging_state``), from
which a killed run resumes both. Buffers are averaged too (BatchNorm's running statistics).

Three things differ from Lightning's class, each for a reason:

- the update is ``average.lerp(weights, 1 - decay)``: a weight that does not move keeps its average
  bit for bit, so frozen stages (and the stages ``strategy=gradual`` has not unfrozen yet) have no
  drift. torch's ``decay * average + (1 - decay) * weights`` moves them by rounding (a third of a
  ResNet's frozen weights after 100 steps), which would also change the feature cache's key;
- integer buffers (BatchNorm's ``num_batches_tracked``) follow the model: an average of counts,
  truncated back to an integer, would stop counting;
- loading a checkpoint to *test* it keeps its averaged weights: Lightning's hook would put the raw
  weights back, so the test would measure the model that was not selected. Only a resumed fit
  takes the raw weights back.

``warmup`` is timm's (``ModelEmaV3``): the decay of update ``n`` is ``min(decay, (1 + n) / (10 + n))``,
so a short fine-tuning run's average is not stuck near the starting weights and their new head.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

AverageFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def exact_ema(decay: float, warmup: bool = False) -> AverageFunction:
    """The averaging function of ``torch.optim.swa_utils.AveragedModel``: the new average of one tensor."""

    @torch.no_grad()
    def update(average: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        if not average.is_floating_point():
            return current
        if not warmup:
            return average.lerp(current, 1 - decay)
        rate = torch.clamp((1 + num_averaged) / (10 + num_averaged), max=decay)  # on the device: no sync
        return average.lerp(current, (1 - rate).to(average.dtype))

    return update


class EMAWeights(EMAWeightAveraging):
    """``EMAWeightAveraging`` updated after every optimizer step with ``exact_ema`` (see the module's notes).

    Example::

        trainer = L.Trainer(callbacks=[EMAWeights(decay=0.9998, warmup=True)])
    """

    def __init__(self, decay: float = 0.9998, warmup: bool = False) -> None:
        # EMAWeightAveraging.__init__ fixes torch's averaging function; its update rule (every step) is kept
        WeightAveraging.__init__(self, use_buffers=True, avg_fn=exact_ema(decay, warmup))
        self.decay = decay
        self.warmup = warmup
        self.update_every_n_steps = 1
        self.update_starting_at_step = None
        self.update_starting_at_epoch = None
        self.averaging = False  # set up for fit: an average exists to save and to restore

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.averaging = self.averaging or stage == "fit"

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.averaging:  # the LR finder's temporary checkpoint is written before fit: nothing to swap
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.averaging and trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def describe(self) -> str:
        return f"EMA of the weights, decay {self.decay:g}{' with warm-up' if self.warmup else ''}"


def ema_callbacks(settings: Any) -> list[EMAWeights]:
    """The weight average ``ema.*`` asks for (none when ``ema.enabled`` is false)."""
    if not settings or not settings.get("enabled"):
        return []
    return [EMAWeights(decay=float(settings["decay"]), warmup=bool(settings.get("warmup", False)))]
