"""Progress of Lightning's loops where Lightning's own bar is not drawn (log file, SLURM, bar off)."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from transfer_lightning.utils.progress import PhaseProgress

log = logging.getLogger(__name__)
_FASTER = "a GPU (trainer.accelerator=auto takes one when present) or a larger batch_size"


class LoopProgress(Callback):
    """Count, rate and time left of each training epoch, the test pass, a validation-only pass
    (evaluate split=val) and prediction, through ``PhaseProgress``. The line that closes an epoch
    carries its numbers (``epoch_outcome``), so the log of a batch job shows the run learning.

    ``build_trainer`` adds it where Lightning's bar is off; on a terminal that bar shows the same.
    """

    def __init__(self) -> None:
        self._progress: PhaseProgress | None = None
        self._loop = ""  # the loop whose batches advance the progress: train, validate, test, predict
        self._validated = False  # whether this epoch ran validation (its val numbers are this epoch's)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log_resume_point(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validated = False
        self._start("train", f"Epoch {trainer.current_epoch}", _finite(trainer.num_training_batches))

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._progress is None or self._loop != "train":  # resumed mid-epoch: Lightning starts no epoch
            total = _finite(trainer.num_training_batches)
            self._start("train", f"Epoch {trainer.current_epoch} (resumed)", total, already_done=batch_idx)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._advance("train")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._progress is not None and self._loop == "train":
            self._progress.outcome = epoch_outcome(trainer, self._validated)
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
        elif not trainer.sanity_checking:
            self._validated = True

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start("predict", "Predict", _finite(sum(trainer.num_predict_batches)))

    def on_predict_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._advance("predict")

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish()

    def _start(self, loop: str, description: str, total: int | None, already_done: int = 0) -> None:
        self._finish()
        self._loop = loop
        progress = PhaseProgress(description, total, unit="batches", faster=_FASTER, already_done=already_done)
        self._progress = progress.__enter__()

    def _advance(self, loop: str) -> None:
        if self._progress is not None and loop == self._loop:
            self._progress.advance()

    def _finish(self) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
            self._progress = None


def epoch_outcome(trainer: L.Trainer, validated: bool) -> str:
    """``train loss 0.5234 acc 81.25%, val loss 0.6102 acc 79.00% (best 79.00%), lr head 0.001``: the
    epoch's logged numbers (those it has: no val part in an epoch without validation)."""
    metrics = trainer.callback_metrics
    parts = [_loss_and_accuracy("train", metrics)]
    if validated:
        best = metrics.get("val/acc_best")
        parts.append(_loss_and_accuracy("val", metrics) + (f" (best {_percent(best)})" if best is not None else ""))
    rate = head_learning_rate(trainer)
    parts.append(f"lr head {rate:.3g}" if rate is not None else "")
    return ", ".join(part for part in parts if part)


def head_learning_rate(trainer: L.Trainer) -> float | None:
    """The learning rate of the optimizer's ``head`` group (the strategies name it; else the first group)."""
    groups = [group for optimizer in trainer.optimizers for group in optimizer.param_groups]
    head = next((group for group in groups if group.get("name") == "head"), groups[0] if groups else None)
    return float(head["lr"]) if head else None


def _loss_and_accuracy(split: str, metrics: dict[str, Any]) -> str:
    loss = metrics.get(f"{split}/loss_epoch", metrics.get(f"{split}/loss"))
    accuracy = metrics.get(f"{split}/acc")
    numbers = ([f"loss {float(loss):.4f}"] if loss is not None else []) + (
        [f"acc {_percent(accuracy)}"] if accuracy is not None else []
    )
    return f"{split} {' '.join(numbers)}" if numbers else ""


def _percent(value: Any) -> str:
    return f"{100 * float(value):.2f}%"


def log_resume_point(trainer: L.Trainer) -> None:
    """Where a resumed run continues: ``Continuing from <ckpt>: epoch 1 (0-based) after 2 of its 4 batches,
    global step 6``. Nothing for a run that starts afresh."""
    if not trainer.ckpt_path or not trainer.is_global_zero:
        return
    epoch_loop = trainer.fit_loop.epoch_loop  # restarting: the checkpoint was written inside an epoch
    done = epoch_loop.batch_progress.current.ready if epoch_loop.restarting else 0
    total = _finite(trainer.num_training_batches)
    where = f"after {done}{f' of its {total}' if total else ''} batches" if done else "from its start"
    log.info(
        "Continuing from %s: epoch %d (0-based) %s, global step %d",
        trainer.ckpt_path,
        trainer.current_epoch,
        where,
        trainer.global_step,
    )


def _finite(batches: float | int) -> int | None:
    return int(batches) if batches != float("inf") else None
