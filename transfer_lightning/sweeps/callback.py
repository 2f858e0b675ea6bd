"""The Hydra callback that makes a multirun answer its question (configured in conf/hydra/default.yaml)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from transfer_lightning.loggers.sweep import close_sweep_parent, open_sweep_parent
from transfer_lightning.sweeps.guards import (
    refuse_ddp_in_local_multirun,
    refuse_slurm_without_device_count,
    refuse_sync_batchnorm_on_cpu,
)
from transfer_lightning.sweeps.joblib_worker import claim_gpu, use_fork_for_dataloader_workers
from transfer_lightning.sweeps.progress import job_start_line, note_sweep_start
from transfer_lightning.sweeps.results import best_val_acc, print_ranking, write_sweep_report
from transfer_lightning.sweeps.resume import (
    SWEPT_KEYS_VARIABLE,
    claim_new_sweep_dir,
    resume_sweep_dir,
    swept_keys_of_command,
)
from transfer_lightning.utils.cli import exit_with
from transfer_lightning.utils.errors import UserError

log = logging.getLogger("transfer_lightning")


class SweepCallback(Callback):
    """Refuse unsupported sweeps, find the sweep to resume, open the MLflow parent run, pin a GPU per
    parallel job, say "job k of N" with the sweep's time left at each job's start, write the report."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _exit_on_user_error(refuse_sync_batchnorm_on_cpu, config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _exit_on_user_error(refuse_ddp_in_local_multirun, config)
        _exit_on_user_error(refuse_sync_batchnorm_on_cpu, config)
        _exit_on_user_error(refuse_slurm_without_device_count, config)
        _exit_on_user_error(resume_sweep_dir, config)
        _exit_on_user_error(claim_new_sweep_dir, config)  # two sweeps started in the same second
        os.environ[SWEPT_KEYS_VARIABLE] = ",".join(swept_keys_of_command(config))
        _exit_on_user_error(open_sweep_parent, config)  # logger=mlflow: the parent run of the jobs' runs
        note_sweep_start(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            log.info("%s", job_start_line(config))
        if "Joblib" in str(config.hydra.launcher.get("_target_", "")):
            use_fork_for_dataloader_workers()
            claim_gpu(Path(str(config.hydra.sweep.dir)) / ".gpu_locks", int(config.hydra.job.num))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        written = write_sweep_report(sweep_dir)
        print_ranking(sweep_dir)
        log.info("Sweep report: %s", ", ".join(str(path) for path in written))
        close_sweep_parent(config, written, best_val_acc(sweep_dir))  # last: the report stands if MLflow fails


def _exit_on_user_error(check: Callable[[DictConfig], Any], config: DictConfig) -> None:
    """A user's mistake before any job runs: one line and exit status 2 (no Hydra traceback), logged too."""
    try:
        check(config)
    except UserError as error:
        log.error("%s", error)
        exit_with(error)
