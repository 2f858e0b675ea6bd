"""The logger group: every logger gets what TensorBoard gets (CSV one row per epoch, W&B offline, MLflow
in a local store), a batch job's log closes each epoch with its numbers, and a sweep's jobs are named
by what they vary and nested under one MLflow parent run. Against a live MLflow server: test_mlflow.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import TINY, compose_config, run_cli
from tests.mlflow_checks import assert_run_matches_folder, mlflow_client
from transfer_lightning.loggers import build, mlflow_runs
from transfer_lightning.loggers.epoch_csv import EpochCSVLogger
from transfer_lightning.loggers.record import read_logger_runs, record_logger_run
from transfer_lightning.loggers.sweep import name_job_loggers
from transfer_lightning.utils.errors import UserError

EPOCHS = 3
# the line that closes an epoch in a log file: count and time, then the epoch's numbers
EPOCH_LINE = re.compile(
    r"Epoch (\d+): (\d+)/\2 batches \(100%\) in [^;]+; train loss ([\d.]+) acc ([\d.]+)%, "
    r"val loss ([\d.]+) acc ([\d.]+)% \(best ([\d.]+)%\), lr head ([\d.e+-]+)$",
    re.MULTILINE,
)


def wandb_offline_env(folder: Path) -> dict[str, str]:
    """W&B offline, its own files (settings, caches) under ``folder``: nothing leaves the machine or the test."""
    names = ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR")
    return {"WANDB_MODE": "offline", **{name: str(folder / name.lower()) for name in names}}


@pytest.fixture(scope="module")
def csv_wandb_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny run with ``logger=[csv,wandb]`` (W&B offline) through the real CLI: its folder and its log."""
    pytest.importorskip("wandb")
    folder = tmp_path_factory.mktemp("csv_wandb")
    run = folder / "run"
    result = run_cli(
        *TINY, f"trainer.max_epochs={EPOCHS}", "optimizer.lr=0.01", "logger=[csv,wandb]",
        f"hydra.run.dir={run}", f"paths.data_dir={folder / 'data'}", env=wandb_offline_env(folder),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return run, result.stdout + result.stderr


def test_csv_logger_writes_one_row_per_epoch_then_the_test_that_pandas_reads(csv_wandb_run) -> None:
    pandas = pytest.importorskip("pandas")
    run, _ = csv_wandb_run
    table = pandas.read_csv(run / "csv" / "metrics.csv")
    summary = json.loads((run / "run_summary.json").read_text())
    epochs, test = table[table["test/acc"].isna()], table[table["test/acc"].notna()]
    assert list(epochs["epoch"]) == list(range(EPOCHS))
    per_class = [f"val/acc_per_class/{name}" for name in summary["class_names"]]
    columns = ["train/loss_epoch", "train/acc", "val/loss", "val/acc", "val/acc_best", "lr-Adam/head", *per_class]
    assert epochs[columns].notna().all().all()  # every epoch's numbers in its one row
    assert "train/loss_step" not in table  # per-step points stay in TensorBoard
    assert epochs["val/acc_best"].iloc[-1] == pytest.approx(summary["best_val_acc"])
    assert len(test) == 1 and test["test/acc"].item() == pytest.approx(summary["test_acc"])


def test_a_log_file_closes_each_epoch_with_its_losses_accuracies_best_and_head_rate(csv_wandb_run) -> None:
    pandas = pytest.importorskip("pandas")
    run, log = csv_wandb_run  # the CLI's output is a pipe: no terminal, as under SLURM or nohup
    lines = EPOCH_LINE.findall(log)
    assert [int(line[0]) for line in lines] == list(range(EPOCHS)), log[-3000:]
    rows = pandas.read_csv(run / "csv" / "metrics.csv").set_index("epoch")
    for epoch, _, train_loss, train_acc, val_loss, val_acc, best, rate in lines:
        row = rows.loc[int(epoch)]  # the numbers the loggers got for that epoch
        assert float(train_loss) == pytest.approx(row["train/loss_epoch"], abs=5e-5)
        assert float(train_acc) == pytest.approx(100 * row["train/acc"], abs=5e-3)
        assert float(val_loss) == pytest.approx(row["val/loss"], abs=5e-5)
        assert float(val_acc) == pytest.approx(100 * row["val/acc"], abs=5e-3)
        assert float(best) == pytest.approx(100 * row["val/acc_best"], abs=5e-3)
        assert float(rate) == pytest.approx(row["lr-Adam/head"]) == 0.01


def wandb_records(path: Path) -> list:
    """The records of an offline W&B run file (``run-<id>.wandb``): W&B's LevelDB-style log of 32 KiB
    blocks (a 7-byte header per chunk: checksum, length, type), each record a protobuf ``Record``."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, records, chunks, position, block = path.read_bytes(), [], b"", 7, 32768
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        length, kind = int.from_bytes(data[position + 4 : position + 6], "little"), data[position + 6]
        chunks += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            records.append(Record.FromString(chunks))
            chunks = b""
    return records


def test_wandb_offline_run_folder_holds_params_every_epoch_figures_tags_and_summary(csv_wandb_run) -> None:
    run, _ = csv_wandb_run
    (offline,) = (run / "wandb").glob("offline-run-*")
    records = wandb_records(next(offline.glob("run-*.wandb")))
    summary = json.loads((run / "run_summary.json").read_text())

    (started, *_) = [record.run for record in records if record.WhichOneof("record_type") == "run"]
    assert started.display_name == f"{run.parent.name}/run" and started.run_id == read_logger_runs(run)["wandb"]["id"]
    config = {
        item.key: json.loads(item.value_json)
        for record in records
        if record.WhichOneof("record_type") == "config"
        for item in record.config.update
    }
    assert config["lr"] == 0.01 and config["max_epochs"] == str(EPOCHS) and config["strategy"] == summary["strategy"]
    assert config["tags/weights"] == "random init" and config["tags/run_folder"] == str(run.resolve())
    history = [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
        for record in records
        if record.WhichOneof("record_type") == "history"
    ]
    validation = [point for point in history if "val/acc" in point]
    assert [point["epoch"] for point in validation] == list(range(EPOCHS))
    assert validation[-1]["val/acc_best"] == pytest.approx(summary["best_val_acc"])
    assert all(f"val/acc_per_class/{name}" in validation[0] for name in summary["class_names"])
    (test,) = [point for point in history if "test/acc" in point]
    assert test["test/acc"] == pytest.approx(summary["test_acc"])

    images = offline / "files" / "media" / "images"
    assert len(list((images / "val").glob("confusion_matrix_*.png"))) == EPOCHS
    assert [path.name.split("_")[0] for path in sorted((images / "test").glob("*.png"))] == ["confusion", "predictions"]
    saved = [
        file.path for record in records if record.WhichOneof("record_type") == "files" for file in record.files.files
    ]
    assert "run_summary.json" in saved


@pytest.fixture(scope="module")
def mlflow_store_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run with ``logger=[tensorboard,mlflow]`` into a local MLflow store (SQLite, no server)."""
    pytest.importorskip("mlflow")
    folder = tmp_path_factory.mktemp("mlflow_store")
    run = folder / "run"
    result = run_cli(
        *TINY, "trainer.max_epochs=2", "optimizer.lr=0.01", "logger=[tensorboard,mlflow]",
        f"logger.mlflow.tracking_uri=sqlite:///{folder / 'mlflow.db'}", "logger.mlflow.log_model=true",
        f"hydra.run.dir={run}", f"paths.data_dir={folder / 'data'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def test_mlflow_run_holds_params_metric_histories_figures_summary_lineage_and_checkpoints(
    mlflow_store_run, tmp_path
) -> None:
    run = mlflow_store_run
    assert_run_matches_folder(run, epochs=2, lr=0.01, download_to=tmp_path)
    client, run_id = mlflow_client(run)
    checkpoints = {item.path for folder in ("best", "last") for item in client.list_artifacts(run_id, folder)}
    assert {"best/best.ckpt", "last/last.ckpt"} <= checkpoints  # logger.mlflow.log_model=true
    assert (run / "tensorboard").is_dir()  # beside TensorBoard, which still gets its own


def test_an_mlflow_server_that_does_not_answer_stops_the_run_at_once_in_one_line(tmp_path) -> None:
    pytest.importorskip("mlflow")
    port = _closed_port()
    result = run_cli(
        *TINY, "logger=[tensorboard,mlflow]", f"logger.mlflow.tracking_uri=http://127.0.0.1:{port}",
        f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path / 'data'}",
    )  # fmt: skip
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Error: no MLflow server answers at http://127.0.0.1:{port}") and "mlflow-local.sh" in last
    assert "Traceback" not in result.stderr and not (tmp_path / "data").exists()  # before any data was read


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:  # bound, then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_resumed_run_on_another_tracking_server_is_refused_naming_both(tmp_path) -> None:
    record_logger_run(tmp_path, "mlflow", {"tracking_uri": "http://old:5000", "run_id": "abc", "experiment_id": "1"})
    moved = mlflow_runs.MlflowTarget("http://new:5000", "transfer_lightning")
    with pytest.raises(UserError, match=r"MLflow run abc at http://old:5000, .* now http://new:5000; set MLFLOW_TRA"):
        mlflow_runs.continued_run_id(tmp_path, moved)


def test_a_logger_without_its_package_names_the_extra_that_installs_it(monkeypatch) -> None:
    cfg = compose_config([*TINY, "logger=wandb"])
    monkeypatch.setattr(build.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        UserError, match=r"WandbLogger needs the wandb package; pip install 'transfer_lightning\[wandb\]'"
    ):
        build.build_loggers(cfg.logger)


def test_sweep_jobs_are_named_by_their_values_and_nested_under_the_sweeps_mlflow_run(tmp_path) -> None:
    sweep, store = tmp_path / "12-00-00", f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_config(
        [*TINY, "logger=[tensorboard,mlflow,wandb]", f"logger.mlflow.tracking_uri={store}"],
        output_dir=str(sweep / "3"),
    )
    record_logger_run(sweep, "mlflow", {"tracking_uri": store, "run_id": "parent-id", "experiment_id": "1"})
    name_job_loggers(cfg, "lr=0.01 fs=5", sweep)
    assert cfg.logger.tensorboard.sub_dir == "lr=0.01 fs=5"
    assert cfg.logger.mlflow.run_name == "12-00-00/3 lr=0.01 fs=5"
    assert cfg.logger.mlflow.tags == {"mlflow.parentRunId": "parent-id"}
    assert (cfg.logger.wandb.name, cfg.logger.wandb.group) == ("12-00-00/3 lr=0.01 fs=5", f"{tmp_path.name}/12-00-00")


def test_epoch_csv_keeps_a_resumed_runs_earlier_epochs_and_updates_the_one_it_continues(tmp_path) -> None:
    first = EpochCSVLogger(tmp_path, name="csv", version="")
    first.log_metrics({"lr-SGD/head": 0.1}, step=0)  # logged as epoch 0 starts
    for epoch, accuracy in ((0, 0.5), (1, 0.6)):
        first.log_metrics({"val/acc": accuracy, "epoch": epoch}, step=4 * epoch + 3)
        first.log_metrics({"train/acc": accuracy, "train/loss_step": 9.0, "epoch": epoch}, step=4 * epoch + 3)
    first.finalize("success")
    resumed = EpochCSVLogger(tmp_path, name="csv", version="")  # continues epoch 1 (a mid-epoch checkpoint)
    resumed.log_metrics({"val/acc": 0.7, "epoch": 1}, step=7)
    resumed.log_metrics({"val/acc": 0.8, "epoch": 2}, step=11)
    resumed.log_metrics({"test/acc": 0.75, "epoch": 3}, step=12)
    resumed.finalize("success")
    lines = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    assert lines == [
        "epoch,step,lr-SGD/head,test/acc,train/acc,val/acc",
        "0,3,0.1,,0.5,0.5",
        "1,7,,,0.6,0.7",
        "2,11,,,,0.8",
        "3,12,,0.75,,",
    ]
