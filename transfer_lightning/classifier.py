"""The LightningModule: a pretrained backbone with a new head and a pluggable freezing strategy."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torchmetrics import MaxMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from transfer_lightning.models import Backbone, build_backbone
from transfer_lightning.strategies import FreezingStrategy
from transfer_lightning.utils.errors import UserError

log = logging.getLogger(__name__)


class TransferClassifier(L.LightningModule):
    """Fine-tunes a pretrained backbone; *which* parameters train is the strategy's business.

    All constructor arguments are plain containers, saved in the checkpoint, so a checkpoint
    rebuilds the model on its own (``load_pretrained=False`` skips fetching ImageNet weights
    that the checkpoint's state dict replaces anyway).

    Args:
        model: ``{"name": "resnet18", "weights": "DEFAULT" | None | "/path/file.pth" | "<run>/checkpoints/best.ckpt"}``,
            with ``backbone`` (a ``Backbone`` class path, e.g. for timm) where the name alone does not say.
        strategy: a ``FreezingStrategy`` config (``_target_`` + arguments).
        optimizer: a partial optimizer config (``_target_``, ``_partial_: true``, ``lr`` ...).
        scheduler: a partial LR-scheduler config, or ``None``.
        class_names: the data's classes in label order; sizes the head.
        preprocessing: the input contract for inference (``data.contract.Preprocessing.to_dict()``).
        data: the run's data config (``data/record.py``: module, absolute root, split settings),
            so ``evaluate ckpt_path=...`` rebuilds the very splits the run used.
    """

    def __init__(
        self,
        model: dict[str, Any],
        strategy: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None,
        class_names: list[str],
        preprocessing: dict[str, Any],
        load_pretrained: bool = True,
        data: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        weights = model.get("weights") if load_pretrained else None
        # where the weights came from, as a chain (models/lineage.py); a checkpoint restores its own
        self.backbone: Backbone = build_backbone(
            {**model, "weights": weights}, len(class_names), class_names=list(class_names)
        )
        self.net = self.backbone.model
        self.weights_lineage = self.backbone.weights_lineage
        self.strategy: FreezingStrategy = instantiate_strategy(strategy, self.backbone.stage_names)
        self.strategy.apply(self.backbone)
        self.class_names = list(class_names)
        num_classes = len(class_names)
        # accuracy over images (micro), as evaluate reports it and the plain loop computes it; torchmetrics'
        # default (macro, the mean over classes) differs from it on unbalanced splits
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_images = SumMetric()  # how many images the test accuracy counted (all processes)
        self.extra_test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # in the checkpoint, so a resumed run keeps its best score
        # > 0 while training on cached features: batches are the output of the first
        # ``input_stage`` stages (see transfer_lightning/cache); checkpoints hold the whole net.
        self.input_stage = 0

    # -- model -------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.input_stage:
            return self.backbone.forward_from(images, self.input_stage)
        return self.net(images)

    def train(self, mode: bool = True) -> TransferClassifier:
        # model.train() flips every BatchNorm back to training mode; frozen ones must stay in eval.
        super().train(mode)
        self.strategy.set_batchnorm_modes(self.backbone, self.current_epoch)
        return self

    def parameter_counts(self) -> dict[str, int]:
        trainable = sum(p.numel() for p in self.net.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.net.parameters())
        return {"trainable": trainable, "frozen": total - trainable}

    # -- steps -------------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        self.train_acc(logits, labels)
        # sync_dist: under DDP the mean over every process's batches, not rank 0's
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        images, labels = batch
        logits = self(images)
        if dataloader_idx == 1:  # the test set evaluated every epoch (data.test_each_epoch)
            self.extra_test_acc(logits, labels)
            self.log("test_epoch/acc", self.extra_test_acc, on_epoch=True, add_dataloader_idx=False)
            return {}
        loss = F.cross_entropy(logits, labels)
        self.val_acc(logits, labels)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, add_dataloader_idx=False, sync_dist=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True, add_dataloader_idx=False)
        return {"preds": logits.argmax(dim=1), "target": labels, "logits": logits}

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        images, labels = batch
        logits = self(images)
        self.test_acc(logits, labels)
        self.test_images(torch.ones_like(labels).sum())
        self.log("test/loss", F.cross_entropy(logits, labels), on_epoch=True, sync_dist=True)
        self.log("test/acc", self.test_acc, on_epoch=True)
        self.log("test/images", self.test_images, on_epoch=True)  # summed over processes: each image once
        return {"preds": logits.argmax(dim=1), "target": labels, "logits": logits}

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """Class probabilities of ``(images, keys)``; the keys (labels or item ids) pass through."""
        images, keys = batch
        return {"probs": self(images).float().softmax(dim=1), "keys": keys}

    def on_train_epoch_start(self) -> None:
        optimizer = self.trainer.optimizers[0] if self.trainer.optimizers else None
        self.strategy.on_train_epoch_start(self.backbone, self.current_epoch, optimizer)
        self.strategy.set_batchnorm_modes(self.backbone, self.current_epoch)

    # -- per-group learning rates: the strategy derives them from the head's (see FreezingStrategy)
    def on_train_start(self) -> None:
        self._update_learning_rates(self.current_epoch)  # a resumed optimizer holds the saved epoch's

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._update_learning_rates(self.current_epoch)  # every step, whatever the scheduler set

    def on_train_epoch_end(self) -> None:
        # The epoch's scheduler step has run: set the next epoch's rates now, because at the next
        # epoch start the learning-rate monitor (a callback) logs before any module hook.
        self._update_learning_rates(self.current_epoch + 1)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.strategy.on_before_optimizer_step(self.backbone, self.current_epoch)

    def _update_learning_rates(self, epoch: int) -> None:
        for optimizer in self.trainer.optimizers:
            self.strategy.update_learning_rates(optimizer, epoch)

    # -- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        lr = float(self.hparams.optimizer["lr"])
        optimizer = instantiate(self.hparams.optimizer)(params=self.strategy.param_groups(self.backbone, lr))
        if not self.hparams.scheduler:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler)(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # -- checkpoint --------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["freezing_strategy"] = self.strategy.state_dict()
        checkpoint["class_names"] = list(self.class_names)
        checkpoint["weights_lineage"] = self.weights_lineage

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.strategy.load_state_dict(checkpoint.get("freezing_strategy", {}))
        self.strategy.apply(self.backbone, checkpoint.get("epoch", 0))
        if "weights_lineage" in checkpoint:
            self.weights_lineage = checkpoint["weights_lineage"]


def instantiate_strategy(config: dict[str, Any], stage_names: tuple[str, ...]) -> FreezingStrategy:
    """Build the strategy for ``stage_names``; a ``UserError`` from its checks surfaces as itself, not wrapped by Hydra."""
    try:
        return instantiate(config, stage_names=list(stage_names))
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise
