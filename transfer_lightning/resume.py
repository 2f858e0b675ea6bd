"""Continue a killed run in its own folder: ``resume=<run folder>`` or ``ckpt_path=<run>/checkpoints/last.ckpt``.

The run folder's ``.hydra/config.yaml`` is the experiment; the command line may only change the
settings in ``ALLOWED_ON_RESUME`` (how long to train, where the data and devices are). Everything
else (model, classes, strategy, optimizer, schedule, checkpoint and early-stopping settings) must
match, or Lightning would silently drop state (optimizer, callback state keyed by monitor/mode)
or train something else than the checkpoint holds.

Hydra's run folder is the resumed one (the ``tl.run_dir`` resolver in ``conf/hydra/default.yaml``);
the new command's composed config goes to ``.hydra/resumed-<time>/`` so the original stays.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from transfer_lightning.checkpoint_io import load_checkpoint_safely
from transfer_lightning.errors import UserError

log = logging.getLogger(__name__)

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
SAVED_CONFIG = Path(".hydra") / "config.yaml"
SAVED_OVERRIDES = Path(".hydra") / "overrides.yaml"

# Settings a resumed run may change; listed in the README ("When things go wrong").
ALLOWED_ON_RESUME: tuple[str, ...] = (
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "data.root",
    "data.num_workers",
    "paths.data_dir",
    "test",
)
# What the checkpoint's hyperparameters must share with the config that resumes it.
_MUST_MATCH = ("model", "strategy", "optimizer", "scheduler", "class_names", "preprocessing")
_IGNORED = {"model.weights"}  # the checkpoint's weights replace whatever model.weights names


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


def original_overrides(ckpt_path: Any) -> list[str]:
    """The command-line overrides of the run that ``ckpt_path`` continues (none for a fresh run)."""
    run = run_folder_of(None, ckpt_path)
    saved = Path(run) / SAVED_OVERRIDES if run else None
    return [str(item) for item in OmegaConf.load(saved)] if saved and saved.is_file() else []


def _run_dir_resolver(resume: Any, ckpt_path: Any, default: str) -> str:
    return run_folder_of(resume, ckpt_path) or default


def _hydra_subdir_resolver(resume: Any, ckpt_path: Any) -> str:
    if run_folder_of(resume, ckpt_path) is None:
        return ".hydra"
    return f".hydra/resumed-{time.strftime('%Y-%m-%d_%H-%M-%S')}"


OmegaConf.register_new_resolver("tl.run_dir", _run_dir_resolver, replace=True)
OmegaConf.register_new_resolver("tl.hydra_subdir", _hydra_subdir_resolver, replace=True, use_cache=True)


def prepare_resume(cfg: DictConfig) -> DictConfig:
    """The config to run: ``cfg`` itself, or the resumed run's saved config plus allowed overrides.

    The result's ``ckpt_path`` names the checkpoint to continue from. Raises ``UserError`` for a
    missing run folder or checkpoint, or an override that would change the experiment.
    """
    resume = cfg.get("resume")
    if resume is None or _is_multirun():
        return cfg  # a sweep's resume=true is the sweep's business
    if not isinstance(resume, str):
        raise UserError(
            f"resume={resume!r} is not a run folder; give the folder of the run to continue, "
            "e.g. resume=outputs/2026-01-31/12-00-00"
        )
    if cfg.get("ckpt_path"):
        raise UserError("give either resume=<run folder> or ckpt_path=<file>, not both")
    folder = Path(resume).expanduser()
    saved_path = folder / SAVED_CONFIG
    if not saved_path.is_file():
        raise UserError(f"resume={resume}: {saved_path} does not exist; give the folder of a run (it holds .hydra/)")
    checkpoint = folder / LAST_CHECKPOINT
    if not checkpoint.is_file():
        raise UserError(f"resume={resume}: {checkpoint} does not exist, so there is nothing to resume; start anew")
    saved = OmegaConf.load(saved_path)
    _apply_allowed_overrides(saved, cfg, _override_keys(), resume)
    with open_dict(saved):
        saved.resume = None
        saved.ckpt_path = str(checkpoint.resolve())
    OmegaConf.set_struct(saved, True)
    log.info("Resuming %s from %s", folder, checkpoint.name)
    return saved


def check_checkpoint_fits(
    ckpt_path: str | Path, hparams: dict[str, Any], callback_keys: list[str], checkpoint_dir: str | None
) -> None:
    """Refuse a checkpoint trained with another model, classes, strategy, optimizer or schedule, or
    whose checkpoint/early-stopping state no callback of this run would take back (Lightning matches
    that state by monitor, mode and save frequency, and silently drops what does not match).

    Loads the file with ``weights_only=True`` (a file needing arbitrary unpickling is refused).
    """
    checkpoint = load_checkpoint_safely(ckpt_path)
    saved = checkpoint.get("hyper_parameters")
    if not isinstance(saved, dict):
        raise UserError(f"checkpoint {ckpt_path} has no hyper_parameters; it was not written by this project")
    differences = []
    for key in _MUST_MATCH:
        differences += _differences(key, saved.get(key), _plain(hparams.get(key)))
    if differences:
        shown = "; ".join(differences[:4]) + (f" (+{len(differences) - 4} more)" if len(differences) > 4 else "")
        raise UserError(
            f"checkpoint {ckpt_path} does not match this config ({shown}); resume with the run's own settings "
            f"(only {', '.join(ALLOWED_ON_RESUME)} may change) or start a new run"
        )
    orphaned = [
        key
        for key in checkpoint.get("callbacks") or {}
        if key.startswith(("ModelCheckpoint", "RunCheckpoint", "EarlyStopping")) and key not in callback_keys
    ]
    if orphaned:
        raise UserError(
            f"checkpoint {ckpt_path} holds callback state {orphaned[0]} that no callback of this config would "
            "restore (its monitor, mode or save frequency changed); resume with the run's own callbacks.* settings"
        )
    saved_dir = _saved_checkpoint_dir(checkpoint)
    if checkpoint_dir and saved_dir and Path(saved_dir) != Path(checkpoint_dir):
        log.warning(
            "Continuing from a checkpoint written in %s: this run checkpoints to %s, so its best-checkpoint "
            "bookkeeping starts afresh (resume=<run folder> continues in place)",
            saved_dir,
            checkpoint_dir,
        )


def _override_keys() -> list[tuple[str, str]]:
    """(key, the override as typed) of the command line's task overrides, ``resume`` excluded."""
    if not HydraConfig.initialized():
        return []
    typed = list(HydraConfig.get().overrides.task)
    parsed = OverridesParser.create().parse_overrides(typed)
    keys = []
    for override, text in zip(parsed, typed, strict=True):
        key = override.key_or_group
        if key != "resume":
            plain = override.is_add() is False and override.is_delete() is False and not override.is_force_add()
            keys.append((key if plain else text, text))
    return keys


def _apply_allowed_overrides(saved: DictConfig, current: DictConfig, overrides: list[tuple[str, str]], resume: str):
    refused = [text for key, text in overrides if key not in ALLOWED_ON_RESUME]
    if refused:
        raise UserError(
            f"resume={resume}: {', '.join(refused)} would change the experiment the checkpoint was trained with; "
            f"a resumed run may only change {', '.join(ALLOWED_ON_RESUME)}"
        )
    for key, _ in overrides:
        OmegaConf.update(saved, key, OmegaConf.select(current, key), force_add=True)


def _differences(key: str, saved: Any, current: Any) -> list[str]:
    if key in _IGNORED:
        return []
    if isinstance(saved, dict) and isinstance(current, dict):
        found = []
        for name in sorted(set(saved) | set(current)):
            found += _differences(f"{key}.{name}", saved.get(name), current.get(name))
        return found
    if saved != current:
        return [f"{key}: checkpoint {saved!r}, config {current!r}"]
    return []


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _saved_checkpoint_dir(checkpoint: dict[str, Any]) -> str | None:
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if key.startswith(("ModelCheckpoint", "RunCheckpoint")) and isinstance(state, dict):
            return state.get("dirpath")
    return None


def _is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
