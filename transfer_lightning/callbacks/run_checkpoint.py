"""best.ckpt by the monitored metric, and a last.ckpt that really is the latest save point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from transfer_lightning.utils.files import atomic_hard_link, is_local


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is refreshed at every save point (each epoch,
    and every ``every_n_train_steps`` steps), not only when the monitored metric improved.

    Lightning 2.6 rewrites ``last.ckpt`` only when a top-k checkpoint was written at the same
    step: with ``save_top_k=1`` and a metric that stops improving, ``last.ckpt`` would stay at
    the best epoch and a resumed run would silently redo (and lose) the epochs since.

    When the top-k checkpoint was just written at this very step, ``last.ckpt`` becomes a hard
    link to it instead of a second full write (the same training state; a whole ResNet and its
    optimizer are written and fsync'ed once per epoch, not twice). Lightning's own
    ``save_last="link"`` is not used: it links to the newest top-k file even when that one is
    epochs old, which is the staleness this class exists to avoid.
    """

    _last_saved_at_step: int | None = None

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        super()._save_topk_checkpoint(trainer, monitor_candidates)
        self._save_last_checkpoint(trainer, monitor_candidates)

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        if self._last_saved_at_step == trainer.global_step and self.last_model_path:
            return  # already written at this step (Lightning may ask twice)
        self._last_saved_at_step = trainer.global_step
        if not self._link_last_to_topk(trainer, monitor_candidates):
            super()._save_last_checkpoint(trainer, monitor_candidates)

    def _link_last_to_topk(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> bool:
        """Point ``last.ckpt`` at the top-k file written at this step; False where that is not possible."""
        topk = self._last_checkpoint_saved
        linkable = (
            self.save_last is True
            and not self._enable_version_counter
            and self._last_global_step_saved == trainer.global_step
            and bool(topk)
            and is_local(topk)
        )
        if not linkable:
            return False
        filepath = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
        if Path(filepath).resolve() == Path(topk).resolve():
            return False
        linked = atomic_hard_link(Path(topk), Path(filepath)) if trainer.is_global_zero else True
        linked = trainer.strategy.broadcast(linked)
        if linked:
            self.last_model_path = filepath
        return linked
