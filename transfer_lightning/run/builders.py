"""Turn a checked config, or a checkpoint's record, into objects: the model, the data, the trainer and its
callbacks and loggers. Nothing here is recursive: a nested dictionary stays a dictionary."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from transfer_lightning.callbacks import resolve_precision
from transfer_lightning.callbacks.loop_progress import LoopProgress
from transfer_lightning.config.trust import trusted_class
from transfer_lightning.data.contract import Preprocessing
from transfer_lightning.loggers.build import build_loggers
from transfer_lightning.models import Backbone, backbone_class
from transfer_lightning.recipes.loss import build_loss
from transfer_lightning.run.checkpoint import AtomicCheckpointIO
from transfer_lightning.run.launch import cluster_environment_plugins
from transfer_lightning.run.model_record import ModelRecord
from transfer_lightning.strategies import FreezingStrategy
from transfer_lightning.utils.errors import UserError, first_line
from transfer_lightning.utils.progress import live_bar_allowed

if TYPE_CHECKING:
    from transfer_lightning.classifier import TransferClassifier

log = logging.getLogger(__name__)


def build_callbacks(cfg: DictConfig | None, progress_bar: bool = True) -> list[Callback]:
    """One callback per non-null entry of ``cfg.callbacks`` (no progress bar when disabled)."""
    if not cfg:
        return []
    callbacks = [
        instantiate(node, _recursive_=False, _convert_="all")
        for node in cfg.values()
        if node is not None and "_target_" in node
    ]
    if not progress_bar:  # trainer.enable_progress_bar=false must not clash with a bar callback
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return callbacks


def build_logger(cfg: DictConfig | None, run_dir: Path | None = None) -> list[Logger] | bool:
    """The loggers of ``cfg.logger`` (``transfer_lightning/loggers``); False when there is none."""
    return build_loggers(cfg, run_dir) or False


def build_trainer(cfg: DictConfig, callbacks: list[Callback], logger: list[Logger] | Logger | bool) -> L.Trainer:
    """Instantiate ``cfg.trainer``; a GPU asked for but absent is an error, never a CPU run.

    Where no live bar can be drawn (``transfer_lightning.utils.progress``), Lightning's bar is replaced
    by plain progress lines (``LoopProgress``).
    """
    trainer_cfg: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)  # type: ignore[assignment]
    trainer_cfg["precision"] = resolve_precision(trainer_cfg.get("accelerator", "auto"), trainer_cfg.get("precision"))
    lightning_bar = live_bar_allowed() and trainer_cfg.get("enable_progress_bar") is not False
    if not lightning_bar:  # log file, SLURM or bar off: plain progress lines, no bar's control characters
        trainer_cfg["enable_progress_bar"] = False
        callbacks = [*(c for c in callbacks if not isinstance(c, ProgressBar)), LoopProgress()]
    try:
        # atomic checkpoint writes, weights_only reads (transfer_lightning/run/checkpoint.py); under
        # SLURM Lightning's auto-requeue off (run/launch.py: SLURM and submitit own requeueing)
        plugins = [AtomicCheckpointIO(), *cluster_environment_plugins()]
        return instantiate(
            trainer_cfg, callbacks=callbacks, logger=logger, plugins=plugins, _convert_="all", _recursive_=False
        )
    except InstantiationException as error:
        cause = error.__cause__ or error
        raise UserError(
            f"the trainer settings cannot run here ({first_line(cause)}); check the "
            "trainer.* overrides (trainer.accelerator=auto takes a GPU when present, else the CPU)"
        ) from error


def build_datamodule(data_cfg: DictConfig | dict[str, Any], from_file: bool = False, **arguments: Any) -> Any:
    """The data module a data config describes; ``from_file``: a checkpoint's record (through the allowlist)."""
    return build_object(_plain(data_cfg), "data", from_file, "data", **arguments)


def build_classifier(
    record: ModelRecord,
    pretrained: bool = True,
    strategy: FreezingStrategy | None = None,
    train_labels: torch.Tensor | None = None,
) -> TransferClassifier:
    """The ``TransferClassifier`` a record describes: the one function that builds it, for a new run (a record
    of the trusted config) and for every file (``evaluate``, ``predict``, ``export``, resume, transfer chains).

    ``pretrained=False`` skips the weights the record started from (a checkpoint's state dict replaces
    them, so nothing is fetched). ``strategy``: one already built for this backbone (``train`` builds
    it before reading any data, to check its stage counts). ``train_labels``: the training split's labels,
    for ``loss.class_weights=balanced`` (only a run that trains needs them).
    """
    from transfer_lightning.classifier import TransferClassifier

    family = backbone_family(record.model, record.from_file)
    weights = record.model.get("weights") if pretrained else None
    backbone = family.build(record.model_name, len(record.class_names), weights, list(record.class_names))
    strategy = strategy or build_strategy(record.strategy, backbone.stage_names, record.from_file)
    optimizer = build_object(record.optimizer, "optimizer", record.from_file, "optimizer", partial=True)
    scheduler = (
        build_object(record.scheduler, "scheduler", record.from_file, "scheduler", partial=True)
        if record.scheduler
        else None
    )
    loss = build_loss(record.loss, len(record.class_names), train_labels)
    return TransferClassifier(backbone, strategy, optimizer, record, scheduler, loss)


def classifier_for(cfg: DictConfig, datamodule: Any, pretrained: bool = True) -> TransferClassifier:
    """The classifier a (trusted) config describes, sized to a set-up data module's classes: the Python API's
    way to build one (``train`` does the same in steps)."""
    return build_classifier(record_of_config(cfg, datamodule.class_names, datamodule.contract), pretrained)


def backbone_family(model: Mapping[str, Any], from_file: bool = False) -> type[Backbone]:
    """The backbone family class of a model config (a recorded one only through the allowlist)."""
    if from_file:
        return trusted_class(model.get("backbone"), "backbone", "the checkpoint", "model.backbone")
    return backbone_class(model)


def build_strategy(node: Mapping[str, Any], stage_names: tuple[str, ...], from_file: bool = False) -> FreezingStrategy:
    """The freezing strategy of a strategy config, for a backbone with ``stage_names``."""
    return build_object(node, "strategy", from_file, "strategy", stage_names=list(stage_names))


def build_object(
    node: Mapping[str, Any], kind: str, from_file: bool, key: str, partial: bool = False, **arguments: Any
) -> Any:
    """``node``'s ``_target_`` called with its settings (``partial``: a ``functools.partial`` of it).

    Never recursive: a nested dictionary is passed as a dictionary. A node from a file names a class
    through the allowlist (``config/trust.py``) only; a class's own ``UserError`` stays one sentence.
    """
    target = node.get("_target_")
    if from_file:
        factory = trusted_class(target, kind, "the checkpoint", f"{key}._target_")
    else:
        from hydra.utils import get_object

        factory = get_object(target)
    settings = {name: _plain(value) for name, value in node.items() if not str(name).startswith("_")}
    if partial:
        _check_arguments(factory, settings, key)
        return functools.partial(factory, **settings)
    try:
        return factory(**{**settings, **arguments})
    except TypeError as error:
        _check_arguments(factory, settings, key)  # an unknown setting: name it
        raise UserError(f"{key} ({target}) cannot be built: {first_line(error)}") from error


def _check_arguments(factory: Any, settings: Mapping[str, Any], key: str) -> None:
    """A setting ``factory`` does not take is one sentence naming it, not a TypeError when it is called."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    accepted = {p.name for p in parameters}
    unknown = sorted(set(settings) - accepted)
    if unknown:
        allowed = ", ".join(sorted(accepted - {"self", "params", "optimizer"}))
        raise UserError(f"{key}.{unknown[0]} is not a setting of {factory.__qualname__}; allowed: {allowed}")


def record_of_config(cfg: DictConfig, class_names: list[str], preprocessing: Preprocessing) -> ModelRecord:
    """The record of a run built from its (trusted) config."""
    from transfer_lightning.data.record import recorded_data_config

    model = _plain(cfg.model)
    if not model.get("backbone"):
        family = backbone_class(model)
        model["backbone"] = f"{family.__module__}.{family.__qualname__}"
    return ModelRecord(
        model={"name": model["name"], "backbone": model["backbone"], "weights": model.get("weights")},
        strategy=_plain(cfg.strategy),
        optimizer=_plain(cfg.optimizer),
        scheduler=_plain(cfg.get("scheduler")) or None,
        class_names=list(class_names),
        preprocessing=preprocessing,
        data=recorded_data_config(cfg.data),
        loss=_plain(cfg.get("loss")) or None,
        ema=_plain(cfg.get("ema")) or None,
    )


def _plain(node: Any) -> Any:
    """Plain containers (not OmegaConf objects) so checkpoints load with ``weights_only``."""
    if node is None:
        return None
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
