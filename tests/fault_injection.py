"""Test-only callbacks that make faults happen on cue; enabled through the CLI with
``+callbacks.<name>._target_=tests.fault_injection.<Class>`` (the project root is on ``sys.path``)."""

from __future__ import annotations

import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class SlowTrainingSteps(Callback):
    """Sleeps after every training step, so a test can signal the process in the middle of an epoch."""

    def __init__(self, seconds: float = 0.3) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        time.sleep(self.seconds)


class InfiniteLearningRate(Callback):
    """From epoch ``at_epoch`` on, every learning rate is infinite: the next loss is NaN."""

    def __init__(self, at_epoch: int = 1) -> None:
        self.at_epoch = at_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch >= self.at_epoch:
            for group in trainer.optimizers[0].param_groups:
                group["lr"] = float("inf")


class OutOfMemoryOnFirstStep(Callback):
    """Raises what CUDA raises when the GPU is full, from inside the first training step."""

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
