"""Callbacks that kill their own process (after an epoch or a step), for resume tests run through the CLI.

Use as ``+callbacks.exit_after._target_=tests.exit_after_epoch.ExitAfterEpoch +callbacks.exit_after.epoch=1``,
or without ``epoch`` to take it from ``$EXIT_AFTER_EPOCH`` (unset: never exits), so that the killed
command and its resume are the same command.
"""

from __future__ import annotations

import os

import lightning as L
from lightning.pytorch.callbacks import Callback

EXIT_CODE = 17


class ExitAfterEpoch(Callback):
    """Ends the process abruptly (``os._exit``: no teardown, no summary) once ``epoch`` is saved.

    It exits as the next epoch starts: ModelCheckpoint writes last.ckpt at the very end of an
    epoch (after every other ``on_train_epoch_end`` hook).
    """

    def __init__(self, epoch: int | None = None) -> None:
        from_environment = os.environ.get("EXIT_AFTER_EPOCH")
        self.epoch = epoch if epoch is not None else int(from_environment) if from_environment else None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.epoch is not None and trainer.current_epoch == self.epoch + 1:
            os._exit(EXIT_CODE)


class ExitAfterStep(Callback):
    """Ends the process abruptly once training step ``step`` is done and its checkpoint written.

    Use with ``callbacks.checkpoint.every_n_steps`` dividing ``step``: ModelCheckpoint writes in
    ``on_train_batch_end``, so the exit comes as the next batch starts (mid-epoch when ``step`` is
    not a multiple of the epoch's batches). Without ``step`` it reads ``$EXIT_AFTER_STEP``.
    """

    def __init__(self, step: int | None = None) -> None:
        from_environment = os.environ.get("EXIT_AFTER_STEP")
        self.step = step if step is not None else int(from_environment) if from_environment else None

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:
        if self.step is not None and trainer.global_step == self.step:
            os._exit(EXIT_CODE)
