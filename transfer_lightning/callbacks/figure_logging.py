"""Send a picture to every logger that shows images (TensorBoard, MLflow, W&B), from rank 0 only."""

from __future__ import annotations

import lightning as L
import numpy as np

from transfer_lightning.loggers import sinks
from transfer_lightning.run.checkpoint import checkpoint_origin


def log_image(trainer: L.Trainer, tag: str, image: np.ndarray, step: int | None = None) -> bool:
    """``image`` (``H x W x 3`` uint8 RGB: ``Picture.array()`` of ``analysis/figures.py``, or a matplotlib figure
    through ``loggers/sinks.py`` ``figure_image``) to each logger that shows images, at ``step`` (the global
    step when not given); returns whether any logger took it."""
    if not trainer.is_global_zero:
        return False
    return sinks.log_image(trainer.loggers, tag, image, trainer.global_step if step is None else step)


def has_figure_logger(trainer: L.Trainer) -> bool:
    """Whether drawing a figure is worth it (rank 0 with an image-capable logger)."""
    return trainer.is_global_zero and sinks.takes_figures(trainer.loggers)


def tested_split(trainer: L.Trainer) -> str:
    """The split a test pass runs on: ``test``, or ``val`` for data without a test split (its data notes)."""
    splits = getattr(trainer.datamodule, "splits", None)
    return (getattr(splits, "notes", None) or {}).get("test_split", "test")


def tested_weights(trainer: L.Trainer) -> str:
    """Which weights the current test/validate pass runs: the loaded checkpoint (epoch, score) or the live ones."""
    if trainer.ckpt_path:
        return checkpoint_origin(trainer.ckpt_path)
    return f"the weights in memory (epoch {trainer.current_epoch})"
