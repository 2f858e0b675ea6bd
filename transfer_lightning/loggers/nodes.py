"""The ``logger`` config group's nodes by name, and run names (omegaconf only: the command line's checks import this)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

SINGLE = "logger"  # the name of a lone node with its own _target_


def logger_nodes(cfg: DictConfig | None) -> dict[str, DictConfig]:
    """``cfg.logger``'s loggers by name (``tensorboard``, ``mlflow``, ...). A single node with a ``_target_``
    (a run configured before the logger group took several) is named ``logger``. ``logger.<name>=null``
    switches one off."""
    if not cfg:
        return {}
    if "_target_" in cfg:
        return {SINGLE: cfg}
    return {str(name): node for name, node in cfg.items() if node is not None}


def folder_run_name(folder: Path, label: str = "") -> str:
    """A server-side run named like its folder: ``<date>/<time>`` (a sweep job: ``<time>/<job>``), then ``label``."""
    return f"{folder.parent.name}/{folder.name}" + (f" {label}" if label else "")
