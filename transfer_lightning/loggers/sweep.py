"""A sweep's loggers: each job's run named by the values it varies, and in MLflow one parent run
(named like the sweep folder) whose child runs are the jobs.

``sweeps/callback.py`` opens the parent before the first job and closes it with the sweep's report;
``sweeps/resume.py`` names each job's runs before its loggers are built.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict

from transfer_lightning.loggers import mlflow_runs
from transfer_lightning.loggers.nodes import SINGLE, folder_run_name, logger_nodes


def name_job_loggers(cfg: DictConfig, label: str, sweep_dir: Path) -> None:
    """Set, in ``cfg.logger``, what ties this job's runs to the sweep: TensorBoard's sub-folder ``label``
    (``lr=0.01 fs=5``: TensorBoard lists the jobs by it); MLflow's and W&B's run name (``<time>/<job>
    label``, unless set); the MLflow parent run (tag ``mlflow.parentRunId``); the W&B group (the sweep)."""
    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

    run_name = folder_run_name(Path(cfg.paths.output_dir), label)
    for name, node in logger_nodes(cfg.get("logger")).items():
        kind = get_class(node["_target_"])
        settings: dict[str, Any] = {}
        if issubclass(kind, TensorBoardLogger):
            settings["sub_dir"] = label
        elif issubclass(kind, MLFlowLogger):
            parent = mlflow_runs.parent_run_tags(sweep_dir, mlflow_runs.MlflowTarget.from_config(node))
            settings["run_name"] = node.get("run_name") or run_name
            settings["tags"] = {**(OmegaConf.to_container(node.tags) if node.get("tags") else {}), **parent}
        elif issubclass(kind, WandbLogger):
            settings["name"] = node.get("name") or run_name
            settings["group"] = node.get("group") or folder_run_name(sweep_dir)
        with open_dict(cfg):
            for key, value in settings.items():
                node_path = "logger" if name == SINGLE else f"logger.{name}"
                OmegaConf.update(cfg, f"{node_path}.{key}", value, merge=False, force_add=True)


def open_sweep_parent(config: DictConfig) -> str | None:
    """The sweep's MLflow parent run (``logger`` includes ``mlflow``), opened, or reopened for a resumed
    sweep, before the first job starts; its id (None without an MLflow logger)."""
    node = _mlflow_node(config)
    if node is None:
        return None
    sweep_dir = Path(str(config.hydra.sweep.dir))
    tags = {"sweep_folder": str(sweep_dir.resolve()), "sweep_overrides": " ".join(config.hydra.overrides.task)}
    target = mlflow_runs.MlflowTarget.from_config(node)
    return mlflow_runs.open_parent_run(sweep_dir, target, folder_run_name(sweep_dir), tags)


def close_sweep_parent(config: DictConfig, report: Iterable[Path], best_val_acc: float | None) -> None:
    """Attach the sweep's report files and best val accuracy to its parent run and mark it finished."""
    if _mlflow_node(config) is None:
        return
    metrics = {"val/acc_best": best_val_acc} if best_val_acc is not None else {}
    mlflow_runs.close_parent_run(Path(str(config.hydra.sweep.dir)), report, metrics)


def _mlflow_node(config: DictConfig) -> DictConfig | None:
    from lightning.pytorch.loggers import MLFlowLogger

    nodes = logger_nodes(config.get("logger")).values()
    return next((node for node in nodes if issubclass(get_class(node["_target_"]), MLFlowLogger)), None)
