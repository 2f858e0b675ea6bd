"""A callback that turns every evaluated batch into report metrics and grid examples."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from transfer_lightning.analysis.examples import ExampleSelector
from transfer_lightning.analysis.report import classification_metrics


class PredictionCollector(Callback):
    """Feeds the outputs of ``test_step`` (or ``validation_step``) into torchmetrics and an
    ``ExampleSelector``; the batch images it keeps are the model's normalised inputs.

    Args:
        num_classes: size of the confusion matrix.
        stage: ``"test"`` or ``"val"``: which loop to listen to.
        grid_size: how many examples to keep for the prediction grid.
    """

    def __init__(self, num_classes: int, stage: str = "test", grid_size: int = 32) -> None:
        self.stage = stage
        self.metrics = classification_metrics(num_classes)
        self.selector = ExampleSelector(grid_size)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.stage == "test":
            self._update(pl_module, outputs, batch)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.stage == "val" and not trainer.sanity_checking and dataloader_idx == 0:
            self._update(pl_module, outputs, batch)

    def _update(self, pl_module: L.LightningModule, outputs: Any, batch: Any) -> None:
        self.metrics = self.metrics.to(pl_module.device)
        self.metrics.update(outputs["preds"], outputs["target"])
        self.selector.update(batch[0], outputs["logits"], outputs["target"])
