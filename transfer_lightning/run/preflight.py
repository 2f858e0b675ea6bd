"""Before anything runs: the output folder must be writable and its disk must hold the checkpoints.

A full disk or a read-only folder otherwise shows up as a crash at the first checkpoint, an epoch
(or hours) in. ``RunFolderCheck`` is a Hydra callback, so it runs before Hydra itself writes into
the folder; ``train()`` repeats the check for callers that bypass the CLI.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig

from transfer_lightning.utils.cli import exit_on_user_error
from transfer_lightning.utils.errors import UserError

log = logging.getLogger(__name__)

CHECKPOINT_FILES = 3  # best.ckpt, last.ckpt and the temporary file of an atomic save
LOG_MARGIN_BYTES = 100 * 2**20  # TensorBoard events, logs, config


_claimed: dict[str, str] = {}  # proposed folder -> the one this process claimed (Hydra resolves it more than once)


def claim_new_run_folder(proposed: str) -> str:
    """A folder of this run alone: ``proposed`` (``outputs/<date>/<time>``), or ``<proposed>-2``,
    ``-3``, ... when another run already took it (two runs started in the same second).

    Claimed with ``os.mkdir``, which exactly one process wins; the same process gets the same answer
    every time it asks. DDP processes started by Lightning receive rank 0's folder as ``hydra.run.dir``.
    """
    if proposed in _claimed:
        return _claimed[proposed]
    Path(proposed).parent.mkdir(parents=True, exist_ok=True)
    for number in range(1, 10_000):
        candidate = proposed if number == 1 else f"{proposed}-{number}"
        try:
            os.mkdir(candidate)
        except FileExistsError:
            continue
        _claimed[proposed] = candidate
        return candidate
    raise UserError(f"{proposed} and 9,999 numbered folders beside it exist already; set hydra.run.dir")


def check_run_folder(run_dir: str | Path, cfg: DictConfig) -> None:
    """Raise ``UserError`` when ``run_dir`` cannot be created/written or its disk is too full."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise UserError(
            f"the output folder {run_dir} is not writable ({error.strerror or error}); choose another one "
            "with hydra.run.dir=/path/to/writable/folder"
        ) from error
    needed = estimated_bytes(cfg)
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise UserError(
            f"the disk of {run_dir} has {_size(free)} free, but this run needs about {_size(needed)} "
            f"({CHECKPOINT_FILES} checkpoints of {cfg.model.name} with optimizer state, plus logs); free space "
            "or choose another folder with hydra.run.dir=..."
        )


def estimated_bytes(cfg: DictConfig) -> int:
    """A generous estimate of what a run writes: its checkpoints (weights + optimizer state) and logs."""
    parameters = _parameter_count(cfg)
    target = str(cfg.optimizer.get("_target_", ""))
    slots = 2 if "Adam" in target else 1  # Adam's two moments, SGD's momentum buffer
    return CHECKPOINT_FILES * parameters * 4 * (1 + slots) + LOG_MARGIN_BYTES


class RunFolderCheck(HydraCallback):
    """Hydra callback: refuse an unusable run or sweep folder with one line and exit status 2."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir, config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir, config)

    @staticmethod
    def _check(folder: str, config: DictConfig) -> None:
        exit_on_user_error(check_run_folder, folder, config)


def _parameter_count(cfg: DictConfig) -> int:
    """From torchvision's weights metadata, else by building the model on the meta device."""
    import torch  # here: a mistake in the config is refused before torch loads (utils/cli.py ConfigCheck)
    import torchvision

    try:
        return torchvision.models.get_model_weights(cfg.model.name).DEFAULT.meta["num_params"]
    except (ValueError, KeyError, AttributeError):
        pass
    try:
        from transfer_lightning.models import backbone_class

        with torch.device("meta"):
            return sum(p.numel() for p in backbone_class(cfg.model).create(cfg.model.name).parameters())
    except Exception:  # noqa: BLE001 - an unknown model is validation's to report; estimate generously
        return 100_000_000


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 2**30:.1f} GiB" if num_bytes >= 2**30 else f"{num_bytes / 2**20:.0f} MiB"
