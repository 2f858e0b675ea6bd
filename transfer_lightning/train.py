"""Entry point: ``python -m transfer_lightning [overrides]`` composes the config, trains, tests
on the best checkpoint and writes ``run_summary.json`` into the run folder."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from transfer_lightning.cache import use_feature_cache
from transfer_lightning.callbacks import DeviceReport, PerClassAccuracy
from transfer_lightning.callbacks.graceful_stop import RunInterrupted
from transfer_lightning.callbacks.safety import safety_callbacks
from transfer_lightning.data.contract import Preprocessing, resolve_preprocessing
from transfer_lightning.data.prepare import prepare_data_once_per_node
from transfer_lightning.models import backbone_class
from transfer_lightning.models.lineage import RunWeights, describe_lineage, is_run_weights, preprocessing_from_run
from transfer_lightning.run.builders import (
    build_callbacks,
    build_classifier,
    build_datamodule,
    build_logger,
    build_trainer,
    find_callback,
)
from transfer_lightning.run.dashboard import hparams_columns, write_hparams
from transfer_lightning.run.outcome import EXIT_INTERRUPTED, RunRecord, recorded_outcome
from transfer_lightning.run.preflight import check_run_folder
from transfer_lightning.run.resume import (
    ResumeRefused,
    check_checkpoint_fits,
    forget_refused_resume,
    original_overrides,
    prepare_resume,
    restore_weights,
)
from transfer_lightning.run.speed import tune_for_device
from transfer_lightning.run.summary import print_report, write_summary
from transfer_lightning.run.tuning import find_learning_rate, keep_found_learning_rate
from transfer_lightning.run.validation import CONFIG_FOLDER, validate_training_config
from transfer_lightning.sweeps import prepare_sweep_job, write_failed_summary
from transfer_lightning.utils.errors import UserError
from transfer_lightning.utils.log_filters import install_log_filters
from transfer_lightning.utils.progress import configure_progress

log = logging.getLogger("transfer_lightning")
install_log_filters()  # Lightning's advertising and known-harmless warnings (log_filters.py)
CONFIG_DIR = str(CONFIG_FOLDER)
_PREPROCESSING_KEYS = ("image_size", "resize_size", "interpolation", "mean", "std")


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test and summarise one experiment described by ``cfg`` (or continue the run ``cfg.resume``)."""
    started = time.perf_counter()
    try:  # every check of the config, before any data is read
        cfg = prepare_resume(cfg)
        validate_training_config(cfg)
        configure_progress(cfg.trainer.enable_progress_bar)
        run_dir = Path(cfg.paths.output_dir)
        check_run_folder(run_dir, cfg)
    except UserError as error:
        forget_refused_resume(error)  # a refused resume leaves no .hydra/resumed-<time>/ behind
        raise
    try:
        with recorded_outcome(run_dir, cfg) as record:
            return _fit_and_test(cfg, run_dir, record, started)
    except ResumeRefused as error:  # the checkpoint does not fit: nothing ran
        forget_refused_resume(error)
        raise


def _fit_and_test(cfg: DictConfig, run_dir: Path, record: RunRecord, started: float) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    resuming = bool(cfg.get("ckpt_path"))
    if resuming:
        keep_found_learning_rate(cfg, cfg.ckpt_path)  # tune.lr_find: the rate it found is in the checkpoint
    backbone = backbone_class(cfg.model)
    # before any data is read; a resumed run's ImageNet weights come from its checkpoint (nothing to fetch),
    # a transfer chain's starting run is read from disk
    fetch = not resuming or is_run_weights(str(cfg.model.weights))
    starting_run = backbone.ensure_weights(cfg.model.name, cfg.model.weights) if fetch else None

    record.fields.update(model=cfg.model.name, strategy=_choice("strategy"), seed=cfg.seed, overrides=_overrides())
    callbacks = (
        build_callbacks(cfg.get("callbacks"), progress_bar=cfg.trainer.enable_progress_bar is not False)
        + safety_callbacks()
    )
    logger = build_logger(cfg.get("logger"))
    trainer = record.trainer = build_trainer(cfg, callbacks, logger)

    defaults = backbone.default_preprocessing(cfg.model.name, cfg.model.weights)  # as the weights were trained
    datamodule = _instantiate_data(cfg.data, defaults, starting_run, cfg.get("ckpt_path"))
    prepare_data_once_per_node(datamodule, trainer)
    datamodule.setup("fit")
    module = build_classifier(cfg, datamodule, resumed_from=cfg.get("ckpt_path"))
    params = module.parameter_counts()
    log.info("Backbone %s (model.name)", module.backbone.describe())
    log.info("Weights: %s (model.weights)", describe_lineage(module.weights_lineage))
    log.info("Strategy %s", module.strategy.describe())
    log.info("Parameters: %s trainable, %s frozen", f"{params['trainable']:,}", f"{params['frozen']:,}")
    checkpoint = find_callback(callbacks, ModelCheckpoint)
    if cfg.get("ckpt_path"):
        state_keys = [callback.state_key for callback in trainer.callbacks]
        check_checkpoint_fits(cfg.ckpt_path, module.hparams, state_keys, checkpoint.dirpath if checkpoint else None)
        restore_weights(module, cfg.ckpt_path)  # the feature cache below reads the trained frozen stages
    autotune = cfg.trainer.get("benchmark") is None and not cfg.trainer.get("deterministic")
    tune_for_device(module, trainer, compile_net=cfg.get("compile", False), autotune=autotune)
    feature_cache = use_feature_cache(datamodule, module, trainer)
    split_fingerprints = feature_cache.fingerprints or datamodule.split_fingerprints()
    lr_find = find_learning_rate(cfg, trainer, module, feature_cache.datamodule, run_dir)  # tune.lr_find
    hparams = hparams_columns(
        cfg, _choices(), _overrides(), params["trainable"], module.backbone.num_stages, datamodule.image_size
    )

    trainer.fit(module, datamodule=feature_cache.datamodule, ckpt_path=cfg.get("ckpt_path"))
    best_val = trainer.callback_metrics.get("val/acc_best")
    best_ckpt = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None
    last_ckpt = checkpoint.last_model_path if checkpoint and checkpoint.last_model_path else None

    test_acc, test_images, per_class = None, None, {}
    if cfg.get("test", True):
        results = trainer.test(module, datamodule=feature_cache.datamodule, ckpt_path=best_ckpt, verbose=False)
        test_acc = results[0].get("test/acc") if results else None
        test_images = int(results[0]["test/images"]) if results and "test/images" in results[0] else None
        per_class_callback = find_callback(callbacks, PerClassAccuracy)
        per_class = per_class_callback.last.get("test", {}) if per_class_callback else {}

    device = find_callback(callbacks, DeviceReport)
    summary = {
        "status": "completed",
        "model": cfg.model.name,
        "weights": module.weights_lineage,
        "strategy": hparams["strategy"],
        "frozen_stages": module.strategy.frozen_stages,
        "stages": list(module.backbone.stage_names),
        "params": params,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "best_val_acc": best_val,
        "test_acc": test_acc,
        "test_per_class_acc": per_class,
        "test_images": test_images,  # each image of the split once, whatever the number of processes
        "test_split": datamodule.splits.notes.get("test_split", "test"),  # "val" when there is no test split
        "class_names": datamodule.class_names,
        "data": {
            "module": type(datamodule).__name__,
            **datamodule.splits.notes,
            "preprocessing": datamodule.preprocessing,
            "split_fingerprints": split_fingerprints,
        },
        "feature_cache": feature_cache.summary(),
        "device": device.device if device else str(trainer.strategy.root_device),
        "precision": str(trainer.precision),
        "best_ckpt": best_ckpt,
        "last_ckpt": last_ckpt,
        "seed": cfg.seed,
        "lr_find": lr_find,
        "resumed_from": cfg.get("ckpt_path"),
        "overrides": _overrides(),
        "wall_time_s": round(time.perf_counter() - started, 2),
    }
    if not trainer.is_global_zero:
        return summary  # under DDP every process gets here; rank 0 writes the one summary
    write_hparams(logger, hparams, {"val/acc_best": best_val, "test/acc": test_acc})  # once both were measured
    path = write_summary(run_dir, summary)
    print_report(summary)
    log.info("Run folder: %s (summary: %s)", run_dir, path.name)
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; a ``UserError`` becomes one line on stderr and exit status 2.

    In a multirun a failing job is logged and recorded, and the sweep goes on.
    """
    try:
        if _is_multirun() and (earlier := prepare_sweep_job(cfg, _overrides())) is not None:
            return earlier.get("best_val_acc")  # this job completed before (resumed sweep)
        summary = train(cfg)
    except UserError as error:
        if _is_multirun():
            log.error("This job failed: %s", error)
            write_failed_summary(cfg.paths.output_dir, error, _overrides())
            return None
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(2)
    except (RunInterrupted, KeyboardInterrupt) as error:
        print(f"Interrupted: {error or 'Ctrl-C'}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)  # a sweep stops too: Ctrl-C means stop
    except Exception as error:
        if not _is_multirun():
            raise
        log.exception("This job failed; the sweep goes on")
        write_failed_summary(cfg.paths.output_dir, error, _overrides())
        return None
    return summary.get("best_val_acc")


def _instantiate_data(
    data_cfg: DictConfig, defaults: Preprocessing, starting_run: RunWeights | None, resumed_from: str | None
) -> Any:
    """The configured data module and its preprocessing contract (``data/contract.py``): the model's
    defaults (``Backbone.default_preprocessing``: from its weights), or a transfer chain's starting
    run's, with the ``data.*`` keys the user set."""
    if starting_run is None:
        # the weights' input defaults, then the data.* keys that are not null (sizes, interpolation, mean, std)
        preprocessing = resolve_preprocessing(data_cfg, defaults)
        log.info("Preprocessing: %s (data.image_size / resize_size / interpolation / mean / std)", preprocessing)
        return build_datamodule(data_cfg, preprocessing=preprocessing)
    typed = _overrides() + original_overrides(resumed_from)  # a resumed run keeps its first command's
    overrides = {key: data_cfg.get(key) for key in _PREPROCESSING_KEYS if _sets(typed, f"data.{key}")}
    inherited = preprocessing_from_run(starting_run, overrides)
    if inherited.crop_size is not None:  # the starting run's images were stored natively (CIFAR): not a rule for files
        inherited = replace(inherited, resize_size=inherited.image_size, crop_size=None)
    return build_datamodule(data_cfg, preprocessing=inherited)


def _sets(overrides: list[str], key: str) -> bool:
    return any(override.lstrip("+").split("=", 1)[0] == key for override in overrides)


def _is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _choice(group: str) -> str | None:
    return _choices().get(group)


def _choices() -> dict[str, str | None]:
    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def _overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
