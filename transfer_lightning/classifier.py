"""The LightningModule: a pretrained backbone with a new head and a pluggable freezing strategy."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from transfer_lightning.models import Backbone
from transfer_lightning.optim.schedulers import lightning_scheduler
from transfer_lightning.recipes.loss import ClassificationLoss
from transfer_lightning.recipes.tta import logits_with_tta
from transfer_lightning.run.model_record import RECORD_KEY, ModelRecord
from transfer_lightning.strategies import FreezingStrategy

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]  # called with params=<groups>; lr in its keywords
SchedulerFactory = Callable[..., Any]  # called with optimizer=<optimizer>


class TransferClassifier(L.LightningModule):
    """Fine-tunes a pretrained backbone; *which* parameters train is the strategy's business.

    It takes built objects: the backbone (with its head sized to ``record.class_names``), the freezing
    strategy, and factories for the optimizer and the scheduler (``functools.partial``s, as
    ``hydra.utils.instantiate`` makes them from ``_partial_: true``), and the training loss
    (``recipes/loss.py``; plain cross-entropy when not given). ``record`` says what built them;
    it goes into every checkpoint (``run/model_record.py``), so ``evaluate``, ``predict``, ``export``
    and resume rebuild the model from the file alone (``run/builders.build_classifier``).

    Example::

        backbone = build_backbone({"name": "resnet18", "weights": None}, num_classes=10)
        strategy = FreezeStages(frozen_stages="all", stage_names=backbone.stage_names)
        module = TransferClassifier(backbone, strategy, functools.partial(torch.optim.Adam, lr=1e-3), record)
    """

    def __init__(
        self,
        backbone: Backbone,
        strategy: FreezingStrategy,
        optimizer: OptimizerFactory,
        record: ModelRecord,
        scheduler: SchedulerFactory | None = None,
        loss: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.net = backbone.model
        self.weights_lineage = backbone.weights_lineage  # where the weights came from (models/lineage.py)
        self.strategy = strategy
        self.strategy.apply(self.backbone)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.record = record
        self.class_names = list(record.class_names)
        num_classes = len(self.class_names)
        # the training objective; val/loss and test/loss stay plain cross-entropy, comparable across recipes
        self.loss = loss or ClassificationLoss(num_classes)
        self.tta = "none"  # test-time augmentation of evaluate / predict (recipes/tta.py); training never uses it
        # accuracy over images (micro), as evaluate reports it and the plain loop computes it; torchmetrics'
        # default (macro, the mean over classes) differs from it on unbalanced splits
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_images = SumMetric()  # how many images the test accuracy counted (all processes)
        self.extra_test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        # balanced accuracy, the mean of the per-class accuracies: reported beside accuracy where classes are unbalanced
        self.val_balanced_acc = MulticlassAccuracy(num_classes=num_classes, average="macro")
        self.test_balanced_acc = MulticlassAccuracy(num_classes=num_classes, average="macro")
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # in the checkpoint, so a resumed run keeps its best score
        # > 0 while training on cached features: batches are the output of the first
        # ``input_stage`` stages (see transfer_lightning/cache); checkpoints hold the whole net.
        self.input_stage = 0

    @property
    def learning_rate(self) -> float:
        """The head's learning rate (``optimizer.lr``); the other groups follow the strategy's ratios."""
        return float(self.optimizer_factory.keywords["lr"])

    def set_learning_rate(self, lr: float) -> None:
        """Use ``lr`` for the head from now on (the LR finder's suggestion), and record it."""
        factory = self.optimizer_factory
        self.optimizer_factory = type(factory)(factory.func, *factory.args, **{**factory.keywords, "lr": lr})
        self.record = self.record.with_learning_rate(lr)

    # -- model -------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.input_stage:
            return self.backbone.forward_from(images, self.input_stage)
        return self.net(images)

    def train(self, mode: bool = True) -> TransferClassifier:
        # model.train() flips every module back to training mode; frozen stages must stay in eval.
        super().train(mode)
        self.strategy.set_train_modes(self.backbone, self.current_epoch)
        return self

    def parameter_counts(self, epochs: int | None = None) -> dict[str, int]:
        """Parameters that train in a run of ``epochs`` epochs (None: every epoch), and the rest."""
        idle = {
            id(p) for stage in self.strategy.stages_never_trained(epochs) for p in self.backbone.stage_parameters(stage)
        }
        trainable = sum(p.numel() for p in self.net.parameters() if p.requires_grad and id(p) not in idle)
        total = sum(p.numel() for p in self.net.parameters())
        return {"trainable": trainable, "frozen": total - trainable}

    # -- steps -------------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch  # targets: labels, or class shares (B, C) of mixed images (data.mixup_alpha ...)
        logits = self(images)
        loss = self.loss(logits, targets)
        # a mixed image counts as right when the prediction is its dominant label (its largest share)
        self.train_acc(logits, targets.argmax(dim=1) if targets.ndim == 2 else targets)
        # sync_dist: under DDP the mean over every process's batches, not rank 0's
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        images, labels = batch
        logits = logits_with_tta(self, images, self.tta)
        if dataloader_idx == 1:  # the test set evaluated every epoch (data.test_each_epoch)
            self.extra_test_acc(logits, labels)
            self.log("test_epoch/acc", self.extra_test_acc, on_epoch=True, add_dataloader_idx=False)
            return {}
        loss = F.cross_entropy(logits, labels)
        self.val_acc(logits, labels)
        self.val_balanced_acc(logits, labels)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, add_dataloader_idx=False, sync_dist=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True, add_dataloader_idx=False)
        self.log("val/balanced_acc", self.val_balanced_acc, on_epoch=True, add_dataloader_idx=False)
        return {"preds": logits.argmax(dim=1), "target": labels, "logits": logits}

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        images, labels = batch
        logits = logits_with_tta(self, images, self.tta)
        self.test_acc(logits, labels)
        self.test_balanced_acc(logits, labels)
        self.test_images(torch.ones_like(labels).sum())
        self.log("test/loss", F.cross_entropy(logits, labels), on_epoch=True, sync_dist=True)
        self.log("test/acc", self.test_acc, on_epoch=True)
        self.log("test/balanced_acc", self.test_balanced_acc, on_epoch=True)
        self.log("test/images", self.test_images, on_epoch=True)  # summed over processes: each image once
        return {"preds": logits.argmax(dim=1), "target": labels, "logits": logits}

    def predict_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """Class probabilities of ``(images, keys)``; the keys (labels or item ids) pass through."""
        images, keys = batch
        return {"probs": logits_with_tta(self, images, self.tta).float().softmax(dim=1), "keys": keys}

    def on_train_epoch_start(self) -> None:
        optimizer = self.trainer.optimizers[0] if self.trainer.optimizers else None
        self.strategy.on_train_epoch_start(self.backbone, self.current_epoch, optimizer)
        self.strategy.set_train_modes(self.backbone, self.current_epoch)

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
        optimizer = self.optimizer_factory(params=self.strategy.param_groups(self.backbone, self.learning_rate))
        if self.scheduler_factory is None:
            return optimizer
        # epoch-wise, or per batch for schedules over the run's steps (optim/schedulers.py)
        scheduler = lightning_scheduler(self.scheduler_factory, optimizer, self.trainer)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    # -- checkpoint --------------------------------------------------------------------------
    def checkpoint_record(self) -> dict[str, Any]:
        """The plain record a checkpoint of this module holds (``run/model_record.py``)."""
        return self.record.to_dict(self.weights_lineage, self.strategy.state_dict())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[RECORD_KEY] = self.checkpoint_record()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Lightning loading this run's own checkpoint (resume, the test of ``best.ckpt``; the file was checked
        as data before, ``run/resume.py``): the strategy's state and the weights' lineage, plain values only."""
        from transfer_lightning.run.model_record import recorded_state

        state, lineage = recorded_state(checkpoint)
        self.restore_state(state, lineage, checkpoint.get("epoch", 0))

    def restore_record(self, record: ModelRecord, epoch: int = 0) -> None:
        """Take a checkpoint's strategy state and lineage (its weights are loaded separately)."""
        self.restore_state(record.strategy_state, record.lineage, epoch)

    def restore_state(self, strategy_state: dict[str, Any], lineage: dict[str, Any], epoch: int) -> None:
        self.strategy.load_state_dict(strategy_state)
        self.strategy.apply(self.backbone, epoch if isinstance(epoch, int) else 0)
        self.weights_lineage = lineage
