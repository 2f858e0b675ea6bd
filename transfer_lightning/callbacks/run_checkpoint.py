"""best.ckpt by the monitored metric, and a last.ckpt that really is the latest save point."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from transfer_lightning.utils.files import atomic_hard_link, is_local


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is refreshed at every save point: the end of each
    training epoch (after its validation) and every ``every_n_train_steps`` steps, not only when
    the monitored metric improved.

    Lightning 2.6 rewrites ``last.ckpt`` only when a top-k checkpoint was written at the same
    step: with ``save_top_k=1`` and a metric that stops improving, ``last.ckpt`` would stay at
    the best epoch and a resumed run would silently redo (and lose) the epochs since. So Lightning
    keeps the top-k files (``best.ckpt``) and this class writes ``last.ckpt`` itself, from the
    callback hooks every ``Callback`` has, with ``Trainer.save_checkpoint``.

    When a top-k file was written at this very step, ``last.ckpt`` becomes a hard link to it
    instead of a second full write (the same training state; a whole ResNet and its optimizer are
    written and fsync'ed once per epoch, not twice). Lightning's own ``save_last="link"`` is not
    used: it links to the newest top-k file even when that one is epochs old, which is the
    staleness this class exists to avoid. ``last.ckpt`` is always overwritten in place (no
    ``last-v1.ckpt``): a resumed run continues the same file.
    """

    def __init__(
        self, *, save_last: bool | str | None = None, every_n_train_steps: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(save_last=None, every_n_train_steps=every_n_train_steps, **kwargs)  # top-k files only
        self.keeps_last = bool(save_last)  # read by GracefulInterrupt too
        self.last_every_n_train_steps = every_n_train_steps or 0
        self._last_written_at_step: int | None = None
        self._topk_stamps: dict[str, tuple[int, int, int]] = {}  # top-k file -> (inode, mtime, size) last seen
        self._topk_written: tuple[int, str] | None = None  # (global step, file) of the newest top-k write

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._topk_stamps = self._stamp_topk_files()  # a resumed run's best.ckpt was not written by this run

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._note_topk_write(trainer)
        step_point = self.last_every_n_train_steps and trainer.global_step % self.last_every_n_train_steps == 0
        if step_point and batch_idx + 1 < trainer.num_training_batches:  # the epoch's end writes it anyway
            self._write_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        self._note_topk_write(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._note_topk_write(trainer)
        self._write_last(trainer)

    # -- last.ckpt ---------------------------------------------------------------------------------
    def _write_last(self, trainer: L.Trainer) -> None:
        if not self.keeps_last or not self._may_save(trainer) or self._last_written_at_step == trainer.global_step:
            return
        self._last_written_at_step = trainer.global_step
        filepath = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
        linked = self._link_to_topk(trainer, filepath) if trainer.is_global_zero else False
        if not trainer.strategy.broadcast(linked):  # every process takes part in a full write
            trainer.save_checkpoint(filepath, self.save_weights_only)
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.after_save_checkpoint(proxy(self))
        self.last_model_path = filepath

    def _link_to_topk(self, trainer: L.Trainer, filepath: str) -> bool:
        """Point ``last.ckpt`` at the top-k file written at this step; False where there is none or no link."""
        if self._topk_written is None or self._topk_written[0] != trainer.global_step:
            return False
        topk = self._topk_written[1]
        if not is_local(topk) or Path(filepath).resolve() == Path(topk).resolve():
            return False
        return atomic_hard_link(Path(topk), Path(filepath))

    def _may_save(self, trainer: L.Trainer) -> bool:
        """Lightning's own rule for saving: while fitting, after a training step, never in a dry run."""
        return (
            trainer.state.fn == TrainerFn.FITTING
            and not trainer.sanity_checking
            and not trainer.fast_dev_run
            and trainer.global_step > 0
        )

    # -- which top-k file Lightning wrote, and when ------------------------------------------------
    def _note_topk_write(self, trainer: L.Trainer) -> None:
        """After each hook in which Lightning may save: a top-k file that changed was written at this step."""
        if not trainer.is_global_zero:
            return  # only the first process writes files; it decides on linking
        stamps = self._stamp_topk_files()
        written = [path for path, stamp in stamps.items() if self._topk_stamps.get(path) != stamp]
        self._topk_stamps = stamps
        if written:
            self._topk_written = (
                trainer.global_step,
                self.best_model_path if self.best_model_path in written else written[0],
            )

    def _stamp_topk_files(self) -> dict[str, tuple[int, int, int]]:
        stamps = {}
        for path in {*self.best_k_models, self.best_model_path} - {""}:
            if is_local(path) and os.path.isfile(path):
                status = os.stat(path)
                stamps[path] = (status.st_ino, status.st_mtime_ns, status.st_size)
        return stamps
