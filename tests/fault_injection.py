"""Test-only callbacks that make faults happen on cue; enabled through the CLI with
``+callbacks.<name>._target_=tests.fault_injection.<Class>`` (the project root is on ``sys.path``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from transfer_lightning.data import SyntheticDataModule

PREPARE_LOG_VARIABLE = "TL_TEST_PREPARE_LOG"  # RecordDataPreparation's log
RECORD_PREPARATION = "+callbacks.prepared._target_=tests.fault_injection.RecordDataPreparation"


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


class RecordTrainedEpochs(Callback):
    """Appends ``<epoch> <process id>`` for every finished training epoch (0-based) to
    ``<run>/trained_epochs.log``, across restarts: a test sees which process trained which epoch, and
    whether a resumed run trained a finished epoch again."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and trainer.checkpoint_callback is not None:
            log = Path(trainer.checkpoint_callback.dirpath).parent / "trained_epochs.log"
            with open(log, "a") as handle:
                handle.write(f"{trainer.current_epoch} {os.getpid()}\n")


class NonFiniteLossOnRank(Callback):
    """From epoch ``at_epoch`` on, the inputs of process ``rank`` are NaN: only that DDP process sees a NaN
    loss. ``<run>/nan_injected`` is touched when it happens."""

    def __init__(self, rank: int = 1, at_epoch: int = 1) -> None:
        self.rank = rank
        self.at_epoch = at_epoch

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_rank == self.rank and trainer.current_epoch >= self.at_epoch:
            batch[0].fill_(float("nan"))
            (Path(trainer.checkpoint_callback.dirpath).parent / "nan_injected").touch()


class RecordProcessIds(Callback):
    """Writes ``<run>/pids/rank<N>`` (the process id) as training starts, so a test can check that
    every DDP process has exited."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = Path(trainer.checkpoint_callback.dirpath).parent / "pids"
        folder.mkdir(exist_ok=True)
        (folder / f"rank{trainer.global_rank}").write_text(str(os.getpid()))


class _SlowToWrite:
    """Pickled as the number 0 (loads with ``weights_only``), after sleeping inside ``torch.save``."""

    def __init__(self, marker: Path, seconds: float) -> None:
        self.marker, self.seconds = marker, seconds

    def __reduce__(self):
        self.marker.write_text("writing")
        time.sleep(self.seconds)
        return (int, (0,))


class SlowGracefulCheckpoint(Callback):
    """The checkpoint written after the first Ctrl-C takes ``seconds`` inside ``torch.save``, and
    ``<run>/writing`` appears as it starts: a test sends the second Ctrl-C in the middle of the write."""

    def __init__(self, seconds: float = 10.0) -> None:
        self.seconds = seconds

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        from transfer_lightning.callbacks.graceful_stop import GracefulInterrupt

        if any(isinstance(c, GracefulInterrupt) and c.requested for c in trainer.callbacks):
            marker = Path(trainer.checkpoint_callback.dirpath).parent / "writing"
            checkpoint["slow_to_write"] = _SlowToWrite(marker, self.seconds)


class RecordDataPreparation(Callback):
    """Appends the process id to the file ``$TL_TEST_PREPARE_LOG`` names whenever ``prepare_data`` of
    ``data=synthetic`` runs in this process: built with the callbacks, before ``train()`` prepares the data,
    it wraps ``SyntheticDataModule.prepare_data`` (a data module of the tests' own would be refused where
    the run reads its own checkpoint: a file may name only the project's classes)."""

    def __init__(self) -> None:
        original = SyntheticDataModule.prepare_data
        if getattr(original, "records_preparation", False):
            return

        def prepare_data(datamodule: SyntheticDataModule) -> None:
            with open(os.environ[PREPARE_LOG_VARIABLE], "a") as handle:
                handle.write(f"{os.getpid()}\n")
            original(datamodule)

        prepare_data.records_preparation = True
        SyntheticDataModule.prepare_data = prepare_data
