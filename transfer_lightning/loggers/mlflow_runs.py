"""MLflow runs of this framework: one per training run, continued on resume, nested under a parent.

A *group* of jobs (a sweep; later any command that trains several runs) is one parent run whose
jobs are child runs (tag ``mlflow.parentRunId``). The helpers take a folder, not a sweep:

    parent = open_parent_run(group_folder, target, name="12-00-00", tags={...})   # get or create
    child_tags = parent_run_tags(group_folder, target)                            # for each job
    close_parent_run(group_folder, files=[...], metrics={...})                     # at the end

Each folder records its MLflow run in ``logger_runs.json`` (``loggers/record.py``): a resumed run,
a resumed sweep and ``export`` find it there. ``mlflow`` is imported only when a run uses it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from transfer_lightning.loggers.record import read_logger_runs, record_logger_run
from transfer_lightning.utils.errors import UserError, first_line

log = logging.getLogger(__name__)
KIND = "mlflow"
PARENT_TAG = "mlflow.parentRunId"
LOCAL_STORE = Path("outputs") / "mlflow.db"
_CONNECT_TIMEOUT_S = 5.0
_START_SERVER = "start one (scripts/mlflow-local.sh start prints its address) or set MLFLOW_TRACKING_URI"


@dataclass(frozen=True)
class MlflowTarget:
    """Where runs go: the tracking server (or local store) and the experiment."""

    tracking_uri: str
    experiment_name: str
    artifact_location: str | None = None

    @classmethod
    def from_config(cls, node: Mapping[str, Any]) -> MlflowTarget:
        """From a ``logger.mlflow`` node (``tracking_uri`` null: ``default_tracking_uri``); a local SQLite
        store keeps a new experiment's artifacts beside its database (``mlartifacts/``), not in ``./mlruns``."""
        uri = str(node.get("tracking_uri") or default_tracking_uri())
        location = node.get("artifact_location")
        if location is None and uri.startswith("sqlite:///"):
            location = str(Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts")
        return cls(uri, str(node.get("experiment_name") or "transfer_lightning"), location)


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else the local store ``outputs/mlflow.db`` under the working directory (beside
    the run folders). Not an interpolation in the YAML: a saved config may call no environment resolver."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{LOCAL_STORE.absolute()}"


def client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` for ``tracking_uri``, after checking that a server listens there."""
    check_reachable(tracking_uri)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri)


def check_reachable(tracking_uri: str) -> None:
    """An ``http(s)`` tracking URI must accept a connection within seconds; MLflow's own retries would
    take minutes to say that nothing listens there."""
    url = urlparse(tracking_uri)
    if url.scheme not in ("http", "https"):
        return
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise UserError(f"no MLflow server answers at {tracking_uri} ({error}); {_START_SERVER}") from error


def continued_run_id(folder: Path, target: MlflowTarget) -> str | None:
    """The MLflow run ``folder`` already logs to (a resumed run), or None for a new folder."""
    recorded = read_logger_runs(folder).get(KIND)
    if not recorded:
        return None
    if recorded["tracking_uri"] != target.tracking_uri:
        raise UserError(
            f"{folder} logs to MLflow run {recorded['run_id']} at {recorded['tracking_uri']}, but its MLflow "
            f"tracking URI is now {target.tracking_uri}; set MLFLOW_TRACKING_URI={recorded['tracking_uri']} to "
            "continue that run"
        )
    _existing_run(client(target.tracking_uri), recorded["run_id"], folder)
    return recorded["run_id"]


def record_run(folder: Path, target: MlflowTarget, run_id: str, experiment_id: str, log_model: Any) -> None:
    """Write the folder's MLflow entry (``logger_runs.json``): what resume and export read."""
    entry = {"tracking_uri": target.tracking_uri, "experiment_id": experiment_id, "run_id": run_id}
    record_logger_run(folder, KIND, {**entry, "log_model": bool(log_model)})


def open_parent_run(folder: Path, target: MlflowTarget, name: str, tags: Mapping[str, str]) -> str:
    """The parent run of the jobs written under ``folder``: the one recorded there (a resumed group,
    set running again), else a new one, recorded. Returns its run id."""
    mlflow = client(target.tracking_uri)
    recorded = read_logger_runs(folder).get(KIND)
    try:
        if recorded and recorded["tracking_uri"] == target.tracking_uri:
            _existing_run(mlflow, recorded["run_id"], folder)
            mlflow.update_run(recorded["run_id"], status="RUNNING")
            return recorded["run_id"]
        experiment_id = experiment_id_of(mlflow, target)
        run = mlflow.create_run(experiment_id, run_name=name, tags=dict(tags))
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - MlflowException or the HTTP error under it: one sentence
        raise UserError(f"MLflow at {target.tracking_uri} refused the parent run ({first_line(error)})") from error
    record_run(folder, target, run.info.run_id, experiment_id, log_model=False)
    log.info("MLflow parent run %s (%s) at %s", name, run.info.run_id, target.tracking_uri)
    return run.info.run_id


def parent_run_tags(folder: Path, target: MlflowTarget) -> dict[str, str]:
    """``{"mlflow.parentRunId": <id>}`` for a job of the group recorded in ``folder`` (empty when none is)."""
    recorded = read_logger_runs(folder).get(KIND)
    if not recorded or recorded["tracking_uri"] != target.tracking_uri:
        return {}
    return {PARENT_TAG: recorded["run_id"]}


def close_parent_run(folder: Path, files: Iterable[Path] = (), metrics: Mapping[str, float] | None = None) -> None:
    """Attach the group's report ``files`` and ``metrics`` to its parent run and mark it finished."""
    recorded = read_logger_runs(folder).get(KIND)
    if not recorded:
        return
    mlflow = client(recorded["tracking_uri"])
    for path in files:
        if Path(path).is_file():
            mlflow.log_artifact(recorded["run_id"], str(path))
    for key, value in (metrics or {}).items():
        mlflow.log_metric(recorded["run_id"], key, float(value))
    mlflow.set_terminated(recorded["run_id"], "FINISHED")


def log_export(checkpoint: Path, files: Iterable[Path]) -> str | None:
    """Log an export's files (``export/`` artifacts) to the MLflow run that wrote ``checkpoint``, when that
    run was configured with ``logger.mlflow.log_model=true``; returns the run id, or None when it was not.

    The run folder's record is data: its files go only to the tracking server this command would log to
    (``default_tracking_uri``), never to one that a file alone names."""
    folder = checkpoint.resolve().parent.parent
    recorded = read_logger_runs(folder).get(KIND) if checkpoint.resolve().parent.name == "checkpoints" else None
    if not recorded or not recorded.get("log_model"):
        return None
    if recorded["tracking_uri"] != default_tracking_uri():
        log.warning(
            "The export is not logged to MLflow: the run's MLflow run %s is at %s, this command's tracking URI is "
            "%s (set MLFLOW_TRACKING_URI=%s to log it there)",
            recorded["run_id"],
            recorded["tracking_uri"],
            default_tracking_uri(),
            recorded["tracking_uri"],
        )
        return None
    try:
        mlflow = client(recorded["tracking_uri"])
        for path in files:
            mlflow.log_artifact(recorded["run_id"], str(path), "export")
    except UserError as error:
        raise UserError(f"the export was written, but not logged to MLflow: {error}") from error
    except Exception as error:  # noqa: BLE001
        raise UserError(
            f"the export was written, but MLflow at {recorded['tracking_uri']} refused it ({first_line(error)})"
        ) from error
    return recorded["run_id"]


def experiment_id_of(mlflow: Any, target: MlflowTarget) -> str:
    """The id of ``target``'s experiment, created when missing (also by a concurrent job: then found)."""
    experiment = mlflow.get_experiment_by_name(target.experiment_name)
    if experiment is not None and experiment.lifecycle_stage != "deleted":
        return experiment.experiment_id
    try:
        return mlflow.create_experiment(target.experiment_name, artifact_location=target.artifact_location)
    except Exception:  # noqa: BLE001 - another job created it between the two calls
        experiment = mlflow.get_experiment_by_name(target.experiment_name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _existing_run(mlflow: Any, run_id: str, folder: Path) -> None:
    """``run_id`` is a live run on that server; a deleted or missing one is a ``UserError``."""
    try:
        run = mlflow.get_run(run_id)
    except Exception as error:  # noqa: BLE001 - MlflowException: RESOURCE_DOES_NOT_EXIST
        raise UserError(
            f"{folder} logs to MLflow run {run_id}, which the server does not have ({first_line(error)}); "
            f"remove {folder}/logger_runs.json to start a new MLflow run"
        ) from error
    if run.info.lifecycle_stage == "deleted":
        raise UserError(
            f"{folder} logs to MLflow run {run_id}, which was deleted; restore it in MLflow "
            f"(mlflow runs restore --run-id {run_id}) or remove {folder}/logger_runs.json to start a new one"
        )
