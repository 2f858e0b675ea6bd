"""Send a matplotlib figure to every logger that shows images (TensorBoard), from rank 0 only."""

from __future__ import annotations

import lightning as L
from matplotlib.figure import Figure

from transfer_lightning.run.checkpoint import checkpoint_origin


def log_figure(trainer: L.Trainer, tag: str, figure: Figure) -> bool:
    """``add_figure`` on each logger whose writer has it; returns whether any logger took it."""
    if not trainer.is_global_zero:
        return False
    writers = [logger.experiment for logger in trainer.loggers if hasattr(logger.experiment, "add_figure")]
    for writer in writers:
        writer.add_figure(tag, figure, global_step=trainer.global_step, close=False)
    return bool(writers)


def has_figure_logger(trainer: L.Trainer) -> bool:
    """Whether drawing a figure is worth it (rank 0 with an image-capable logger)."""
    return trainer.is_global_zero and any(hasattr(logger.experiment, "add_figure") for logger in trainer.loggers)


def tested_weights(trainer: L.Trainer) -> str:
    """Which weights the current test/validate pass runs: the loaded checkpoint (epoch, score) or the live ones."""
    if trainer.ckpt_path:
        return checkpoint_origin(trainer.ckpt_path)
    return f"the weights in memory (epoch {trainer.current_epoch})"
