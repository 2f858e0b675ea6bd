"""Ctrl-C stops at the next step boundary with a fresh ``last.ckpt`` instead of wherever Python was."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class RunInterrupted(Exception):
    """The user stopped the run (Ctrl-C); ``last.ckpt`` holds the state at the stop."""


class GracefulInterrupt(Callback):
    """First Ctrl-C (SIGINT): finish the current training step, write ``last.ckpt``, stop the run.

    Lightning's own handling turns Ctrl-C into a ``KeyboardInterrupt`` wherever the process is, e.g.
    halfway through an optimizer step, and saves nothing. Here the signal only raises a flag; the
    checkpoint is written at the end of the step, where the weights, the optimizer and the loop
    counters agree. A second Ctrl-C stops at once (the previous ``last.ckpt`` stays).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log.warning("Ctrl-C: stopping after this training step and writing last.ckpt (Ctrl-C again stops at once)")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not self.requested:
            return
        saved = self._save_last(trainer)
        where = f"epoch {trainer.current_epoch} (0-based), global step {trainer.global_step}"
        raise RunInterrupted(f"stopped by Ctrl-C at {where}; " + (f"saved {saved}" if saved else "no checkpoint"))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handler()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handler()

    def _restore_handler(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    @staticmethod
    def _save_last(trainer: L.Trainer) -> Path | None:
        checkpoint = trainer.checkpoint_callback
        if checkpoint is None or not getattr(checkpoint, "save_last", False) or not checkpoint.dirpath:
            return None
        path = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
        trainer.save_checkpoint(path)
        checkpoint.last_model_path = str(path)
        return path
