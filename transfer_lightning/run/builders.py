"""Turn the composed config into Lightning objects (callbacks, logger, trainer)."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from transfer_lightning.callbacks import resolve_precision
from transfer_lightning.callbacks.loop_progress import LoopProgress
from transfer_lightning.run.checkpoint import AtomicCheckpointIO
from transfer_lightning.utils.errors import UserError, first_line
from transfer_lightning.utils.progress import live_bar_allowed

log = logging.getLogger(__name__)


def build_callbacks(cfg: DictConfig | None, progress_bar: bool = True) -> list[Callback]:
    """One callback per non-null entry of ``cfg.callbacks`` (no progress bar when disabled)."""
    if not cfg:
        return []
    callbacks = [instantiate(node) for node in cfg.values() if node is not None and "_target_" in node]
    if not progress_bar:  # trainer.enable_progress_bar=false must not clash with a bar callback
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return callbacks


def build_logger(cfg: DictConfig | None) -> Logger | bool:
    return instantiate(cfg) if cfg else False


def build_trainer(cfg: DictConfig, callbacks: list[Callback], logger: Logger | bool) -> L.Trainer:
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
        # atomic checkpoint writes, weights_only reads (transfer_lightning/run/checkpoint.py)
        plugins = [AtomicCheckpointIO()]
        return instantiate(trainer_cfg, callbacks=callbacks, logger=logger, plugins=plugins, _convert_="all")
    except InstantiationException as error:
        cause = error.__cause__ or error
        raise UserError(
            f"the trainer settings cannot run here ({first_line(cause)}); check the "
            "trainer.* overrides (trainer.accelerator=auto takes a GPU when present, else the CPU)"
        ) from error


def build_datamodule(data_cfg: DictConfig | dict[str, Any], **arguments: Any) -> Any:
    """Instantiate a data config; a ``UserError`` its class raises stays one sentence (no Hydra wrapper)."""
    try:
        return instantiate(data_cfg, **arguments)
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise


def find_callback(callbacks: list[Callback], kind: type) -> Any:
    return next((callback for callback in callbacks if isinstance(callback, kind)), None)


def build_classifier(cfg: DictConfig, datamodule: Any, resumed_from: str | None = None) -> Any:
    """The ``TransferClassifier`` of ``cfg`` sized to ``datamodule``'s classes (plain-container hparams).

    ``resumed_from``: the checkpoint whose state dict will replace the weights (``resume.restore_weights``),
    so the pretrained weights are not loaded (nor fetched from the network).
    """
    from transfer_lightning.classifier import TransferClassifier
    from transfer_lightning.data.record import recorded_data_config

    module = TransferClassifier(
        model=_plain(cfg.model),
        strategy=_plain(cfg.strategy),
        optimizer=_plain(cfg.optimizer),
        scheduler=_plain(cfg.scheduler) or None,
        class_names=datamodule.class_names,
        preprocessing=datamodule.preprocessing,
        load_pretrained=resumed_from is None,
        data=recorded_data_config(cfg.data),
    )
    return module


def _plain(node: Any) -> Any:
    """Plain containers (not OmegaConf objects) so checkpoints load with ``weights_only``."""
    if node is None:
        return None
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
