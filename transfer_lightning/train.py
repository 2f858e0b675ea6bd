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
from omegaconf import DictConfig

from transfer_lightning.callbacks.graceful_stop import RunInterrupted
from transfer_lightning.loggers.build import finish_logger_runs
from transfer_lightning.loggers.publish import publish_run_start
from transfer_lightning.models import backbone_class
from transfer_lightning.models.head_init import check_head_init_file
from transfer_lightning.run import job
from transfer_lightning.run.assemble import assemble_run
from transfer_lightning.run.builders import build_strategy
from transfer_lightning.run.launch import continue_requeued_job
from transfer_lightning.run.outcome import EXIT_INTERRUPTED, RunRecord, record_completed, recorded_outcome
from transfer_lightning.run.preflight import check_run_folder
from transfer_lightning.run.resume import ResumeRefused, forget_refused_resume, prepare_resume
from transfer_lightning.run.summary import run_summary, test_best
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
    run = assemble_run(cfg, run_dir, record, strategy)
    trainer, module, datamodule = run.trainer, run.module, run.feature_cache.datamodule
    publish_run_start(trainer.loggers, run.hparams, module.weights_lineage, run_dir)  # loggers/: params, lineage tags

    trainer.fit(module, datamodule=datamodule, ckpt_path=run.resumed_from)
    best_val = trainer.callback_metrics.get("val/acc_best")  # before the test pass resets the metrics
    tested = test_best(trainer, module, datamodule, run.callbacks) if cfg.get("test", True) else None
    summary = run_summary(cfg, run, tested, best_val, time.perf_counter() - started)
    if trainer.is_global_zero:  # under DDP every process gets here; rank 0 writes the one summary
        path = record_completed(run, summary, run_dir)
        log.info("Run folder: %s (summary: %s)", run_dir, path.name)
    return summary


def hydra_job(cfg: DictConfig) -> float | None:
    """Hydra entry point; a ``UserError`` becomes one line on stderr and exit status 2.

    In a multirun a failing job is logged and recorded, and the sweep goes on.
    """
    install_log_filters()  # again in the job: Hydra has set up its logging by now (print_lightning_once)
    try:
        if job.is_multirun() and (earlier := prepare_sweep_job(cfg, job.task_overrides())) is not None:
            return earlier.get("best_val_acc")  # this job completed before (resumed sweep)
        if not job.is_multirun():
            continue_requeued_job(cfg)  # a requeued SLURM job continues from its folder's last.ckpt
        summary = train(cfg)
    except UserError as error:
        if job.is_multirun():
            log.error("This job failed: %s", error)
            write_failed_summary(cfg.paths.output_dir, error, job.task_overrides())
            return None
        exit_with(error)
    except (RunInterrupted, KeyboardInterrupt) as error:
        print(f"Interrupted: {error or 'Ctrl-C'}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)  # a sweep stops too: Ctrl-C means stop
    except Exception as error:
        if not job.is_multirun():
            raise
        log.exception("This job failed; the sweep goes on")
        write_failed_summary(cfg.paths.output_dir, error, job.task_overrides())
        return None
    return summary.get("best_val_acc")


main = hydra.main(version_base="1.3", config_path=str(CONFIG_FOLDER), config_name="config")(hydra_job)
