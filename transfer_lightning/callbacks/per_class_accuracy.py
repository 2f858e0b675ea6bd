"""Per-class accuracy on val and test, named by class (``val/acc_per_class/<class>``)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from torchmetrics.classification import MulticlassStatScores


class PerClassAccuracy(Callback):
    """Accumulates predictions of ``validation_step``/``test_step`` (which return ``preds`` and
    ``target``) with torchmetrics and logs one accuracy per class at the end of each epoch.

    A class without images in the split has no accuracy: ``None`` in ``last`` (``n/a`` in the
    report, ``null`` in ``run_summary.json``), and nothing is logged for it, rather than 0.
    """

    def __init__(self, stages: tuple[str, ...] = ("val", "test")) -> None:
        self.stages = tuple(stages)
        self.metrics: dict[str, MulticlassStatScores] = {}
        self.class_names: list[str] = []
        self.last: dict[str, dict[str, float | None]] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.class_names = list(pl_module.class_names)
        for split in self.stages:
            # per class: true positives, false positives, true negatives, false negatives, support
            metric = MulticlassStatScores(num_classes=len(self.class_names), average=None)
            self.metrics[split] = metric.to(pl_module.device)

    def _update(self, split: str, outputs: Any, pl_module: L.LightningModule) -> None:
        if split in self.metrics and isinstance(outputs, dict) and "preds" in outputs:
            metric = self.metrics[split].to(pl_module.device)
            metric.update(outputs["preds"], outputs["target"])

    def _log(self, split: str, pl_module: L.LightningModule) -> None:
        if split not in self.metrics:
            return
        scores = self.metrics[split].compute()  # summed over every process under DDP
        correct, support = scores[:, 0], scores[:, 4]
        self.last[split] = {
            name: float(correct[index] / support[index]) if support[index] else None
            for index, name in enumerate(self.class_names)
        }
        pl_module.log_dict(
            {f"{split}/acc_per_class/{name}": value for name, value in self.last[split].items() if value is not None}
        )
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
