"""Resumable sweeps.

Two levels:

- the sweep (``resume=true`` or ``resume=<sweep folder>`` on a multirun command): the jobs go into
  the folder of the earlier sweep of the same command instead of a new timestamped one;
- the job (always, in a multirun): a job folder that already holds a completed
  ``run_summary.json`` is skipped, one that holds ``checkpoints/last.ckpt`` continues from it,
  anything else runs. This also makes a SLURM job requeued by submitit resume, since its folder
  (``<sweep>/<job number>``) is the same after the requeue.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from transfer_lightning.loggers.sweep import name_job_loggers
from transfer_lightning.run.dashboard import short_run_name
from transfer_lightning.run.summary import read_summary
from transfer_lightning.sweeps.results import job_overrides, sound_summary
from transfer_lightning.utils.errors import UserError

log = logging.getLogger(__name__)
MULTIRUN_FILE = "multirun.yaml"
SWEPT_KEYS_VARIABLE = "TRANSFER_LIGHTNING_SWEPT_KEYS"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def _sweep_overrides(multirun_file: Path) -> list[str] | None:
    """The overrides of the sweep that wrote ``multirun_file``; None when the file says none (or is damaged:
    another sweep's folder is data, read with care)."""
    try:
        saved = yaml.safe_load(multirun_file.read_text(errors="replace")) or {}
    except (OSError, yaml.YAMLError):
        return None
    hydra = saved.get("hydra") if isinstance(saved, dict) else None
    overrides = hydra.get("overrides") if isinstance(hydra, dict) else None
    task = overrides.get("task") if isinstance(overrides, dict) else None
    if not isinstance(task, list) or not all(isinstance(item, str) for item in task):
        return None
    return job_overrides(task)


def find_previous_sweep(new_sweep_dir: Path, overrides: list[str]) -> Path | None:
    """The newest sweep folder whose command had the same overrides (``resume`` aside).

    Looked for in ``new_sweep_dir`` itself (a fixed ``hydra.sweep.dir``) and among the
    ``<date>/<time>`` folders beside it (the default ``outputs/multirun/<date>/<time>``).
    """
    wanted = job_overrides(overrides)
    root = new_sweep_dir.parent.parent
    candidates = [new_sweep_dir / MULTIRUN_FILE, *root.glob(f"*/*/{MULTIRUN_FILE}")]
    matches = [path.parent for path in candidates if path.is_file() and _sweep_overrides(path) == wanted]
    return max(matches, key=lambda folder: (folder / MULTIRUN_FILE).stat().st_mtime) if matches else None


def resume_sweep_dir(config: DictConfig) -> Path | None:
    """Point ``hydra.sweep.dir`` of a multirun at the sweep to resume; None when not resuming.

    Called before the sweeper starts. The jobs' configs are composed again from
    ``hydra.overrides.hydra``, so the folder is set there too.
    """
    resume = config.get("resume")
    if resume is None or resume is False:
        return None
    task_overrides = list(config.hydra.overrides.task)
    if resume is True:
        folder = find_previous_sweep(Path(str(config.hydra.sweep.dir)), task_overrides)
        if folder is None:
            log.warning("resume=true: no earlier sweep of this command found; starting a new one")
            return None
    else:
        folder = Path(str(resume)).expanduser()
        if not (folder / MULTIRUN_FILE).is_file():
            raise UserError(
                f"resume={resume} is not a sweep folder (no {MULTIRUN_FILE} in it); pass the folder that "
                "holds the job folders 0, 1, ... or resume=true to find the sweep of this command"
            )
        previous = _sweep_overrides(folder / MULTIRUN_FILE)
        if previous != job_overrides(task_overrides):
            raise UserError(
                f"resume={resume} was a sweep of other overrides ({' '.join(previous or [])}); "
                "re-run it with exactly its command, or start a new sweep without resume"
            )
    folder = folder.resolve()
    _set_sweep_dir(config, folder)
    log.info("Resuming the sweep in %s", folder)
    return folder


def _set_sweep_dir(config: DictConfig, folder: Path | str) -> None:
    """Point the sweep, and the jobs' configs composed from ``hydra.overrides.hydra``, at ``folder``."""
    with open_dict(config):
        config.hydra.sweep.dir = str(folder)
        config.hydra.overrides.hydra.append(f"hydra.sweep.dir={folder}")


def claim_new_sweep_dir(config: DictConfig) -> Path | None:
    """Give a timestamped sweep folder (the default ``outputs/multirun/<date>/<time>``) to this sweep
    alone: ``<time>-2``, ``-3``, ... when another sweep started in the same second took it, whose jobs
    would otherwise share the job folders 0, 1, ... with this one. Returns the new folder, or None
    when the proposed one was free or is fixed (a ``hydra.sweep.dir`` without ``${now:...}`` is reused
    on purpose: that is how a sweep continues there). Called after ``resume_sweep_dir``.
    """
    from transfer_lightning.run.preflight import claim_new_run_folder

    written = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("dir")
    if "${now:" not in str(written):
        return None
    proposed = str(config.hydra.sweep.dir)
    folder = claim_new_run_folder(proposed)
    if folder == proposed:
        return None
    _set_sweep_dir(config, folder)
    log.info("%s was taken by a sweep started in the same second: this sweep writes to %s", proposed, folder)
    return Path(folder)


def prepare_sweep_job(cfg: DictConfig, overrides: list[str]) -> dict[str, Any] | None:
    """Skip, continue or start this job of a sweep; returns the earlier summary when it is skipped.

    Also names the job's logger runs by its overrides, so TensorBoard and MLflow list the jobs by
    what they changed (and append to the same runs when the job continues).
    """
    run_dir = Path(cfg.paths.output_dir)
    wanted = job_overrides(overrides)
    _name_job_loggers(cfg, wanted)
    summary = sound_summary(read_summary(run_dir))
    if summary and summary.get("status") == "completed":
        if job_overrides(summary.get("overrides") or []) != wanted:
            raise UserError(
                f"{run_dir} holds the result of another job ({' '.join(summary.get('overrides') or [])}); "
                "resume a sweep with exactly its command, or give hydra.sweep.dir a new folder"
            )
        log.info("Job already completed in %s (best val acc %s): skipped", run_dir, summary.get("best_val_acc"))
        return summary
    last = run_dir / LAST_CHECKPOINT
    if last.is_file() and cfg.get("ckpt_path") is None:
        with open_dict(cfg):
            cfg.ckpt_path = str(last)
        log.info("Continuing this job from %s (ckpt_path)", last)
    return None


def swept_keys_of_command(config: DictConfig) -> list[str]:
    """Keys a multirun command sweeps: ``key=a,b`` (or range/choice/...) and ``hydra.sweeper.params``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys = [override.get_key_element() for override in parsed if override.is_sweep_override()]
    params = config.hydra.sweeper.get("params") or {}
    return keys + [str(key) for key in params if str(key) not in keys]


def swept_overrides(overrides: list[str]) -> list[str]:
    """The overrides of a job that set a swept key (all of them when none does)."""
    # set by SweepCallback.on_multirun_start; every launcher's jobs inherit the environment
    swept = [key for key in os.environ.get(SWEPT_KEYS_VARIABLE, "").split(",") if key]
    return [item for item in overrides if item.split("=", 1)[0].lstrip("+~") in swept] or overrides


def _name_job_loggers(cfg: DictConfig, overrides: list[str]) -> None:
    """``<job>/tensorboard/lr=0.01 fs=5``, MLflow run ``<time>/<job> lr=0.01 fs=5``: the loggers list the
    jobs by the values the sweep varies (``loggers/sweep.py``)."""
    swept = swept_overrides(overrides)
    label = short_run_name(swept, [item.split("=", 1)[0].lstrip("+~") for item in swept]) or "defaults"
    name_job_loggers(cfg, label, Path(cfg.paths.output_dir).parent)
