"""The live bar on a terminal: Lightning's rich bar, with the rate in images/s and the resume point."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import ProcessingSpeedColumn
from rich.progress import ProgressColumn, Task
from rich.text import Text

from transfer_lightning.callbacks.loop_progress import log_resume_point


class ImagesPerSecond(ProgressColumn):
    """A bar's rate in images/s: its batches/s times the batch size (the last, smaller batch aside)."""

    def __init__(self, batch_size: int | None, style: str) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.style = style

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if self.batch_size is None:
            return Text(f"{speed or 0:,.2f} batches/s", style=self.style)
        return Text(f"{(speed or 0) * self.batch_size:,.1f} images/s", style=self.style)


class ImagesProgressBar(RichProgressBar):
    """``RichProgressBar`` whose rate column counts images, as the plain progress lines do (docs/dashboards-loggers.md,
    "Progress lines and the log of a batch job"), and which says where a resumed run continues."""

    def configure_columns(self, trainer: L.Trainer) -> list:
        batch_size = getattr(trainer.datamodule, "batch_size", None)
        return [
            ImagesPerSecond(batch_size, self.theme.processing_speed)
            if isinstance(column, ProcessingSpeedColumn)
            else column
            for column in super().configure_columns(trainer)
        ]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        log_resume_point(trainer)
