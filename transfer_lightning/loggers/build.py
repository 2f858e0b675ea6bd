"""The ``logger`` config group as Lightning loggers: ``logger=tensorboard`` (default), ``csv``,
``mlflow``, ``wandb``, or several at once: ``logger=[tensorboard,mlflow]``.

Each option is one named node (``logger.tensorboard``, ``logger.mlflow``, ...) built by its
``_target_``. A run folder's server-side runs are named like the folder and recorded in it
(``logger_runs.json``), so ``resume=<run folder>`` continues them instead of opening new ones.
An MLflow run is opened here, before any data is read: a server that does not answer stops the
run at once.
"""

from __future__ import annotations

import importlib.util
import logging
import secrets
import sys
from pathlib import Path
from typing import Any

from hydra.utils import get_class, instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import Logger, MLFlowLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from transfer_lightning.loggers import mlflow_runs
from transfer_lightning.loggers.nodes import folder_run_name, logger_nodes
from transfer_lightning.loggers.record import read_logger_runs, record_logger_run
from transfer_lightning.utils.errors import UserError, first_line

log = logging.getLogger(__name__)
# the package each server logger needs, and the extra that installs it
_PACKAGES = {MLFlowLogger: ("mlflow", "mlflow"), WandbLogger: ("wandb", "wandb")}


def build_loggers(cfg: DictConfig | None, run_dir: Path | None = None) -> list[Logger]:
    """One Lightning logger per node of ``cfg`` (``cfg.logger``). ``run_dir``: the run folder, which names
    and records the MLflow and W&B runs (without it they are built exactly as configured)."""
    return [_build(node, run_dir) for node in logger_nodes(cfg).values()]


def _build(node: DictConfig, run_dir: Path | None) -> Logger:
    cls = get_class(node["_target_"])
    for kind, (module, extra) in _PACKAGES.items():
        if issubclass(cls, kind) and importlib.util.find_spec(module) is None:
            raise UserError(
                f"the {cls.__name__} needs the {module} package; pip install 'transfer_lightning[{extra}]' "
                f"(or: pip install {module}), or choose another logger (logger=tensorboard)"
            )
    if run_dir is not None and issubclass(cls, MLFlowLogger):
        return _build_mlflow(node, run_dir)
    if run_dir is not None and issubclass(cls, WandbLogger):
        return _build_wandb(node, run_dir)
    return instantiate(node, _recursive_=False, _convert_="all")


def _build_mlflow(node: DictConfig, run_dir: Path) -> MLFlowLogger:
    settings: dict[str, Any] = OmegaConf.to_container(node, resolve=True)  # type: ignore[assignment]
    target = mlflow_runs.MlflowTarget.from_config(settings)
    arguments = {"run_name": settings.get("run_name") or folder_run_name(run_dir), "tracking_uri": target.tracking_uri}
    arguments["artifact_location"] = target.artifact_location
    if rank_zero_only.rank == 0:  # the other processes of a DDP run log nothing
        mlflow_runs.check_reachable(target.tracking_uri)
        arguments["run_id"] = settings.get("run_id") or mlflow_runs.continued_run_id(run_dir, target)
    logger = instantiate(node, _recursive_=False, _convert_="all", **arguments)
    if rank_zero_only.rank != 0:
        return logger
    try:
        run_id, experiment_id = logger.run_id, logger.experiment_id  # opens (or reopens) the run now
    except Exception as error:  # noqa: BLE001 - MlflowException or the HTTP error under it: one sentence
        raise UserError(
            f"MLflow at {target.tracking_uri} refused the run ({first_line(error)}); check logger.mlflow.* "
            "or MLFLOW_TRACKING_URI"
        ) from error
    mlflow_runs.record_run(run_dir, target, run_id, experiment_id, settings.get("log_model"))
    continued = "continuing" if arguments["run_id"] else "new"
    log.info("MLflow run %s (%s, %s) at %s", arguments["run_name"], run_id, continued, target.tracking_uri)
    return logger


def _build_wandb(node: DictConfig, run_dir: Path) -> WandbLogger:
    recorded = read_logger_runs(run_dir).get("wandb") or {}
    run_id = node.get("id") or recorded.get("id") or secrets.token_hex(4)
    name = node.get("name") or folder_run_name(run_dir)
    logger = instantiate(node, _recursive_=False, _convert_="all", name=name, id=run_id)
    if rank_zero_only.rank == 0:
        record_logger_run(run_dir, "wandb", {"project": logger.name, "id": run_id})
    return logger


def finish_logger_runs(failed: bool = False) -> None:
    """End the process's W&B run, if one is open: W&B keeps one run per process, and the next job of a
    sweep run in this process would otherwise log into it. (MLflow runs end with Lightning's ``finalize``.)"""
    wandb = sys.modules.get("wandb")  # imported only by a WandbLogger: nothing to end without one
    if wandb is not None and wandb.run is not None:
        wandb.run.finish(exit_code=1 if failed else 0)
