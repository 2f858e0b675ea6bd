"""What every logger gets from a run besides its metrics: the hyperparameters and the weights' lineage
when training starts, ``run_summary.json`` when it ends (figures: ``callbacks/figure_logging.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import Logger

from transfer_lightning.loggers.sinks import log_file, log_params, set_tags
from transfer_lightning.models.lineage import describe_lineage
from transfer_lightning.run.dashboard import hparam_value


@rank_zero_only
def publish_run_start(
    loggers: list[Logger], hparams: Mapping[str, Any], lineage: dict[str, Any] | None, run_dir: Path
) -> None:
    """``hparams``: the HPARAMS columns (``run/dashboard.py``), flat and written as TensorBoard shows
    them; ``lineage``: where the weights came from (``models/lineage.py``), as tags."""
    log_params(loggers, {key: hparam_value(value) for key, value in hparams.items()})
    set_tags(loggers, {**lineage_tags(lineage), "run_folder": str(Path(run_dir).resolve())})


@rank_zero_only
def publish_run_end(loggers: list[Logger], summary: Path) -> None:
    """``run_summary.json`` to every logger that keeps files (the local ones have it beside them)."""
    log_file(loggers, summary)


def lineage_tags(lineage: dict[str, Any] | None) -> dict[str, str]:
    """``weights``: the whole chain in one line; ``weights.0``, ``weights.1``, ...: each link, newest first."""
    tags = {"weights": describe_lineage(lineage)}
    link, index = lineage, 0
    while link:
        tags[f"weights.{index}"] = describe_lineage({**link, "parent": None})
        link, index = link.get("parent"), index + 1
    return tags
