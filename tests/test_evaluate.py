"""Evaluate a checkpoint, load checkpoints safely, and the TensorBoard images of a training run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import run_cli
from transfer_lightning.analysis import ExampleSelector, build_report, classification_metrics
from transfer_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD, BatchPreprocessor
from transfer_lightning.run.checkpoint import load_classifier, preprocessor_for, read_checkpoint
from transfer_lightning.utils.errors import UserError


def _assert_valid_png(path: Path) -> None:
    assert path.is_file(), path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100


def test_evaluate_writes_report_and_images_beside_the_checkpoint(trained_run: Path, tmp_path: Path) -> None:
    checkpoint = trained_run / "checkpoints" / "best.ckpt"
    result = run_cli(
        f"ckpt_path={checkpoint}", "data=synthetic", "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path}",
        module="transfer_lightning.evaluate",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    folder = checkpoint.parent / "best_eval_test"
    report = json.loads((folder / "eval_report.json").read_text())
    summary = json.loads((trained_run / "run_summary.json").read_text())
    # the same checkpoint on the same test split: the training run's test accuracy
    assert report["accuracy"] == pytest.approx(summary["test_acc"])
    assert report["num_images"] == 32 and sum(map(sum, report["confusion_matrix"])) == 32
    assert set(report["per_class"]) == {"class_0", "class_1", "class_2", "class_3"}
    for name, row in report["per_class"].items():
        assert row["support"] == 8
        assert row["accuracy"] == pytest.approx(summary["test_per_class_acc"][name])
        assert set(row) >= {"precision", "recall", "f1"}
    matrix = report["confusion_matrix"]
    for pair in report["most_confused"]:
        true, predicted = (report["class_names"].index(pair[key]) for key in ("true", "predicted"))
        assert true != predicted and matrix[true][predicted] == pair["count"] > 0
    markdown = (folder / "eval_report.md").read_text()
    assert "## Per class" in markdown and "(confusion_matrix.png)" in markdown and "(predictions.png)" in markdown
    _assert_valid_png(folder / "confusion_matrix.png")
    _assert_valid_png(folder / "predictions.png")
    assert "Evaluation (test)" in result.stdout and "class_3" in result.stdout


def test_bad_checkpoint_on_the_command_line_is_one_line_and_exit_2(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"this is not a checkpoint")
    result = run_cli(
        f"ckpt_path={corrupt}", "data=synthetic", f"hydra.run.dir={tmp_path}", module="transfer_lightning.evaluate"
    )
    assert result.returncode == 2
    assert "cannot be loaded as a checkpoint: the file is not a PyTorch checkpoint" in result.stderr
    assert "weights_only" not in result.stderr  # what is wrong with the file, not torch's advice
    assert "Traceback" not in result.stderr + result.stdout


class _NotAllowed:
    """Pickled as an object: ``weights_only`` loading must refuse it."""


def _bad_checkpoints(tmp_path: Path, good: Path) -> dict[str, tuple[Path, str]]:
    paths = {
        name: tmp_path / f"{name}.ckpt" for name in ("text", "truncated", "state_dict", "other", "pickle", "target")
    }
    paths["text"].write_text("hello")
    paths["truncated"].write_bytes(good.read_bytes()[:100_000])
    checkpoint = torch.load(good, weights_only=True)
    torch.save({k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items()}, paths["state_dict"])
    torch.save(
        {"state_dict": checkpoint["state_dict"], "hyper_parameters": {"lr": 0.1, "backbone": "vit"}}, paths["other"]
    )
    torch.save({"state_dict": {}, "payload": _NotAllowed()}, paths["pickle"])
    checkpoint["transfer_lightning"]["strategy"]["_target_"] = "os.system"
    torch.save(checkpoint, paths["target"])
    return {
        "missing": (tmp_path / "nope.ckpt", "does not exist"),
        "text": (paths["text"], "not a PyTorch checkpoint"),
        "truncated": (paths["truncated"], "truncated or damaged"),
        "state_dict": (paths["state_dict"], "plain state dict"),
        "other": (paths["other"], "not a transfer_lightning checkpoint"),
        "pickle": (paths["pickle"], r"holds a pickled \S*_NotAllowed object"),
        "target": (paths["target"], "names 'os.system', which is not a freezing strategy of transfer_lightning"),
    }


@pytest.mark.parametrize("case", ["missing", "text", "truncated", "state_dict", "other", "pickle", "target"])
def test_checkpoint_that_is_not_ours_is_a_user_error(case: str, trained_run: Path, tmp_path: Path) -> None:
    path, message = _bad_checkpoints(tmp_path, trained_run / "checkpoints" / "best.ckpt")[case]
    with pytest.raises(UserError, match=message):
        load_classifier(path)


def test_checkpoint_rebuilds_the_trained_model_without_the_training_config(trained_run: Path) -> None:
    path = trained_run / "checkpoints" / "best.ckpt"
    module = load_classifier(path)
    stored = read_checkpoint(path)["state_dict"]
    assert not module.training and module.class_names == ["class_0", "class_1", "class_2", "class_3"]
    assert torch.equal(module.net.fc.weight, stored["net.fc.weight"])
    assert module.record.preprocessing.to_dict()["image_size"] == 32


def test_unnormalize_inverts_the_imagenet_normalisation() -> None:
    pixels = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    preprocessor = preprocessor_for({"image_size": 32, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)})
    normalised = preprocessor(pixels)
    assert torch.allclose(preprocessor.unnormalize(normalised), pixels.float() / 255, atol=1e-6)
    # the tutorial's img / 2 + 0.5 assumes mean = std = 0.5 and shows other colours
    assert (normalised / 2 + 0.5 - pixels.float() / 255).abs().max() > 0.1
    assert isinstance(preprocessor, BatchPreprocessor) and preprocessor.augmentation is None


def test_example_selector_shows_most_confident_mistakes_first_then_correct_ones() -> None:
    selector = ExampleSelector(size=4)
    logits = torch.tensor([[5.0, 0.0], [0.0, 1.0], [0.0, 9.0], [2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    targets = torch.tensor([1, 1, 0, 0, 0, 1])  # mistakes at 0 (conf high), 2 (highest), 4, 5
    for start in range(0, 6, 3):  # two batches: the selection spans batches
        images = torch.arange(start, start + 3).float().view(3, 1, 1, 1).expand(3, 3, 2, 2)
        selector.update(images, logits[start : start + 3], targets[start : start + 3])
    examples = selector.examples()
    assert examples.images[:, 0, 0, 0].tolist() == [2, 0, 4, 5]
    assert (examples.preds != examples.targets).all()
    assert examples.confidences.tolist() == sorted(examples.confidences.tolist(), reverse=True)


def test_report_gives_per_class_precision_recall_and_null_for_a_class_without_images() -> None:
    metrics = classification_metrics(3)
    metrics.update(torch.tensor([0, 0, 1, 1, 0]), torch.tensor([0, 0, 1, 0, 1]))
    report = build_report(metrics.compute(), ["a", "b", "c"], top_confused=5)
    assert report["accuracy"] == pytest.approx(3 / 5)
    assert report["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert report["per_class"]["a"]["recall"] == pytest.approx(2 / 3)
    assert report["per_class"]["b"]["recall"] == pytest.approx(1 / 2)
    assert report["per_class"]["c"]["accuracy"] is None and report["per_class"]["c"]["support"] == 0
    assert [(p["true"], p["predicted"], p["count"]) for p in report["most_confused"]] == [("a", "b", 1), ("b", "a", 1)]


def test_training_run_logs_images_per_class_lr_groups_and_hparams_to_tensorboard(trained_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(trained_run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    assert {"val/confusion_matrix", "test/confusion_matrix", "test/predictions"} <= set(tags["images"])
    assert all(image.width > 100 for image in events.Images("test/predictions"))
    for tag in ("val/acc_per_class/class_0", "test/acc_per_class/class_3", "lr-Adam/head", "val/acc_best", "test/acc"):
        assert tag in tags["scalars"], tag
    hparams = {
        tag: plugin_data_pb2.HParamsPluginData.FromString(content)
        for tag, content in events.PluginTagToContent("hparams").items()
    }
    metrics = {info.name.tag for info in hparams["_hparams_/experiment"].experiment.metric_infos}
    assert {"val/acc_best", "test/acc"} <= metrics
    session = hparams["_hparams_/session_start_info"].session_start_info.hparams
    assert session["strategy"].string_value == "feature_extract" and session["model"].string_value == "resnet18"
    final_test_acc = events.Scalars("test/acc")[-1].value
    summary = json.loads((trained_run / "run_summary.json").read_text())
    assert final_test_acc == pytest.approx(summary["test_acc"])
