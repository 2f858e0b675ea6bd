"""Combinations a sweep cannot run, refused before any job starts."""

from __future__ import annotations

from omegaconf import DictConfig, ListConfig

from transfer_lightning.utils.errors import UserError

# strategies that start their processes without re-running the command line
_IN_PROCESS_STRATEGIES = ("ddp_spawn", "ddp_fork", "ddp_notebook")


def _device_count(devices: object) -> int | None:
    """How many devices ``trainer.devices`` asks for; None for all of them (``auto``, -1)."""
    if isinstance(devices, (list, tuple, ListConfig)):
        return len(devices)
    text = str(devices).strip()
    if text.isdigit():
        return int(text)
    if "," in text:
        return len([item for item in text.split(",") if item.strip()])
    return None


def uses_script_relaunch(config: DictConfig) -> bool:
    """True for Lightning DDP on several devices: it re-runs ``sys.argv`` once per extra process."""
    trainer = config.get("trainer") or {}
    strategy = str(trainer.get("strategy", "auto"))
    count = _device_count(trainer.get("devices", 1))
    several = trainer.get("num_nodes", 1) != 1 or count is None or count > 1
    return strategy.startswith("ddp") and not strategy.startswith(_IN_PROCESS_STRATEGIES) and several


def refuse_ddp_in_local_multirun(config: DictConfig) -> None:
    """Lightning's DDP re-launch does not support Hydra multirun: every process would re-run the sweep."""
    launcher = str((config.hydra.get("launcher") or {}).get("_target_", ""))
    if "SlurmLauncher" in launcher:  # SLURM starts one task per device; Lightning does not re-launch
        return
    if uses_script_relaunch(config):
        raise UserError(
            f"trainer.strategy={config.trainer.strategy} on several devices cannot run inside a local multirun "
            "(Lightning re-launches the command per process, and each would re-run the whole sweep); use "
            "hydra/launcher=submitit_slurm (one SLURM task per device), one GPU per job (trainer=default with "
            "hydra/launcher=joblib), or trainer.strategy=ddp_spawn"
        )


def refuse_sync_batchnorm_on_cpu(config: DictConfig) -> None:
    """torch's SyncBatchNorm only works on GPUs; say so before the processes start."""
    trainer = config.get("trainer") or {}
    if trainer.get("sync_batchnorm") and trainer.get("accelerator") == "cpu":
        raise UserError(
            "trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm); on the CPU add trainer.sync_batchnorm=false"
        )


def refuse_slurm_without_device_count(config: DictConfig) -> None:
    """The SLURM preset asks for ``trainer.devices`` GPUs and tasks per node: it must be a number."""
    launcher = str((config.hydra.get("launcher") or {}).get("_target_", ""))
    devices = (config.get("trainer") or {}).get("devices")
    if "SlurmLauncher" in launcher and _device_count(devices) is None:
        raise UserError(
            f"hydra/launcher=submitit_slurm needs trainer.devices=<number> (GPUs and tasks per node), not {devices!r}; "
            "e.g. trainer.devices=1 for one GPU per job"
        )
