"""best.ckpt by the monitored metric, and a last.ckpt that really is the latest save point."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is refreshed at every save point (each epoch,
    and every ``every_n_train_steps`` steps), not only when the monitored metric improved.

    Lightning 2.6 rewrites ``last.ckpt`` only when a top-k checkpoint was written at the same
    step: with ``save_top_k=1`` and a metric that stops improving, ``last.ckpt`` would stay at
    the best epoch and a resumed run would silently redo (and lose) the epochs since.
    """

    _last_saved_at_step: int | None = None

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        super()._save_topk_checkpoint(trainer, monitor_candidates)
        self._save_last_checkpoint(trainer, monitor_candidates)

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        if self._last_saved_at_step == trainer.global_step and self.last_model_path:
            return  # already written at this step (Lightning may ask twice)
        self._last_saved_at_step = trainer.global_step
        super()._save_last_checkpoint(trainer, monitor_candidates)
