"""Plain progress lines for Lightning's loops where no live bar is drawn (log file, SLURM, bar off)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from transfer_lightning.progress import PhaseProgress

_FASTER = "a GPU (trainer.accelerator=auto takes one when present) or a larger batch_size"


class PlainProgressLines(Callback):
    """Count, rate and time left of each training epoch (and the LR finder's steps), the test pass,
    a validation-only pass (evaluate split=val) and prediction, through ``PhaseProgress``.

    ``build_trainer`` adds it only when no live bar is drawn: on a terminal Lightning's bar shows the same.
    """

    def __init__(self) -> None:
        self._progress: PhaseProgress | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = _finite(trainer.num_training_batches)
        if _finding_learning_rate(trainer):
            self._start("LR finder", min(total or trainer.max_steps, trainer.max_steps - trainer.global_step))
        else:
            self._start(f"Epoch {trainer.current_epoch}", total)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._advance()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish()  # the LR finder stops mid-epoch: its steps end here

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish()

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start("Test pass", _finite(sum(trainer.num_test_batches)))

    def on_test_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._advance()

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish()

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.training and not trainer.sanity_checking and trainer.state.fn == "validate":
            self._start("Validation pass", _finite(sum(trainer.num_val_batches)))

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._advance()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._finish()

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start("Predict", _finite(sum(trainer.num_predict_batches)))

    def on_predict_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._advance()

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish()

    def _start(self, description: str, total: int | None) -> None:
        self._finish()
        self._progress = PhaseProgress(description, total, unit="batches", faster=_FASTER).__enter__()

    def _advance(self) -> None:
        if self._progress is not None:
            self._progress.advance()

    def _finish(self) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
            self._progress = None


def _finite(batches: float | int) -> int | None:
    return int(batches) if batches != float("inf") else None


def _finding_learning_rate(trainer: L.Trainer) -> bool:
    from lightning.pytorch.tuner.lr_finder import _LRCallback  # Lightning adds it while lr_find runs

    return any(isinstance(callback, _LRCallback) for callback in trainer.callbacks)
