"""Runs, a resumed run, a sweep and an export logged to a live MLflow tracking server (``make test-mlflow``
starts one with ``scripts/mlflow-local.sh``), checked through the MLflow client.

Skipped unless ``TL_MLFLOW_TESTS=1`` (set by ``make test-mlflow``; by hand: start the server, export its
``MLFLOW_TRACKING_URI`` and ``TL_MLFLOW_TESTS=1``), so ``make test`` stays fast (tests/test_loggers.py
checks the same run against a local MLflow store); with it set, a server that does not answer fails them.
Each session logs into its own experiment, so the tests can run again against the same server.
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.conftest import TINY, run_cli
from tests.mlflow_checks import assert_run_matches_folder, mlflow_client
from transfer_lightning.loggers.record import read_logger_runs

SERVER = os.environ.get("MLFLOW_TRACKING_URI", "")


pytestmark = [
    pytest.mark.mlflow,
    pytest.mark.skipif(os.environ.get("TL_MLFLOW_TESTS") != "1", reason="no MLflow test server (make test-mlflow)"),
]


@pytest.fixture(autouse=True, scope="module")
def _server_answers() -> None:
    assert SERVER.startswith("http"), f"MLFLOW_TRACKING_URI={SERVER!r}: export the test server's address"
    urllib.request.urlopen(f"{SERVER}/health", timeout=10).close()  # raises when nothing answers


EXPERIMENT = f"tl-tests-{uuid.uuid4().hex[:8]}"
ON_SERVER = [*TINY, "logger=[tensorboard,mlflow]", f"logger.mlflow.experiment_name={EXPERIMENT}"]


def train(*overrides: str, folder: Path, env: dict | None = None):
    return run_cli(*ON_SERVER, *overrides, f"paths.data_dir={folder / 'data'}", env=env)


def test_a_run_logs_params_metric_histories_figures_and_artifacts_to_the_server(tmp_path) -> None:
    run = tmp_path / "run"
    result = train("trainer.max_epochs=3", "optimizer.lr=0.01", "logger.mlflow.log_model=true",
                   f"hydra.run.dir={run}", folder=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_logger_runs(run)["mlflow"]["tracking_uri"] == SERVER
    assert_run_matches_folder(run, epochs=3, lr=0.01, download_to=tmp_path / "downloaded")

    exported = run_cli(
        f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", "format=state_dict", f"output_dir={tmp_path / 'export'}",
        f"hydra.run.dir={tmp_path / 'export_run'}", module="transfer_lightning.export",
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    client, run_id = mlflow_client(run)
    artifacts = {item.path for folder in ("best", "export") for item in client.list_artifacts(run_id, folder)}
    assert {"best/best.ckpt", "export/best.pth", "export/best.pth.json"} <= artifacts  # log_model=true


def test_a_resumed_run_continues_its_mlflow_run(tmp_path) -> None:
    # the first process trains epoch 0 and stops; resume=<run folder> trains epochs 1 and 2 and tests
    # (a run killed mid-way resumes the same way; a test-only kill hook in the run's saved config
    # would be refused on resume, as any class a file names outside the allowlist: config/trust.py)
    run = tmp_path / "run"
    first = train("trainer.max_epochs=1", "test=false", f"hydra.run.dir={run}", folder=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    client, first_id = mlflow_client(run)
    assert len(client.get_metric_history(first_id, "val/acc")) == 1

    resumed = run_cli(f"resume={run}", "trainer.max_epochs=3", "test=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _, run_id = mlflow_client(run)
    assert run_id == first_id  # continued, not a new run
    experiment = client.get_experiment_by_name(EXPERIMENT)
    named = client.search_runs([experiment.experiment_id], f"attributes.run_name = '{run.parent.name}/run'")
    assert [found.info.run_id for found in named] == [run_id]
    assert_run_matches_folder(run, epochs=3, lr=0.001, download_to=tmp_path / "downloaded")
    steps = [point.step for point in client.get_metric_history(run_id, "val/acc")]
    assert len(steps) == 3 and steps == sorted(set(steps))  # one series across both processes
    run_data = client.get_run(run_id).data
    assert run_data.params["max_epochs"] == "1" and run_data.tags["resumed.max_epochs"] == "3"


def test_a_sweep_is_a_parent_run_with_its_jobs_as_child_runs(tmp_path) -> None:
    sweep = tmp_path / "12-00-00"
    result = run_cli(
        "-m", *ON_SERVER, "trainer.max_epochs=2", "optimizer.lr=0.01,0.001",
        f"hydra.sweep.dir={sweep}", f"paths.data_dir={tmp_path / 'data'}", timeout=900,
    )  # fmt: skip  # two jobs in one process: past 300 s on a loaded 2-core machine
    assert result.returncode == 0, result.stderr[-3000:]
    client, parent_id = mlflow_client(sweep)
    parent = client.get_run(parent_id)
    assert parent.info.run_name == f"{tmp_path.name}/12-00-00" and parent.info.status == "FINISHED"
    assert {item.path for item in client.list_artifacts(parent_id)} >= {"sweep_summary.csv", "sweep_report.md"}

    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    names = sorted(child.info.run_name for child in children)
    assert names == ["12-00-00/0 lr=0.01", "12-00-00/1 lr=0.001"]
    for job in ("0", "1"):
        assert_run_matches_folder(sweep / job, epochs=2, lr=(0.01, 0.001)[int(job)], download_to=tmp_path / job)
    best = max(json.loads((sweep / job / "run_summary.json").read_text())["best_val_acc"] for job in ("0", "1"))
    assert parent.data.metrics["val/acc_best"] == best
