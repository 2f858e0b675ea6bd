"""Progress of Lightning's loops where Lightning's own bar is not drawn (log file, SLURM, bar off)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from transfer_lightning.utils.progress import PhaseProgress

_FASTER = "a GPU (trainer.accelerator=auto takes one when present) or a larger batch_size"


class LoopProgress(Callback):
    """Count, rate and time left of each training epoch, the test pass, a validation-only pass
    (evaluate split=val) and prediction, through ``PhaseProgress``.

    ``build_trainer`` adds it where Lightning's bar is off; on a terminal that bar shows the same.
    """

    def __init__(self) -> None:
        self._progress: PhaseProgress | None = None
        self._loop = ""  # the loop whose batches advance the progress: train, validate, test, predict

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start("train", f"Epoch {trainer.current_epoch}", _finite(trainer.num_training_batches))

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._advance("train")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish()

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start("test", "Test pass", _finite(sum(trainer.num_test_batches)))

    def on_test_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._advance("test")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish()

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":  # not the validation inside fit: the epoch's line covers it
            self._start("validate", "Validation pass", _finite(sum(trainer.num_val_batches)))

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._advance("validate")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._loop == "validate":
            self._finish()

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start("predict", "Predict", _finite(sum(trainer.num_predict_batches)))

    def on_predict_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._advance("predict")

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish()

    def _start(self, loop: str, description: str, total: int | None) -> None:
        self._finish()
        self._loop = loop
        self._progress = PhaseProgress(description, total, unit="batches", faster=_FASTER).__enter__()

    def _advance(self, loop: str) -> None:
        if self._progress is not None and loop == self._loop:
            self._progress.advance()

    def _finish(self) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
            self._progress = None


def _finite(batches: float | int) -> int | None:
    return int(batches) if batches != float("inf") else None
