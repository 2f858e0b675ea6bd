"""Ctrl-C (or SIGTERM) stops at the next step boundary with a fresh ``last.ckpt``, on every DDP process."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

_SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class RunInterrupted(Exception):
    """The user stopped the run (Ctrl-C, SIGTERM); the message names the checkpoint that holds its state."""


class GracefulInterrupt(Callback):
    """First Ctrl-C (SIGINT) or SIGTERM: finish the current training step, write ``last.ckpt``, stop.

    Lightning's own handling turns Ctrl-C into a ``KeyboardInterrupt`` wherever the process is, e.g.
    halfway through an optimizer step, and saves nothing. Here the signal only raises a flag; at the
    end of the step every process learns, through Lightning's cross-process decision
    (``strategy.reduce_boolean_decision``), whether any of them was signalled, so all DDP processes
    write the checkpoint and stop together, whichever one got the signal. A second signal stops at
    once; the previous ``last.ckpt`` stays (checkpoints are written to a temporary file and renamed).
    """

    def __init__(self) -> None:
        self.requested: str | None = None  # the signal's name once one arrived
        self._saving: Path | None = None
        self._last: Path | None = None  # the run's last.ckpt, named when a second signal stops at once
        self._forced: str | None = None  # the second signal's name, once it came
        self._previous: dict[int, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning's own SIGTERM handler (registered once fit has started), which it replaces:
        # that one broadcasts from inside the handler and hangs when the signal reaches one rank only
        self._last = last_checkpoint_path(trainer)
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNAL_NAMES:
                self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.requested is None:
            self.requested = _SIGNAL_NAMES.get(signum, f"signal {signum}")
            log.warning(
                "%s: stopping after this training step and writing last.ckpt (Ctrl-C again stops at once)",
                self.requested,
            )
            return
        self._forced = _SIGNAL_NAMES.get(signum, f"signal {signum}")
        raise RunInterrupted(self._stopped_at_once())

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not trainer.strategy.reduce_boolean_decision(self.requested is not None, all=False):
            return
        saved = self._save_last(trainer)
        where = f"epoch {trainer.current_epoch} (0-based), global step {trainer.global_step}"
        cause = f"by {self.requested}" if self.requested else "because another process of this run was signalled"
        raise RunInterrupted(f"stopped {cause} at {where}; " + (f"saved {saved}" if saved else "no checkpoint"))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
        self._previous = {}

    def _stopped_at_once(self) -> str:
        stopped = f"stopped at once by a second {self._forced}"
        if self._saving is None:
            if self._last is None:
                return f"{stopped}; no checkpoint (checkpoints are off)"
            if self._last.is_file():
                return f"{stopped}; {self._last} is the one before, intact"
            return f"{stopped}; no checkpoint yet ({self._last})"
        if self._saving.is_file():
            return f"{stopped} while last.ckpt was being written; {self._saving} is intact"
        return f"{stopped} while last.ckpt was being written; no checkpoint ({self._saving})"

    def _save_last(self, trainer: L.Trainer) -> Path | None:
        path = last_checkpoint_path(trainer)
        if path is None:
            return None
        checkpoint = trainer.checkpoint_callback
        self._saving = path
        try:
            trainer.save_checkpoint(path, weights_only=False)  # said explicitly: Lightning logs its default
        except BaseException:
            if self._forced:  # torch's writer turns the interruption into its own RuntimeError
                raise RunInterrupted(self._stopped_at_once()) from None
            raise
        finally:
            self._saving = None
        checkpoint.last_model_path = str(path)
        return path


def last_checkpoint_path(trainer: L.Trainer) -> Path | None:
    """Where the run's ``last.ckpt`` is written, or None when the run writes none."""
    checkpoint = trainer.checkpoint_callback
    keeps_last = getattr(checkpoint, "keeps_last", getattr(checkpoint, "save_last", False))  # RunCheckpoint's own
    if checkpoint is None or not keeps_last or not checkpoint.dirpath:
        return None
    return Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
