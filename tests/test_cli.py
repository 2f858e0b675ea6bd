"""The real CLI in a subprocess: a tiny end-to-end run and the error paths a user hits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY, run_cli


def test_tiny_run_writes_summary_checkpoints_config_and_tensorboard_events(tiny_run_args, tmp_path) -> None:
    result = run_cli(*tiny_run_args, "strategy=finetune", "trainer.max_epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    summary = json.loads((run / "run_summary.json").read_text())
    for key in (
        "model",
        "weights",
        "strategy",
        "frozen_stages",
        "params",
        "epochs",
        "best_val_acc",
        "test_acc",
        "test_per_class_acc",
        "device",
        "best_ckpt",
        "wall_time_s",
    ):
        assert key in summary, key
    assert summary["strategy"] == "finetune" and summary["frozen_stages"] == 4
    assert summary["epochs"] == 2 and summary["status"] == "completed"
    # resnet18 with a 4-class head: layer4 (8,393,728) + fc (512 x 4 + 4) train, stem..layer3 are frozen
    assert summary["params"] == {"trainable": 8_393_728 + 2_052, "frozen": 11_176_512 - 8_393_728}
    per_class = summary["test_per_class_acc"]
    assert set(per_class) == {"class_0", "class_1", "class_2", "class_3"}
    # 32 test images, 8 per class: the accuracy is a count of 32 and the mean of the per-class ones
    assert (summary["test_acc"] * 32) == pytest.approx(round(summary["test_acc"] * 32), abs=1e-6)
    assert summary["test_acc"] == pytest.approx(sum(per_class.values()) / 4, abs=1e-6)
    assert Path(summary["best_ckpt"]).is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / ".hydra" / "config.yaml").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert "Test accuracy" in result.stdout


def test_tensorboard_holds_the_named_scalars(tiny_run_args, tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_cli(*tiny_run_args)
    assert result.returncode == 0, result.stderr[-3000:]
    tags = set()
    for events in (tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    for tag in (
        "train/loss_epoch",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/acc_best",
        "val/acc_per_class/class_0",
        "test/acc",
        "lr-Adam/head",
    ):
        assert tag in tags, (tag, sorted(tags))


# docs/reliability.md: exit status 2 and one sentence for every mistake in the command line, Hydra's included
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer.lrr=0.1", "did you mean lr?"),
        ("strategy=freeze_everything", "feature_extract"),
        ("model=resnet9", "resnet18"),
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1"),
        ("strategy.frozen_stages=7", "0..5"),
        ("data.image_size=16", "data.image_size=16"),
    ],
)
def test_bad_input_is_one_clear_message_without_traceback(override: str, expected: str, tmp_path) -> None:
    result = run_cli(*TINY, f"hydra.run.dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}", override, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_gpu_asked_for_without_one_is_refused_not_run_on_cpu(tmp_path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = run_cli(*TINY[:3], f"hydra.run.dir={tmp_path}", "trainer.accelerator=gpu", timeout=120)
    assert result.returncode == 2
    assert "trainer.accelerator=auto" in result.stderr and "Traceback" not in result.stderr


def test_a_commands_imports_are_frozen_out_of_garbage_collection_once_and_its_jobs_garbage_is_still_collected(
    monkeypatch,
) -> None:
    import gc
    import weakref

    from transfer_lightning.utils import cli

    class Node:  # a job's leftovers: objects in a reference cycle, freed only by the collector
        pass

    monkeypatch.setattr(cli, "_imports_frozen", False)
    frozen = gc.get_freeze_count()
    try:
        cli.freeze_imported_objects()
        assert gc.get_freeze_count() > frozen  # what was alive (the imports) is out of every scan from now on
        after_first = gc.get_freeze_count()
        first_job = Node()
        first_job.cycle = first_job
        left_over = weakref.ref(first_job)
        del first_job
        cli.freeze_imported_objects()  # the next job's command: no second freeze
        assert gc.get_freeze_count() == after_first
        gc.collect()
        assert left_over() is None  # a job's garbage is still collected
    finally:
        gc.unfreeze()
