"""Entry point: ``python -m transfer_lightning [overrides]``: compose, check, build, fit, test on the best
checkpoint, record ``run_summary.json`` in the run folder."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from transfer_lightning.cache import use_feature_cache
from transfer_lightning.callbacks.graceful_stop import RunInterrupted
from transfer_lightning.callbacks.safety import safety_callbacks
from transfer_lightning.callbacks.test_predictions import WriteTestPredictions
from transfer_lightning.data.prepare import prepare_data_once_per_node
from transfer_lightning.loggers.build import finish_logger_runs
from transfer_lightning.loggers.publish import publish_run_end, publish_run_start
from transfer_lightning.models import backbone_class
from transfer_lightning.models.head_init import check_head_init_file, load_head_init
from transfer_lightning.models.lineage import is_run_weights
from transfer_lightning.recipes.ema import ema_callbacks
from transfer_lightning.recipes.linear_probe import fit_linear_probe
from transfer_lightning.run.builders import (
    build_callbacks,
    build_classifier,
    build_datamodule,
    build_logger,
    build_strategy,
    build_trainer,
    record_of_config,
)
from transfer_lightning.run.dashboard import hparams_columns, write_hparams
from transfer_lightning.run.launch import continue_requeued_job
from transfer_lightning.run.outcome import EXIT_INTERRUPTED, RunRecord, recorded_outcome
from transfer_lightning.run.preflight import check_run_folder
from transfer_lightning.run.preprocessing import explicit_data_keys, run_preprocessing
from transfer_lightning.run.resume import (
    ResumeRefused,
    check_checkpoint_fits,
    forget_refused_resume,
    original_overrides,
    prepare_resume,
    restore_weights,
)
from transfer_lightning.run.speed import tune_for_device
from transfer_lightning.run.summary import (
    describe_model,
    describe_training,
    planned_epochs,
    print_report,
    recipe_summary,
    run_summary,
    test_best,
    write_summary,
)
from transfer_lightning.run.tuning import find_learning_rate, keep_found_learning_rate
from transfer_lightning.strategies import FreezingStrategy
from transfer_lightning.sweeps import prepare_sweep_job, write_failed_summary
from transfer_lightning.utils.cli import CONFIG_FOLDER, check_checkpoint_exists, check_once, exit_with
from transfer_lightning.utils.errors import UserError
from transfer_lightning.utils.log_filters import install_log_filters
from transfer_lightning.utils.progress import configure_progress

log = logging.getLogger("transfer_lightning")
install_log_filters()  # Lightning's advertising and known-harmless warnings (log_filters.py)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test and summarise one experiment described by ``cfg`` (or continue the run ``cfg.resume``)."""
    started = time.perf_counter()
    try:  # every check of the config, before any data is read
        cfg = prepare_resume(cfg)
        strategy = check_training_config(cfg)
        configure_progress(cfg.trainer.enable_progress_bar)
        run_dir = Path(cfg.paths.output_dir)
        check_run_folder(run_dir, cfg)
    except UserError as error:
        forget_refused_resume(error)  # a refused resume leaves no .hydra/resumed-<time>/ behind
        raise
    failed = True
    try:
        with recorded_outcome(run_dir, cfg) as record:
            summary = _fit_and_test(cfg, run_dir, record, strategy, started)
            failed = False
            return summary
    except ResumeRefused as error:  # the checkpoint does not fit: nothing ran
        forget_refused_resume(error)
        raise
    finally:
        finish_logger_runs(failed)  # a W&B run ends with its job (the next job of a sweep opens its own)


def check_training_config(cfg: DictConfig) -> FreezingStrategy:
    """Every check of a training config that reads no data: the schemas (once per config: ``config/check.py``),
    ``ckpt_path``, a model name its family builds, and the strategy's stage counts on that backbone.
    Returns the strategy, built for the backbone's stages."""
    check_once(cfg)
    check_checkpoint_exists(cfg)
    check_head_init_file(cfg.model.get("head_init"))
    family = backbone_class(cfg.model)
    family.check_name(cfg.model.name)
    family.check_input_size(cfg.model.name, cfg.data.get("image_size"))  # a ViT takes one size
    return build_strategy(cfg.strategy, family.stage_names_of(cfg.model.name))


def _fit_and_test(
    cfg: DictConfig, run_dir: Path, record: RunRecord, strategy: FreezingStrategy, started: float
) -> dict[str, Any]:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    resumed_from = cfg.get("ckpt_path")
    if resumed_from:
        keep_found_learning_rate(cfg, resumed_from)  # tune.lr_find: the rate it found is in the checkpoint
    # before any data is read: the weights can be had (a resumed run's come from its checkpoint: nothing
    # to fetch; a transfer chain's starting run is read from disk)
    family = backbone_class(cfg.model)
    fetch = not resumed_from or is_run_weights(str(cfg.model.weights))
    starting_run = family.ensure_weights(cfg.model.name, cfg.model.weights) if fetch else None

    overrides = _overrides()
    record.fields.update(model=cfg.model.name, strategy=_choices().get("strategy"), seed=cfg.seed, overrides=overrides)
    progress_bar = cfg.trainer.enable_progress_bar is not False
    callbacks = build_callbacks(cfg.get("callbacks"), progress_bar=progress_bar) + ema_callbacks(cfg.get("ema"))
    callbacks += safety_callbacks()
    callbacks.append(WriteTestPredictions(run_dir))  # per-image test results: select's and sweeps' statistics
    loggers = build_logger(cfg.get("logger"), run_dir)  # an MLflow server is asked here, before any data is read
    trainer = record.trainer = build_trainer(cfg, callbacks, loggers)

    explicit = explicit_data_keys(overrides + original_overrides(resumed_from), _experiment_preset())
    defaults = family.default_preprocessing(cfg.model.name, cfg.model.weights)  # as the weights were trained
    preprocessing = run_preprocessing(cfg.data, defaults, starting_run, explicit)
    datamodule = build_datamodule(cfg.data, preprocessing=preprocessing)
    # what the images really go through (a natively stored CIFAR is never resized before the device)
    log.info("Preprocessing: %s (data.image_size / resize_size / interpolation / mean / std)", datamodule.contract)
    prepare_data_once_per_node(datamodule, trainer)
    datamodule.setup("fit")
    model_record = record_of_config(cfg, datamodule.class_names, datamodule.contract)
    train_labels = datamodule.splits.train.labels  # loss.class_weights=balanced
    module = build_classifier(model_record, pretrained=not resumed_from, strategy=strategy, train_labels=train_labels)
    if cfg.model.get("head_init") and not resumed_from:  # LP-FT: the head starts from select's linear probe
        module.weights_lineage = {
            **module.weights_lineage,
            **load_head_init(module.backbone, cfg.model.head_init, datamodule.class_names),
        }
        log.info("Head: starts from the linear probe %s (model.head_init)", cfg.model.head_init)
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
    hparams = hparams_columns(cfg, _choices(), overrides, trainable, module.backbone.num_stages, datamodule.image_size)
    publish_run_start(trainer.loggers, hparams, module.weights_lineage, run_dir)  # loggers/: params, lineage tags

    trainer.fit(module, datamodule=feature_cache.datamodule, ckpt_path=resumed_from)
    best_val = trainer.callback_metrics.get("val/acc_best")  # before the test pass resets the metrics
    tested = test_best(trainer, module, feature_cache.datamodule, callbacks) if cfg.get("test", True) else None
    summary = run_summary(cfg, trainer, module, datamodule, feature_cache, tested, callbacks, hparams["strategy"])
    summary["best_val_acc"] = best_val
    summary.update(lr_find=lr_find, resumed_from=resumed_from, overrides=overrides)
    summary["recipe"] = recipe_summary(_choices().get("recipe"), datamodule, module, callbacks, probe)
    summary["wall_time_s"] = round(time.perf_counter() - started, 2)
    if not trainer.is_global_zero:
        return summary  # under DDP every process gets here; rank 0 writes the one summary
    write_hparams(trainer.loggers, hparams, {"val/acc_best": summary["best_val_acc"], "test/acc": summary["test_acc"]})
    path = write_summary(run_dir, summary)
    publish_run_end(trainer.loggers, path)
    print_report(summary)
    log.info("Run folder: %s (summary: %s)", run_dir, path.name)
    return summary


def _hydra_main(cfg: DictConfig) -> float | None:
    """Hydra entry point; a ``UserError`` becomes one line on stderr and exit status 2.

    In a multirun a failing job is logged and recorded, and the sweep goes on.
    """
    try:
        if _is_multirun() and (earlier := prepare_sweep_job(cfg, _overrides())) is not None:
            return earlier.get("best_val_acc")  # this job completed before (resumed sweep)
        if not _is_multirun():
            continue_requeued_job(cfg)  # a requeued SLURM job continues from its folder's last.ckpt
        summary = train(cfg)
    except UserError as error:
        if _is_multirun():
            log.error("This job failed: %s", error)
            write_failed_summary(cfg.paths.output_dir, error, _overrides())
            return None
        exit_with(error)
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


main = hydra.main(version_base="1.3", config_path=str(CONFIG_FOLDER), config_name="config")(_hydra_main)


def _experiment_preset() -> DictConfig | None:
    """The experiment preset this run composed (``experiment=<name>``), read from the config folder it came from."""
    choice = _choices().get("experiment")
    if not choice or not HydraConfig.initialized():
        return None
    for source in HydraConfig.get().runtime.config_sources:
        path = Path(str(source.path).removeprefix("file://")) / "experiment" / f"{choice}.yaml"
        if source.schema == "file" and path.is_file():
            return OmegaConf.load(path)
    return None


def _is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _choices() -> dict[str, str | None]:
    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def _overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
