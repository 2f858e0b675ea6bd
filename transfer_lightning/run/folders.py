"""Which folder a run writes to, as Hydra resolves it (``conf/hydra/default.yaml``): ``tl.run_dir``, the run a
command continues (``resume=`` or ``ckpt_path=<run>/checkpoints/last.ckpt``), else a new folder (rank 0's under
torchrun or srun); ``tl.hydra_subdir``, where Hydra saves the command's config (``.hydra/resumed-<time>/`` when it
continues a run, so that the run's own ``.hydra/config.yaml`` stays). Registered on import, which loads no torch:
the command line imports this before Hydra starts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from transfer_lightning.run.launch import is_launch_rank_zero, launch_run_folder

SAVED_CONFIG = Path(".hydra") / "config.yaml"
RESUMED_SUBDIR = ".hydra/resumed"  # + -<time>: the resuming command's own config


def run_folder_of(resume: Any, ckpt_path: Any) -> str | None:
    """The run folder a command continues: ``resume``, or the run that holds ``ckpt_path``."""
    if isinstance(resume, str) and resume:
        return str(Path(resume).expanduser())
    if isinstance(ckpt_path, str) and ckpt_path:
        checkpoint = Path(ckpt_path).expanduser()
        run = checkpoint.parent.parent
        if checkpoint.parent.name == "checkpoints" and (run / SAVED_CONFIG).is_file():
            return str(run)
    return None


def _run_dir_resolver(resume: Any, ckpt_path: Any, default: str) -> str:
    return run_folder_of(resume, ckpt_path) or launch_run_folder(default)  # torchrun/srun: rank 0's


def _hydra_subdir_resolver(resume: Any, ckpt_path: Any) -> str | None:
    if not is_launch_rank_zero():
        return None  # torchrun/srun: rank 0 saves the config (as Lightning's DDP launcher arranges it)
    if run_folder_of(resume, ckpt_path) is None:
        return ".hydra"
    return f"{RESUMED_SUBDIR}-{time.strftime('%Y-%m-%d_%H-%M-%S')}"


OmegaConf.register_new_resolver("tl.run_dir", _run_dir_resolver, replace=True)
OmegaConf.register_new_resolver("tl.hydra_subdir", _hydra_subdir_resolver, replace=True, use_cache=True)
