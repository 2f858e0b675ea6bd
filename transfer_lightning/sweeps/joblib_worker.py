"""Inside a joblib (loky) worker process: one GPU per worker, and DataLoader workers that start.

Both run at the start of each job (``SweepCallback.on_job_start``), before CUDA is initialised.
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing
import os
import subprocess
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)
_claimed: IO[str] | None = None  # held open for the worker's life: the lock goes when the process does


def visible_gpus() -> list[str]:
    """GPU ids this process may use, found without initialising CUDA (which would fix the device set)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu for gpu in listed.split(",") if gpu.strip()]
    try:
        found = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return []
    return found.stdout.split() if found.returncode == 0 else []


def claim_gpu(lock_dir: Path, job_num: int, gpus: list[str] | None = None) -> str | None:
    """Pin this process to one GPU not held by another worker; returns its id (None: nothing to do).

    A worker keeps its GPU for all the jobs it runs (CUDA cannot change device set once started).
    The claim is an ``flock`` on ``<lock_dir>/gpu<id>.lock``, released by the OS when the worker exits.
    """
    global _claimed
    if _claimed is not None:
        return os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = visible_gpus() if gpus is None else gpus
    if len(gpus) < 2:
        return None
    lock_dir.mkdir(parents=True, exist_ok=True)
    for offset in range(len(gpus)):
        gpu = gpus[(job_num + offset) % len(gpus)]
        handle = (lock_dir / f"gpu{gpu}.lock").open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _claimed = handle
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        log.info("Job %d: this worker uses GPU %s only (CUDA_VISIBLE_DEVICES=%s)", job_num, gpu, gpu)
        return gpu
    log.warning("Job %d: every GPU is held by another worker; set hydra.launcher.n_jobs <= %d", job_num, len(gpus))
    return None


def use_fork_for_dataloader_workers() -> None:
    """Make ``fork`` the default start method again inside a loky worker.

    loky installs its own multiprocessing context as the worker's default, and a DataLoader with
    ``num_workers > 0`` then fails to start its workers ("'Process' object has no attribute 'env'").
    ``fork`` is what the DataLoader uses in a plain Linux process.
    """
    if (
        multiprocessing.get_start_method(allow_none=True) != "fork"
        and "fork" in multiprocessing.get_all_start_methods()
    ):
        multiprocessing.set_start_method("fork", force=True)
