"""What TensorBoard shows of a run: a short run name, the HPARAMS columns and their metrics.

TensorBoard's HPARAMS table prints every number with five significant digits (``32.000``,
``1.1177e+07``) and has no integer type, so whole numbers are logged as their text (``"32"``):
they read as written and filter as the discrete values they are. Real numbers (learning rates)
stay numbers, so the parallel-coordinates and scatter views can plot them. ``null`` is an empty
cell, never the string ``None``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from transfer_lightning.config.schemas import ALL_BUT_LAST, ALL_STAGES, SCHEMAS
from transfer_lightning.utils.config_folder import config_folder

if TYPE_CHECKING:  # Lightning loads with torch; the command line's first-second checks import this module
    from lightning.pytorch.loggers import Logger, TensorBoardLogger

STRATEGY_PRESETS = config_folder() / "strategy"
_RUN_NAME_LIMIT = 120


def strategy_label(strategy: Mapping[str, Any], choice: str | None = None, num_stages: int = 5) -> str:
    """The preset a strategy config really is (``feature_extract``, ``finetune``, ``full``), judged by
    its class and ``frozen_stages`` on a backbone of ``num_stages`` stages, or ``custom (frozen_stages=3)``;
    other strategies keep their name.

    ``strategy=finetune strategy.frozen_stages=5`` is feature extraction whatever preset it started from.
    """
    target, stages = strategy.get("_target_"), effective_frozen_stages(strategy.get("frozen_stages"), num_stages)
    presets = {
        name: {**preset, "frozen_stages": effective_frozen_stages(preset["frozen_stages"], num_stages)}
        for name, preset in _presets().items()
    }
    if stages is not None and any(preset["_target_"] == target for preset in presets.values()):
        matching = [name for name, preset in presets.items() if preset == {"_target_": target, "frozen_stages": stages}]
        if choice in matching:
            return str(choice)
        return matching[0] if matching else f"custom (frozen_stages={stages})"
    return choice or str(target).rsplit(".", 1)[-1]


def effective_frozen_stages(frozen_stages: Any, num_stages: int) -> Any:
    """``all`` / ``all_but_last`` as the number of stages they freeze on a backbone of ``num_stages``."""
    return {ALL_STAGES: num_stages, ALL_BUT_LAST: num_stages - 1}.get(frozen_stages, frozen_stages)


@functools.cache
def _presets() -> dict[str, dict[str, Any]]:
    """``conf/strategy/<name>.yaml`` presets that fix ``frozen_stages``: name -> class and depth."""
    presets = {}
    for path in sorted(STRATEGY_PRESETS.glob("*.yaml")):
        config = yaml.safe_load(path.read_text()) or {}
        if "frozen_stages" in config:
            presets[path.stem] = {
                "_target_": config.get("_target_") or _schema_target(config),
                "frozen_stages": config["frozen_stages"],
            }
    return presets


def _schema_target(config: Mapping[str, Any]) -> str | None:
    """The class a preset's schema names (``- /schema/strategy/<name>@_here_`` first in its defaults)."""
    for entry in config.get("defaults") or []:
        if isinstance(entry, str) and entry.startswith("/schema/strategy/"):
            schema = SCHEMAS["strategy"].get(entry.removeprefix("/schema/strategy/").split("@", 1)[0])
            return getattr(schema, "_target_", None)
    return None


def short_run_name(overrides: list[str], keys: list[str]) -> str:
    """``lr=0.01 fs=5``: the overrides of ``keys`` (a sweep's varying keys), each key shortened.

    A key is shortened to its last part (``optimizer.lr`` -> ``lr``), a snake_case part to its
    initials (``frozen_stages`` -> ``fs``); two keys that would read the same keep their full names.
    Numbers are written with at most 4 significant digits (Optuna draws ``0.000123456789``).
    """
    chosen = [item.split("=", 1) for item in overrides if "=" in item and item.split("=", 1)[0].lstrip("+~") in keys]
    short = {key: _short_key(key.lstrip("+~")) for key, _ in chosen}
    clashes = {name for name in short.values() if list(short.values()).count(name) > 1}
    parts = [
        f"{key.lstrip('+~') if short[key] in clashes else short[key]}={_short_value(value)}" for key, value in chosen
    ]
    return " ".join(parts).replace("/", "_")[:_RUN_NAME_LIMIT]


def _short_key(key: str) -> str:
    last = key.rsplit(".", 1)[-1]
    words = [word for word in last.split("_") if word]
    return "".join(word[0] for word in words) if len(words) > 1 else last


def _short_value(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() or len(value) <= 6 else f"{number:.4g}"


def hparam_value(value: Any) -> str | float:
    """A value as TensorBoard's HPARAMS table should show it (see the module docstring)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return value
    return str(value)


def write_hparams(loggers: list[Logger], hparams: Mapping[str, Any], metrics: Mapping[str, float | None]) -> None:
    """Write the HPARAMS columns with the metrics that were measured (``None`` ones left out) to each
    TensorBoard logger of ``loggers`` (the others got the columns when training started: ``loggers/``).

    Called once the metrics exist (end of fit, end of test). Only their names are written here:
    TensorBoard reads each metric's value from its own scalar series, so unlike
    ``TensorBoardLogger.log_hyperparams(params, metrics)`` no extra point lands at step 0.
    """
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger) and logger.experiment is not None:
            _write_tensorboard_hparams(logger, hparams, metrics)


def _write_tensorboard_hparams(
    logger: TensorBoardLogger, hparams: Mapping[str, Any], metrics: Mapping[str, float | None]
) -> None:
    from torch.utils.tensorboard.summary import hparams as hparams_summaries

    columns = {key: hparam_value(value) for key, value in hparams.items()}
    measured = {key: float(value) for key, value in metrics.items() if value is not None}
    logger.log_hyperparams(columns)  # hparams.yaml beside the events; no summary without metrics
    experiment, session_start, session_end = hparams_summaries(columns, measured)
    _name_trial(session_start, _trial_name(logger))
    writer = logger.experiment._get_file_writer()  # what Lightning's own log_hyperparams writes to
    for summary in (experiment, session_start, session_end):
        writer.add_summary(summary)
    logger.experiment.flush()


def _trial_name(logger: TensorBoardLogger) -> str:
    """HPARAMS' Trial ID of a sweep job: its short run name first (the table cuts long IDs), then
    ``(<sweep folder>/<job>)`` so that equal names of two sweeps stay two trials. Empty for a
    single run: TensorBoard then shows the run's folder."""
    if not logger.sub_dir:
        return ""
    job = Path(logger.save_dir)
    return f"{logger.sub_dir} ({job.parent.name}/{job.name})"


def _name_trial(session_start: Any, name: str) -> None:
    """Set ``group_name`` (shown as the Trial ID) in the session-start summary torch built."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    if not name:
        return
    metadata = session_start.value[0].metadata.plugin_data
    content = plugin_data_pb2.HParamsPluginData.FromString(metadata.content)
    content.session_start_info.group_name = name
    metadata.content = content.SerializeToString()


def hparams_columns(
    cfg: Any, choices: Mapping[str, str | None], overrides: list[str], trainable: int, num_stages: int, image_size: int
) -> dict[str, Any]:
    """The knobs a sweep compares, flat, for TensorBoard's HPARAMS tab (with the full overrides).

    ``num_stages``: the backbone's stage count, which ``frozen_stages: all`` / ``all_but_last`` resolve to;
    ``image_size``: the side the network sees (``data.image_size``, or the weights' default when it is null).
    """
    strategy = _plain(cfg.strategy)
    return {
        "model": cfg.model.name,
        "weights": cfg.model.weights,
        "strategy": strategy_label(strategy, choices.get("strategy"), num_stages),
        "frozen_stages": effective_frozen_stages(strategy.get("frozen_stages"), num_stages),
        "optimizer": choices.get("optimizer") or "custom",
        "lr": float(cfg.optimizer.lr),
        "weight_decay": float(cfg.optimizer.get("weight_decay", 0.0)),
        "scheduler": choices.get("scheduler") or "none",
        "batch_size": cfg.data.batch_size,
        "image_size": image_size,
        "augment": cfg.data.augment,
        "max_epochs": cfg.trainer.max_epochs,
        "seed": cfg.seed,
        "trainable_params": trainable,
        "overrides": " ".join(overrides),
    }


def _plain(node: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)  # type: ignore[return-value]
