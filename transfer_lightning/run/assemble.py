"""One training run's objects, built from its checked config: the Trainer with its callbacks and loggers, the
data module, the classifier (restored from the checkpoint of a resumed run), the feature cache, and what the
steps before fitting found (LP-FT's probe, the learning-rate finder's rate)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from transfer_lightning.cache import FeatureCacheReport, use_feature_cache
from transfer_lightning.callbacks.safety import safety_callbacks
from transfer_lightning.callbacks.test_predictions import WriteTestPredictions
from transfer_lightning.data.prepare import prepare_data_once_per_node
from transfer_lightning.models import backbone_class
from transfer_lightning.models.head_init import load_head_init
from transfer_lightning.models.lineage import is_run_weights
from transfer_lightning.recipes.ema import ema_callbacks
from transfer_lightning.recipes.linear_probe import fit_linear_probe
from transfer_lightning.run import job
from transfer_lightning.run.builders import (
    build_callbacks,
    build_classifier,
    build_datamodule,
    build_logger,
    build_trainer,
    record_of_config,
)
from transfer_lightning.run.dashboard import hparams_columns
from transfer_lightning.run.outcome import RunRecord
from transfer_lightning.run.preprocessing import explicit_data_keys, run_preprocessing
from transfer_lightning.run.resume import check_checkpoint_fits, original_overrides, restore_weights
from transfer_lightning.run.speed import tune_for_device
from transfer_lightning.run.summary import describe_model, describe_training, planned_epochs
from transfer_lightning.run.tuning import find_learning_rate, keep_found_learning_rate
from transfer_lightning.strategies import FreezingStrategy

if TYPE_CHECKING:
    from transfer_lightning.classifier import TransferClassifier

log = logging.getLogger("transfer_lightning")


@dataclass
class Run:
    """The built objects of one run, ready for ``trainer.fit(module, datamodule=feature_cache.datamodule)``."""

    trainer: L.Trainer
    callbacks: list[Callback]
    datamodule: Any  # the images; ``feature_cache.datamodule`` is what the Trainer reads
    module: TransferClassifier
    feature_cache: FeatureCacheReport
    resumed_from: str | None
    overrides: list[str]
    hparams: dict[str, Any]  # the hyperparameter columns of the dashboards
    probe: Any  # strategy=lp_ft: the linear probe's record
    lr_find: Any  # tune.lr_find: the rate found


def assemble_run(cfg: DictConfig, run_dir: Path, record: RunRecord, strategy: FreezingStrategy) -> Run:
    """Build every object of the run ``cfg`` describes, in the order that reads no data before it must."""
    resumed_from = cfg.get("ckpt_path")
    if resumed_from:
        keep_found_learning_rate(cfg, resumed_from)  # tune.lr_find: the rate it found is in the checkpoint
    # before any data is read: the weights can be had (a resumed run's come from its checkpoint: nothing
    # to fetch; a transfer chain's starting run is read from disk)
    family = backbone_class(cfg.model)
    fetch = not resumed_from or is_run_weights(str(cfg.model.weights))
    starting_run = family.ensure_weights(cfg.model.name, cfg.model.weights) if fetch else None

    overrides = job.task_overrides()
    record.fields.update(
        model=cfg.model.name, strategy=job.choices().get("strategy"), seed=cfg.seed, overrides=overrides
    )
    callbacks = build_callbacks(cfg.get("callbacks"), progress_bar=cfg.trainer.enable_progress_bar is not False)
    callbacks += ema_callbacks(cfg.get("ema")) + safety_callbacks()
    callbacks.append(WriteTestPredictions(run_dir))  # per-image test results: select's and sweeps' statistics
    loggers = build_logger(cfg.get("logger"), run_dir)  # an MLflow server is asked here, before any data is read
    trainer = record.trainer = build_trainer(cfg, callbacks, loggers)

    explicit = explicit_data_keys(overrides + original_overrides(resumed_from), job.experiment_preset())
    defaults = family.default_preprocessing(cfg.model.name, cfg.model.weights)  # as the weights were trained
    datamodule = build_datamodule(cfg.data, preprocessing=run_preprocessing(cfg.data, defaults, starting_run, explicit))
    # what the images really go through (a natively stored CIFAR is never resized before the device)
    log.info(
        "Preprocessing: %s (data.image_size / resize_size / interpolation / mean / std)", datamodule.contract.summary()
    )
    prepare_data_once_per_node(datamodule, trainer)
    datamodule.setup("fit")
    module = _classifier(cfg, datamodule, strategy, pretrained=not resumed_from)
    epochs = planned_epochs(cfg)  # a schedule longer than the run: the counts are what trains in it
    describe_model(module, epochs)
    describe_training(datamodule, module, callbacks)
    if resumed_from:
        state_keys = [callback.state_key for callback in trainer.callbacks]
        checkpoint_dir = trainer.checkpoint_callback.dirpath if trainer.checkpoint_callback else None
        check_checkpoint_fits(resumed_from, module.record, state_keys, checkpoint_dir)
        restore_weights(module, resumed_from)  # the feature cache below reads the trained frozen stages
    autotune = cfg.trainer.get("benchmark") is None and not cfg.trainer.get("deterministic")
    tune_for_device(module, trainer, compile_net=cfg.get("compile", False), autotune=autotune)
    feature_cache = use_feature_cache(datamodule, module, trainer)
    probe = fit_linear_probe(module, datamodule, trainer, resumed=bool(resumed_from))  # strategy=lp_ft
    lr_find = find_learning_rate(cfg, trainer, module, feature_cache.datamodule, run_dir)  # tune.lr_find
    trainable = module.parameter_counts(epochs)["trainable"]
    hparams = hparams_columns(
        cfg, job.choices(), overrides, trainable, module.backbone.num_stages, datamodule.image_size
    )
    return Run(trainer, callbacks, datamodule, module, feature_cache, resumed_from, overrides, hparams, probe, lr_find)


def _classifier(cfg: DictConfig, datamodule: Any, strategy: FreezingStrategy, pretrained: bool) -> TransferClassifier:
    """The classifier for ``datamodule``'s classes; LP-FT from select: its head starts from the linear probe."""
    model_record = record_of_config(cfg, datamodule.class_names, datamodule.contract)
    train_labels = datamodule.splits.train.labels  # loss.class_weights=balanced
    module = build_classifier(model_record, pretrained=pretrained, strategy=strategy, train_labels=train_labels)
    if cfg.model.get("head_init") and pretrained:
        probed = load_head_init(module.backbone, cfg.model.head_init, datamodule.class_names)
        module.weights_lineage = {**module.weights_lineage, **probed}
        log.info("Head: starts from the linear probe %s (model.head_init)", cfg.model.head_init)
    return module
