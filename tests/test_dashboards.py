"""What a user sees in TensorBoard and the reports: only measured scalars, typed HPARAMS with short
run names, figures that name their checkpoint, a sweep ranking, and the split really evaluated."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from tests.conftest import classifier_from_dicts, run_cli
from tests.test_image_folder import write_class_folders
from transfer_lightning import sweep_report
from transfer_lightning.analysis.examples import ExampleSelector
from transfer_lightning.callbacks import ConfusionMatrixImage, PredictionGridImage
from transfer_lightning.classifier import TransferClassifier
from transfer_lightning.data import SyntheticDataModule
from transfer_lightning.run.dashboard import short_run_name, strategy_label
from transfer_lightning.sweeps import heatmap
from transfer_lightning.sweeps.results import HEATMAP_PNG, LINE_PNG, SCATTER_PNG, SUMMARY_CSV

FREEZE = "transfer_lightning.strategies.FreezeStages"


def session_hparams(folder: Path) -> tuple[dict, list[str]]:
    """The HPARAMS columns (plus ``group_name``, the Trial ID) and metric names of one TensorBoard run."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = _events(folder)
    content = {
        tag: plugin_data_pb2.HParamsPluginData.FromString(data)
        for tag, data in events.PluginTagToContent("hparams").items()
    }
    start = content["_hparams_/session_start_info"].session_start_info
    typed = {key: getattr(value, value.WhichOneof("kind")) for key, value in start.hparams.items()}
    metrics = [info.name.tag for info in content["_hparams_/experiment"].experiment.metric_infos]
    return {**typed, "group_name": start.group_name}, metrics


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def test_run_logs_only_measured_points_typed_hparams_and_no_advertising(tiny_run_args, tmp_path: Path) -> None:
    result = run_cli(
        *tiny_run_args, "trainer.max_epochs=2", "trainer.limit_train_batches=2", "strategy=finetune",
        "strategy.frozen_stages=3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    events = _events(tmp_path / "run" / "tensorboard")

    val_steps = [event.step for event in events.Scalars("val/acc")]
    assert [event.step for event in events.Scalars("val/acc_best")] == val_steps  # no placeholder at step 0
    (test_point,) = events.Scalars("test/acc")  # one test, one point: no ramp from a 0.0 placeholder
    assert test_point.step > max(val_steps)
    summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    assert test_point.value == pytest.approx(summary["test_acc"])

    hparams, metrics = session_hparams(tmp_path / "run" / "tensorboard")
    assert metrics == ["val/acc_best", "test/acc"]
    assert hparams["strategy"] == "custom (frozen_stages=3)" == summary["strategy"]  # not "finetune"
    assert hparams["frozen_stages"] == "3" and hparams["batch_size"] == "16" and hparams["max_epochs"] == "2"
    assert hparams["weights"] == ""  # null: an empty cell, not "None"
    assert hparams["lr"] == pytest.approx(1e-3)  # real numbers stay numbers
    assert "strategy.frozen_stages=3" in hparams["overrides"] and "data=synthetic" in hparams["overrides"]
    assert hparams["group_name"] == ""  # a single run's Trial ID is its folder

    log = result.stdout + result.stderr
    assert "Tip:" not in log and "litlogger" not in log  # advertising
    assert "in eval mode at the start of training" not in log  # frozen BatchNorm stays in eval on purpose
    assert "Run folder:" in log  # ours
    assert "smaller than the logging interval" not in log  # 2 batches: the epoch's metrics are logged all the same


def test_strategy_label_follows_the_effective_frozen_stages() -> None:
    assert strategy_label({"_target_": FREEZE, "frozen_stages": 5}, "finetune") == "feature_extract"
    assert strategy_label({"_target_": FREEZE, "frozen_stages": 4}, "feature_extract") == "finetune"
    assert strategy_label({"_target_": FREEZE, "frozen_stages": 0}, None) == "full"
    assert strategy_label({"_target_": FREEZE, "frozen_stages": 2}, "finetune") == "custom (frozen_stages=2)"
    # presets say `all` / `all_but_last`: on an 8-stage backbone (efficientnet) 7 frozen stages is finetune
    assert strategy_label({"_target_": FREEZE, "frozen_stages": 7}, None, num_stages=8) == "finetune"
    assert strategy_label({"_target_": FREEZE, "frozen_stages": "all"}, None, num_stages=8) == "feature_extract"
    assert strategy_label({"_target_": FREEZE, "frozen_stages": 5}, None, num_stages=8) == "custom (frozen_stages=5)"
    gradual = {"_target_": "transfer_lightning.strategies.GradualUnfreeze", "head_epochs": 1}
    assert strategy_label(gradual, "gradual") == "gradual"


def test_short_run_names_keep_the_swept_keys_only_shortened() -> None:
    overrides = ["strategy=finetune", "optimizer.lr=0.01", "strategy.frozen_stages=5", "data=synthetic"]
    assert short_run_name(overrides, ["optimizer.lr", "strategy.frozen_stages"]) == "lr=0.01 fs=5"
    optuna = ["optimizer.lr=0.000123456789", "optimizer.weight_decay=1e-05", "model.name=resnet34", "data.name=x"]
    keys = ["optimizer.lr", "optimizer.weight_decay", "model.name", "data.name"]
    assert short_run_name(optuna, keys) == "lr=0.0001235 wd=1e-05 model.name=resnet34 data.name=x"
    assert short_run_name(["data.root=/a/b"], ["data.root"]) == "root=_a_b"  # one folder level, not three


def _head_only_module() -> TransferClassifier:
    """A random-init ResNet-18 of which only the 4-class head trains."""
    return classifier_from_dicts(
        model={"name": "resnet18", "weights": None},
        strategy={"_target_": FREEZE, "frozen_stages": 5},
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1},
        scheduler=None,
        class_names=[f"class_{i}" for i in range(4)],
        preprocessing={"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3},
    )


def _record_picture_titles(monkeypatch, writer_class) -> dict[str, list[str]]:
    """The title (the first text drawn) of each picture the figure callbacks send to TensorBoard, by tag."""
    from transfer_lightning.callbacks import confusion_matrix, prediction_grid

    titles: dict[str, list[str]] = {}
    drawn: list[str] = []
    for module, name in ((confusion_matrix, "confusion_matrix_figure"), (prediction_grid, "prediction_grid_figure")):

        def drawing(*args, _draw=getattr(module, name), **kwargs):
            picture = _draw(*args, **kwargs)
            drawn.append(picture.texts[0][0])
            return picture

        monkeypatch.setattr(module, name, drawing)

    def record_title(writer, tag, image, global_step=None, walltime=None, dataformats="CHW") -> None:
        assert image.ndim == 3 and dataformats == "HWC", (image.shape, dataformats)
        titles.setdefault(tag, []).append(drawn.pop())

    monkeypatch.setattr(writer_class, "add_image", record_title)
    return titles


def test_test_figures_name_the_checkpoint_they_come_from_not_the_last_epoch(tmp_path: Path, monkeypatch) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.tensorboard import SummaryWriter

    titles = _record_picture_titles(monkeypatch, SummaryWriter)
    datamodule = SyntheticDataModule(train_size=16, val_size=8, test_size=8, image_size=32, batch_size=8, num_workers=0)
    module = _head_only_module()
    every_epoch = ModelCheckpoint(dirpath=tmp_path, filename="e{epoch}", monitor="val/acc", mode="max", save_top_k=-1)
    trainer = L.Trainer(
        max_epochs=3, accelerator="cpu", logger=TensorBoardLogger(tmp_path), num_sanity_val_steps=0,
        callbacks=[every_epoch, ConfusionMatrixImage(), PredictionGridImage(size=8)],
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    first = tmp_path / "eepoch=0.ckpt"
    trainer.test(module, datamodule=datamodule, ckpt_path=str(first), verbose=False)

    score = float(every_epoch.best_k_models[str(first)])
    (matrix_title,) = titles["test/confusion_matrix"]
    (grid_title,) = titles["test/predictions"]
    for title in (matrix_title, grid_title):
        assert f"eepoch=0.ckpt (epoch 0, val/acc {score:.4g})" in title, title
    assert trainer.current_epoch == 3 and "epoch 3" not in matrix_title + grid_title
    assert titles["val/confusion_matrix"][-1].endswith("epoch 2")  # val figures: the epoch just run


def test_test_figures_name_the_val_split_when_the_data_has_no_test_split(tmp_path: Path, monkeypatch) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.tensorboard import SummaryWriter

    titles = _record_picture_titles(monkeypatch, SummaryWriter)
    datamodule = SyntheticDataModule(train_size=8, val_size=8, test_size=8, image_size=32, batch_size=8, num_workers=0)
    datamodule.setup("test")
    datamodule.splits.notes["test_split"] = "val"  # as an image folder without test/ records it
    module = _head_only_module()
    trainer = L.Trainer(
        accelerator="cpu", logger=TensorBoardLogger(tmp_path), enable_progress_bar=False,
        callbacks=[ConfusionMatrixImage(), PredictionGridImage(size=8)], enable_model_summary=False,
    )  # fmt: skip
    trainer.test(module, datamodule=datamodule, verbose=False)
    titles = {tag: drawn[-1] for tag, drawn in titles.items()}
    assert titles["test/predictions"].startswith("val, the weights in memory"), titles
    assert titles["test/confusion_matrix"].startswith("val confusion matrix, the weights in memory"), titles


def test_grid_shows_mistakes_first_then_the_most_confident_correct_example_of_each_class() -> None:
    selector = ExampleSelector(size=6)
    # split order: every class-0 image first (all correct), then the others; one mistake at the end
    targets = torch.tensor([0] * 8 + [1, 1, 2, 2, 3, 3] + [2])
    confidence = torch.tensor([0.9] * 8 + [0.5, 0.7, 0.6, 0.4, 0.8, 0.3] + [0.95])
    preds = targets.clone()
    preds[-1] = 0
    logits = torch.zeros(len(targets), 4)  # softmax gives the predicted class exactly `confidence`
    logits[torch.arange(len(targets)), preds] = torch.log(3 * confidence / (1 - confidence))
    for start in range(0, len(targets), 5):
        part = slice(start, start + 5)
        selector.update(torch.rand(len(targets[part]), 3, 4, 4), logits[part], targets[part])

    examples = selector.examples()
    assert examples.targets.tolist()[0] == 2 and examples.preds.tolist()[0] == 0  # the mistake first
    correct = examples.targets[1:].tolist()
    assert correct[:4] == [0, 1, 2, 3]  # one per class before a second of any class
    by_class = dict(zip(correct[:4], examples.confidences[1:5].tolist(), strict=True))
    assert by_class[1] == pytest.approx(0.7, abs=1e-4) and by_class[2] == pytest.approx(0.6, abs=1e-4)
    assert by_class[3] == pytest.approx(0.8, abs=1e-4)  # each class's most confident correct example


def _fake_sweep(root: Path, jobs: list[tuple[dict[str, str], dict | None]]) -> Path:
    for number, (values, summary) in enumerate(jobs):
        folder = root / str(number)
        (folder / ".hydra").mkdir(parents=True)
        overrides = ["strategy=finetune", *(f"{key}={value}" for key, value in values.items())]
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        if summary is not None:
            (folder / "run_summary.json").write_text(json.dumps(summary))
    return root


def _done(val: float, test: float, seconds: float) -> dict:
    return {"status": "completed", "best_val_acc": val, "test_acc": test, "epochs": 3, "wall_time_s": seconds}


def test_sweep_report_prints_the_ranking_and_the_winner_and_rounds_the_csv(tmp_path: Path, capsys) -> None:
    sweep = _fake_sweep(
        tmp_path / "sweep",
        [
            ({"optimizer.lr": "0.01", "strategy.frozen_stages": "5"}, _done(0.4999999701976776, 0.458333343, 12.345)),
            ({"optimizer.lr": "0.01", "strategy.frozen_stages": "4"}, _done(0.71875, 0.6875, 20.0)),
            ({"optimizer.lr": "0.001", "strategy.frozen_stages": "5"}, {"status": "failed", "error": "boom"}),
            ({"optimizer.lr": "0.001", "strategy.frozen_stages": "4"}, None),
        ],
    )
    assert sweep_report.main([str(sweep)]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    header = next(index for index, line in enumerate(lines) if line.startswith("rank"))
    assert lines[header].split() == [
        "rank", "job", "optimizer.lr", "strategy.frozen_stages", "best", "val", "acc", "test", "acc", "epochs",
        "wall", "time", "status",
    ]  # fmt: skip
    assert lines[header + 1].split() == ["1", "1", "0.01", "4", "71.88%", "68.75%", "3", "20.0", "s", "completed"]
    assert lines[header + 2].split() == ["2", "0", "0.01", "5", "50.00%", "45.83%", "3", "12.3", "s", "completed"]
    assert lines[header + 3].split() == ["-", "2", "0.001", "5", "failed"]
    assert lines[header + 4].split() == ["-", "3", "0.001", "4", "incomplete"]
    assert "Winner: job 1, val acc 71.88%" in printed
    assert "python -m transfer_lightning strategy=finetune optimizer.lr=0.01 strategy.frozen_stages=4" in lines

    with (sweep / SUMMARY_CSV).open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["job"], row["best_val_acc"], row["test_acc"], row["wall_time_s"]) for row in rows[:2]] == [
        ("1", "0.7188", "0.6875", "20.0"),
        ("0", "0.5", "0.4583", "12.3"),
    ]
    assert (sweep / HEATMAP_PNG).read_bytes()[:4] == b"\x89PNG"


def test_a_sweep_of_one_key_gets_a_line_plot(tmp_path: Path) -> None:
    sweep = _fake_sweep(
        tmp_path / "sweep",
        [({"optimizer.weight_decay": value}, _done(acc, acc, 1.0)) for value, acc in (("0.1", 0.3), ("0.01", 0.6))],
    )
    assert sweep_report.main([str(sweep)]) == 0
    assert (sweep / LINE_PNG).read_bytes()[:4] == b"\x89PNG" and not (sweep / HEATMAP_PNG).exists()
    assert f"]({LINE_PNG})" in (sweep / "sweep_report.md").read_text()


OPTUNA_DRAWS = [  # three trials of conf/hparams_search/optuna.yaml: continuous values, 16 digits
    ({"optimizer.lr": "0.0015676677195506068", "optimizer.weight_decay": "0.0007257005721594283",
      "strategy.frozen_stages": "3"}, _done(0.25, 0.25, 11.4)),
    ({"optimizer.lr": "0.0015119336467641006", "optimizer.weight_decay": "4.9501595537331986e-05",
      "strategy.frozen_stages": "3"}, _done(0.5, 0.375, 7.7)),
    ({"optimizer.lr": "0.0005627932047415167", "optimizer.weight_decay": "0.0036905577292137633",
      "strategy.frozen_stages": "5"}, {"status": "failed", "error": "boom"}),
]  # fmt: skip


def test_an_optuna_sweep_gets_a_scatter_plot_and_its_values_to_four_significant_digits(tmp_path, capsys) -> None:
    sweep = _fake_sweep(tmp_path / "sweep", OPTUNA_DRAWS)
    assert sweep_report.main([str(sweep)]) == 0
    assert (sweep / SCATTER_PNG).read_bytes()[:4] == b"\x89PNG" and not (sweep / HEATMAP_PNG).exists()
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"Sweep {sweep}: 3 jobs, best val accuracy first" and printed.count(printed[0]) == 1
    assert printed[2].split()[:5] == ["1", "1", "0.001512", "4.95e-05", "3"]
    report = (sweep / "sweep_report.md").read_text()
    assert "| 1 | 0.001512 | 4.95e-05 | 3 | completed |" in report and f"]({SCATTER_PNG})" in report
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    assert not any("0.0015119336467641006" in row for row in rows)  # tables round ...
    assert "optimizer.lr=0.0015119336467641006" in report  # ... the command to re-run the winner does not


def test_a_grid_sweep_keeps_its_heatmap_with_short_tick_labels(tmp_path, monkeypatch) -> None:
    jobs = [({"optimizer.lr": lr, "optimizer.weight_decay": wd}, _done(0.5, 0.5, 1.0))
            for lr in ("0.00012345678901234", "0.001") for wd in ("1e-06", "0.0001")]  # fmt: skip
    sweep = _fake_sweep(tmp_path / "sweep", jobs)
    figures = []
    monkeypatch.setattr(heatmap.plt, "close", figures.append)
    assert sweep_report.main([str(sweep)]) == 0
    assert (sweep / HEATMAP_PNG).is_file() and not (sweep / SCATTER_PNG).exists()
    axes = figures[0].axes[0]
    assert [label.get_text() for label in axes.get_yticklabels()] == ["0.0001235", "0.001"]
    assert [label.get_text() for label in axes.get_xticklabels()] == ["1e-06", "0.0001"]


def test_evaluate_on_data_without_a_test_split_names_the_val_split_everywhere(trained_run: Path, tmp_path: Path):
    root = tmp_path / "images"
    write_class_folders(root, {f"class_{i}": 5 for i in range(4)})
    checkpoint = trained_run / "checkpoints" / "best.ckpt"
    result = run_cli(
        f"ckpt_path={checkpoint}", "data=image_folder", f"data.root={root}", "data.num_workers=0",
        "trainer.accelerator=cpu", f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'eval'}",
        module="transfer_lightning.evaluate",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    folder = checkpoint.parent / "best_eval_val"
    report = json.loads((folder / "eval_report.json").read_text())
    assert report["context"]["split"] == "val" and report["num_images"] == 4  # val_fraction 0.2 of 20
    assert (folder / "eval_report.md").read_text().startswith("# Evaluation on the val split")
    assert "Evaluation (val)" in result.stdout and "no test split" in result.stdout + result.stderr
