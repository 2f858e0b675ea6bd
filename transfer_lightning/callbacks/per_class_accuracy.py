"""Per-class accuracy on val and test, named by class (``val/acc_per_class/<class>``)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from torchmetrics import ClasswiseWrapper
from torchmetrics.classification import MulticlassAccuracy


class PerClassAccuracy(Callback):
    """Accumulates predictions of ``validation_step``/``test_step`` (which return ``preds`` and
    ``target``) with torchmetrics and logs one accuracy per class at the end of each epoch."""

    def __init__(self, stages: tuple[str, ...] = ("val", "test")) -> None:
        self.stages = tuple(stages)
        self.metrics: dict[str, ClasswiseWrapper] = {}
        self.last: dict[str, dict[str, float]] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        names = list(pl_module.class_names)
        for split in self.stages:
            metric = ClasswiseWrapper(
                MulticlassAccuracy(num_classes=len(names), average=None),
                labels=names,
                prefix=f"{split}/acc_per_class/",
            )
            self.metrics[split] = metric.to(pl_module.device)

    def _update(self, split: str, outputs: Any, pl_module: L.LightningModule) -> None:
        if split in self.metrics and isinstance(outputs, dict) and "preds" in outputs:
            metric = self.metrics[split].to(pl_module.device)
            metric.update(outputs["preds"], outputs["target"])

    def _log(self, split: str, pl_module: L.LightningModule) -> None:
        if split not in self.metrics:
            return
        values = self.metrics[split].compute()
        self.last[split] = {key.rsplit("/", 1)[-1]: float(value) for key, value in values.items()}
        pl_module.log_dict(values)
        self.metrics[split].reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking and dataloader_idx == 0:
            self._update("val", outputs, pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._log("val", pl_module)
        elif "val" in self.metrics:
            self.metrics["val"].reset()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._update("test", outputs, pl_module)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log("test", pl_module)
