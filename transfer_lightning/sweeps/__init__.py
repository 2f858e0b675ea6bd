"""Hydra multirun sweeps: the report at the end, resume, failed jobs recorded, launcher helpers."""

from transfer_lightning.sweeps.failures import write_failed_summary
from transfer_lightning.sweeps.results import write_sweep_report
from transfer_lightning.sweeps.resume import prepare_sweep_job

__all__ = ["prepare_sweep_job", "write_failed_summary", "write_sweep_report"]
