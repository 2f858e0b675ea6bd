"""Processes started by a launcher, not by Lightning: torchrun, or SLURM's ``srun`` (one task per device).

Lightning's own DDP launcher (``trainer=ddp`` on one machine) starts the other processes itself and
hands them rank 0's run folder (``hydra.run.dir=...``). torchrun and srun start every process at
once, and Hydra runs in each: each would claim its own ``outputs/<date>/<time>``. Here the processes
of one launch agree on rank 0's folder before Hydra writes into it:

- torchrun: rank 0 publishes the folder it claimed in torchrun's own key-value store (the
  agent's TCPStore at ``MASTER_ADDR:MASTER_PORT``); the other ranks read it from there.
- SLURM: rank 0 records it in ``outputs/.slurm_jobs/<job id>.<step id>.json``; the other tasks read it
  there (the output folder is on a file system every node sees, as checkpoints need anyway).

SLURM requeues a job under the same job id (``scontrol requeue``, preemption): rank 0 of the restarted
job finds the record of its earlier start and takes that folder again, and the run continues from
the folder's ``last.ckpt`` (``continue_requeued_job``). Requeueing itself belongs to SLURM and, in
sweeps, to submitit (``conf/hydra/launcher/submitit_slurm.yaml``); Lightning's SLURM auto-requeue is
switched off (``cluster_environment_plugins``) so that no second mechanism requeues or checkpoints.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from transfer_lightning.run.preflight import claim_new_run_folder
from transfer_lightning.utils.errors import UserError
from transfer_lightning.utils.files import atomic_write_text

log = logging.getLogger(__name__)

WAIT_FOR_RANK_ZERO_S = 600  # rank 0 may still be importing torch on a busy node
SLURM_JOBS_FOLDER = ".slurm_jobs"  # beside the date folders of the default outputs/<date>/<time>


@dataclass(frozen=True)
class Launch:
    """How a launcher started this process: ``kind`` (``torchrun`` or ``slurm``), rank and process count."""

    kind: str
    rank: int
    world_size: int


def current_launch() -> Launch | None:
    """The launch this process belongs to; None when it was started alone or by Lightning.

    Detected in Lightning's order (torchrun first: it can run inside a SLURM job).
    """
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_torchelastic_launched():
        return Launch("torchrun", int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    if "SLURM_JOB_ID" in os.environ:
        from lightning.fabric.plugins.environments import SLURMEnvironment

        if SLURMEnvironment.detect():  # srun, not an interactive shell (job name bash/interactive)
            return Launch("slurm", int(os.environ.get("SLURM_PROCID", 0)), int(os.environ.get("SLURM_NTASKS", 1)))
    return None


def is_launch_rank_zero() -> bool:
    """False in the processes of a torchrun/srun launch other than rank 0 (they write no ``.hydra/``)."""
    launch = current_launch()
    return launch is None or launch.rank == 0


_agreed: dict[str, str] = {}  # proposed folder -> the agreed one (Hydra resolves hydra.run.dir more than once)


def launch_run_folder(proposed: str) -> str:
    """The new run folder of this process: ``claim_new_run_folder(proposed)``, or, in a torchrun or SLURM
    launch, the one rank 0 claimed (a requeued SLURM job's earlier one)."""
    if proposed not in _agreed:
        launch = current_launch()
        if launch is None:
            _agreed[proposed] = claim_new_run_folder(proposed)
        elif launch.kind == "torchrun":
            _agreed[proposed] = _torchrun_folder(proposed, launch)
        else:
            _agreed[proposed] = _slurm_folder(proposed, launch)
    return _agreed[proposed]


def _torchrun_folder(proposed: str, launch: Launch) -> str:
    if launch.world_size == 1:
        return claim_new_run_folder(proposed)
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        raise UserError(
            "this torchrun launch shares no key-value store with its processes (TORCH_DISABLE_SHARE_RDZV_TCP_STORE), "
            "so they cannot agree on a run folder; give them one with hydra.run.dir=<folder>"
        )
    from torch.distributed import TCPStore

    store = TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        is_master=False,
        timeout=timedelta(seconds=WAIT_FOR_RANK_ZERO_S),
    )
    key = f"transfer_lightning/run_dir/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    if launch.rank == 0:
        folder = claim_new_run_folder(proposed)
        store.set(key, folder)
        return folder
    return store.get(key).decode()  # waits for rank 0


def _slurm_folder(proposed: str, launch: Launch) -> str:
    """Rank 0 takes the folder its job had before a requeue, or claims a new one, and records it; the other
    tasks wait for the record of this start (``SLURM_RESTART_COUNT``)."""
    job = f"{os.environ['SLURM_JOB_ID']}.{os.environ.get('SLURM_STEP_ID', 'batch')}"
    record = Path(proposed).parent.parent / SLURM_JOBS_FOLDER / f"{job}.json"
    restart = int(os.environ.get("SLURM_RESTART_COUNT", 0))
    if launch.rank == 0:
        earlier = _read_record(record)
        requeued = earlier is not None and earlier["restart"] < restart and Path(earlier["run_dir"]).is_dir()
        folder = earlier["run_dir"] if requeued else claim_new_run_folder(proposed)
        atomic_write_text(record, json.dumps({"run_dir": folder, "restart": restart}) + "\n")
        return folder
    deadline = time.monotonic() + WAIT_FOR_RANK_ZERO_S
    while (entry := _read_record(record)) is None or entry["restart"] != restart:
        if time.monotonic() > deadline:
            raise UserError(
                f"task 0 of SLURM job {job} recorded no run folder in {record} within {WAIT_FOR_RANK_ZERO_S} s; "
                "give every task the same folder with hydra.run.dir=<folder>"
            )
        time.sleep(0.2)
    return entry["run_dir"]


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def continue_requeued_job(cfg: DictConfig) -> None:
    """A SLURM job that was requeued (``SLURM_RESTART_COUNT`` >= 1) continues from its run folder's
    ``last.ckpt``, as a sweep's job does (``sweeps.resume.prepare_sweep_job``); nothing else changes."""
    from transfer_lightning.run.resume import LAST_CHECKPOINT  # resume.py imports this module

    restart = int(os.environ.get("SLURM_RESTART_COUNT", 0))
    last = Path(cfg.paths.output_dir) / LAST_CHECKPOINT
    if restart < 1 or cfg.get("resume") is not None or cfg.get("ckpt_path") or not last.is_file():
        return
    with open_dict(cfg):
        cfg.ckpt_path = str(last)
    log.info("SLURM requeued this job (restart %d): continuing from %s (ckpt_path)", restart, last)


def cluster_environment_plugins() -> list[Any]:
    """Under SLURM, Lightning's SLURM environment with its auto-requeue off: SLURM and submitit own
    requeueing, and a ``SIGUSR1`` must not make Lightning write an ``hpc_ckpt`` and requeue on its own."""
    launch = current_launch()
    if launch is None or launch.kind != "slurm":
        return []
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)]
