"""The confusion matrix of val (every epoch) and test (at the end) as a TensorBoard image."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from torchmetrics.classification import MulticlassConfusionMatrix

from transfer_lightning.analysis.figures import confusion_matrix_figure
from transfer_lightning.callbacks.figure_logging import has_figure_logger, log_image, tested_split, tested_weights


class ConfusionMatrixImage(Callback):
    """Accumulates ``preds``/``target`` returned by ``validation_step``/``test_step`` with
    torchmetrics and logs the matrix figure as ``<stage>/confusion_matrix`` at each epoch end.

    ``compute()`` runs on every rank (it syncs under DDP); only rank 0 draws and logs.
    """

    def __init__(self, stages: tuple[str, ...] = ("val", "test")) -> None:
        self.stages = tuple(stages)
        self.matrices: dict[str, MulticlassConfusionMatrix] = {}
        self.tested = ""  # the checkpoint the test runs on, named in the test figure's title

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for split in self.stages:
            self.matrices[split] = MulticlassConfusionMatrix(len(pl_module.class_names)).to(pl_module.device)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking and dataloader_idx == 0:
            self._update("val", outputs, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._log("val", trainer, pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.tested = tested_weights(trainer) if has_figure_logger(trainer) else ""

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update("test", outputs, pl_module)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log("test", trainer, pl_module)

    def _update(self, split: str, outputs, pl_module: L.LightningModule) -> None:
        if split in self.matrices and isinstance(outputs, dict) and "preds" in outputs:
            self.matrices[split] = self.matrices[split].to(pl_module.device)
            self.matrices[split].update(outputs["preds"], outputs["target"])

    def _log(self, split: str, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metric = self.matrices.get(split)
        if metric is None or not metric.update_called:
            return
        matrix = metric.compute()
        metric.reset()
        if has_figure_logger(trainer):
            source = self.tested if split == "test" else f"epoch {trainer.current_epoch}"
            shown = tested_split(trainer) if split == "test" else split  # data without a test split: val
            title = f"{shown} confusion matrix, {source}"
            picture = confusion_matrix_figure(matrix, pl_module.class_names, title)
            log_image(trainer, f"{split}/confusion_matrix", picture.array())
