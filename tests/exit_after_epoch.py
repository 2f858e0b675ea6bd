"""A callback that kills its own process, for resume tests run through the CLI.

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
