"""Where a sweep stands: "job k of N", the values the job runs, and the time the sweep has left.

``SweepCallback.on_multirun_start`` counts the jobs and notes the start in the environment (every
launcher's jobs inherit it); each job's ``on_job_start`` reads it back and estimates the time left
from the jobs finished since (a finished job leaves ``run_summary.json``, also when it failed).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from omegaconf import DictConfig

from transfer_lightning.run.summary import SUMMARY_FILE
from transfer_lightning.sweeps.results import job_overrides, shown_value
from transfer_lightning.sweeps.resume import swept_overrides
from transfer_lightning.utils.progress import format_duration

JOBS_VARIABLE = "TRANSFER_LIGHTNING_SWEEP_JOBS"
STARTED_VARIABLE = "TRANSFER_LIGHTNING_SWEEP_STARTED"


def count_jobs(config: DictConfig) -> int | None:
    """Jobs of the sweep: the grid's size (Hydra's basic sweeper), ``n_trials`` (Optuna), else None."""
    sweeper = config.hydra.sweeper
    if "n_trials" in sweeper:
        return int(sweeper.n_trials)
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    values_per_key: dict[str, int] = {}  # the basic sweeper's grid: a later value of a key replaces an earlier one
    try:
        for override in OverridesParser.create().parse_overrides(params + list(config.hydra.overrides.task)):
            if override.is_sweep_override() and not override.is_discrete_sweep():
                return None  # a range of real numbers: not the basic sweeper's to run
            count = len(list(override.sweep_string_iterator())) if override.is_sweep_override() else 1
            values_per_key[override.get_key_element()] = count
    except Exception:  # noqa: BLE001 - a sweep we cannot count (a glob over config options) still runs;
        return None  # its lines omit "of N"
    return math.prod(values_per_key.values())


def note_sweep_start(config: DictConfig) -> None:
    """Record the job count and the start time for the jobs' ``job_start_line``."""
    jobs = count_jobs(config)
    os.environ[JOBS_VARIABLE] = str(jobs) if jobs is not None else ""
    os.environ[STARTED_VARIABLE] = repr(time.time())


def _shown_override(override: str) -> str:
    """``optimizer.lr=0.0003421`` for Optuna's ``optimizer.lr=0.00034212345678901``."""
    key, equals, value = override.partition("=")
    return f"{key}={shown_value(value)}" if equals else override


def job_start_line(config: DictConfig, now: float | None = None) -> str:
    """``Sweep job 3 of 15 (optimizer.lr=0.001, ...); about 24 min left for the sweep (2 jobs in 9 min 40 s)``."""
    number = int(config.hydra.job.num) + 1
    jobs = int(os.environ[JOBS_VARIABLE]) if os.environ.get(JOBS_VARIABLE) else None
    swept = swept_overrides(job_overrides(list(config.hydra.overrides.task)))
    values = ", ".join(_shown_override(override) for override in swept) or "the defaults"
    line = f"Sweep job {number}{f' of {jobs}' if jobs else ''} ({values})"
    started = float(os.environ.get(STARTED_VARIABLE) or 0)
    if not jobs or not started:
        return line
    now = time.time() if now is None else now
    finished = _finished_jobs(Path(str(config.hydra.sweep.dir)), since=started)
    if not finished["now"]:
        return f"{line}; the sweep's time left is estimated once a job has finished"
    elapsed = now - started
    left = max(0, jobs - finished["all"]) * elapsed / finished["now"]
    return (
        f"{line}; about {format_duration(left)} left for the sweep "
        f"({finished['now']} job{'s' if finished['now'] != 1 else ''} in {format_duration(elapsed)})"
    )


def _finished_jobs(sweep_dir: Path, since: float) -> dict[str, int]:
    """Job folders with a summary: all of them, and those written by this launch (``now``)."""
    summaries = [path for path in sweep_dir.glob(f"*/{SUMMARY_FILE}") if path.parent.name.isdigit()]
    return {"all": len(summaries), "now": sum(path.stat().st_mtime >= since for path in summaries)}
