"""The Hydra callback that makes a multirun answer its question (configured in conf/hydra/default.yaml)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from transfer_lightning.errors import UserError
from transfer_lightning.sweeps.devices import claim_gpu
from transfer_lightning.sweeps.guards import refuse_ddp_in_local_multirun
from transfer_lightning.sweeps.report import write_sweep_report
from transfer_lightning.sweeps.resume import SWEPT_KEYS_VARIABLE, resume_sweep_dir, swept_keys_of_command

log = logging.getLogger("transfer_lightning")


class SweepCallback(Callback):
    """Refuse unsupported sweeps, find the sweep to resume, pin a GPU per parallel job, write the report."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            refuse_ddp_in_local_multirun(config)
            resume_sweep_dir(config)
        except UserError as error:
            # one line and exit status 2, as for every user mistake (no Hydra traceback)
            log.error("%s", error)
            print(f"Error: {error}", file=sys.stderr)
            sys.exit(2)
        os.environ[SWEPT_KEYS_VARIABLE] = ",".join(swept_keys_of_command(config))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "Joblib" in str(config.hydra.launcher.get("_target_", "")):
            claim_gpu(Path(str(config.hydra.sweep.dir)) / ".gpu_locks", int(config.hydra.job.num))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        written = write_sweep_report(sweep_dir)
        log.info("Sweep report: %s", ", ".join(str(path) for path in written))
