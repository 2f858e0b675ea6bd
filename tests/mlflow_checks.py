"""What an MLflow run of a run folder must hold, read back through the MLflow client: shared by the
local-store test (tests/test_loggers.py) and the tests against a live server (tests/test_mlflow.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transfer_lightning.loggers.record import read_logger_runs
from transfer_lightning.models.lineage import describe_lineage

# every epoch-level series a run logs (per-class accuracy too), one point per epoch
EPOCH_SERIES = ("train/loss_epoch", "train/acc", "val/loss", "val/acc", "val/acc_best")


def mlflow_client(run_dir: Path) -> tuple[Any, str]:
    """The client of the tracking server ``run_dir`` recorded, and its MLflow run id."""
    from mlflow.tracking import MlflowClient

    recorded = read_logger_runs(run_dir)["mlflow"]
    return MlflowClient(recorded["tracking_uri"]), recorded["run_id"]


def image_keys(client: Any, run_id: str) -> list[str]:
    """The keys of the run's stepped images, one entry per logged image (``val/confusion_matrix`` per epoch)."""
    names = [Path(item.path).name for item in client.list_artifacts(run_id, "images")]
    return sorted(name.split("+")[0].replace("~", "/") for name in names if name.endswith(".png"))


def artifact_text(client: Any, run_id: str, path: str, folder: Path) -> str:
    return Path(client.download_artifacts(run_id, path, str(folder))).read_text()


def assert_run_matches_folder(run_dir: Path, epochs: int, lr: float, download_to: Path) -> Any:
    """The MLflow run of ``run_dir`` is named like it and holds its hyperparameters, one point per epoch of
    every epoch-level metric, the test's metrics, the figures, ``run_summary.json`` and the lineage tags."""
    client, run_id = mlflow_client(run_dir)
    run = client.get_run(run_id)
    summary = json.loads((run_dir / "run_summary.json").read_text())
    assert run.info.run_name.startswith(f"{run_dir.parent.name}/{run_dir.name}")
    assert run.info.status == "FINISHED"

    params = run.data.params
    assert params["model"] == summary["model"] and params["strategy"] == summary["strategy"]
    # MLflow keeps a parameter's first value: a resume that trained longer tags its own (sinks.py)
    assert str(epochs) in (params["max_epochs"], run.data.tags.get("resumed.max_epochs"))
    assert float(params["lr"]) == lr
    assert params["weights"] == ""  # null reads as an empty cell, as in TensorBoard's HPARAMS

    classes = summary["class_names"]
    series = [*EPOCH_SERIES, *(f"val/acc_per_class/{name}" for name in classes)]
    for key in series:
        steps = [point.step for point in client.get_metric_history(run_id, key)]
        assert len(steps) == epochs and steps == sorted(set(steps)), (key, steps)
    # the rate is logged as an epoch starts: a run killed right then logs that epoch's again when resumed
    assert len({point.step for point in client.get_metric_history(run_id, "lr-Adam/head")}) == epochs
    (best,) = [point.value for point in client.get_metric_history(run_id, "val/acc_best")][-1:]
    assert best == summary["best_val_acc"]
    (test,) = client.get_metric_history(run_id, "test/acc")
    assert test.value == summary["test_acc"]
    assert [client.get_metric_history(run_id, f"test/acc_per_class/{name}")[0].value for name in classes] == [
        summary["test_per_class_acc"][name] for name in classes
    ]

    figures = image_keys(client, run_id)
    assert figures.count("val/confusion_matrix") == epochs
    assert figures.count("test/confusion_matrix") == 1 and figures.count("test/predictions") == 1
    assert json.loads(artifact_text(client, run_id, "run_summary.json", download_to)) == summary

    tags = run.data.tags
    assert tags["weights"] == describe_lineage(summary["weights"]) and tags["weights.0"] == tags["weights"]
    assert tags["run_folder"] == str(run_dir.resolve())
    return run
