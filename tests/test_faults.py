"""Faults during a run: NaN loss, GPU out of memory, Ctrl-C, an unusable output folder; and determinism."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import TINY, compose_config, run_cli
from tests.test_resume import SLOW, checkpoint, start_cli, wait_for_file
from transfer_lightning.callbacks.graceful_stop import GracefulInterrupt, RunInterrupted
from transfer_lightning.callbacks.nan_guard import NonFiniteLossGuard, TrainingDiverged
from transfer_lightning.run.outcome import recorded_outcome
from transfer_lightning.run.preflight import check_run_folder
from transfer_lightning.utils.errors import UserError


def summary(run: Path) -> dict:
    return json.loads((run / "run_summary.json").read_text())


def test_nan_loss_stops_with_epoch_step_and_cause_and_keeps_the_last_good_checkpoint(tmp_path) -> None:
    run = tmp_path / "run"
    injection = "+callbacks.nan._target_=tests.fault_injection.InfiniteLearningRate"
    result = run_cli(*TINY, "trainer.max_epochs=3", injection, f"hydra.run.dir={run}", f"paths.data_dir={run / 'data'}")
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert re.search(r"loss became (nan|inf|-inf) at epoch 1", message) and "global step" in message
    assert "learning rate is probably too high" in message and "last.ckpt" in message
    assert "Traceback" not in result.stderr
    assert summary(run)["status"] == "failed" and "loss became" in summary(run)["error"]
    last = checkpoint(run / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 0  # written after epoch 1 (index 0); the diverged epoch wrote nothing
    assert all(torch.isfinite(t).all() for t in last["state_dict"].values() if t.is_floating_point())


def _guarded_save(module: L.LightningModule, optimized: list[torch.nn.Parameter]) -> None:
    """``NonFiniteLossGuard``'s hook on a checkpoint of ``module``, with one optimizer over ``optimized``."""
    trainer = SimpleNamespace(
        optimizers=[torch.optim.SGD(optimized, lr=0.1)], current_epoch=0, global_step=3, checkpoint_callback=None
    )
    NonFiniteLossGuard().on_save_checkpoint(trainer, module, {"state_dict": module.state_dict()})


def test_checkpoint_guard_refuses_non_finite_trained_weights_and_buffers_and_skips_frozen_stages() -> None:
    module = L.LightningModule()
    module.net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    frozen, head = module.net[0], module.net[2]
    with torch.no_grad():
        frozen.weight.fill_(float("nan"))  # what was loaded: not read at every save (the optimizer never changes it)
    _guarded_save(module, list(head.parameters()))
    with torch.no_grad():
        head.weight[0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match=r"weights became NaN or infinite .*first: net\.2\.weight"):
        _guarded_save(module, list(head.parameters()))
    with torch.no_grad():
        head.weight[0, 0] = 0.0
        module.net[1].running_var[0] = float("nan")  # a buffer changes without an optimizer
    with pytest.raises(TrainingDiverged, match=r"first: net\.1\.running_var"):
        _guarded_save(module, list(head.parameters()))


def test_gpu_out_of_memory_names_batch_size_and_image_size(tmp_path) -> None:
    run = tmp_path / "run"
    injection = "+callbacks.oom._target_=tests.fault_injection.OutOfMemoryOnFirstStep"
    result = run_cli(*TINY, injection, "data.batch_size=16", f"hydra.run.dir={run}", f"paths.data_dir={run / 'data'}")
    assert result.returncode == 2
    assert "ran out of memory" in result.stderr
    assert "data.batch_size (now 16)" in result.stderr and "data.image_size (now 32)" in result.stderr
    assert "Traceback" not in result.stderr
    assert summary(run)["status"] == "failed"


def test_ctrl_c_stops_gracefully_with_a_fresh_last_checkpoint_and_interrupted_summary(tmp_path) -> None:
    run = tmp_path / "run"
    process = start_cli(*TINY, "trainer.max_epochs=50", *SLOW, f"hydra.run.dir={run}", f"paths.data_dir={run / 'data'}")
    last = run / "checkpoints" / "last.ckpt"
    wait_for_file(last, process)
    step_before = checkpoint(last)["global_step"]
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "Interrupted: stopped by Ctrl-C" in stderr and "Traceback" not in stderr
    # the stop's save says weights_only itself: no "`weights_only` was not set" line that reads as a warning
    assert "weights_only" not in stderr + (run / "train.log").read_text()
    assert summary(run)["status"] == "interrupted"
    stopped = checkpoint(last)
    assert step_before < stopped["global_step"] == summary(run)["global_step"]
    assert stopped["epoch"] < 49


def test_second_ctrl_c_during_the_checkpoint_write_exits_130_and_names_the_intact_checkpoint(tmp_path) -> None:
    run = tmp_path / "run"
    slow_write = "+callbacks.slow_write._target_=tests.fault_injection.SlowGracefulCheckpoint"
    process = start_cli(
        *TINY, "trainer.max_epochs=50", *SLOW, slow_write, f"hydra.run.dir={run}", f"paths.data_dir={run / 'data'}"
    )
    last = run / "checkpoints" / "last.ckpt"
    wait_for_file(last, process)
    before = last.read_bytes()
    process.send_signal(signal.SIGINT)
    wait_for_file(run / "writing", process)  # the first Ctrl-C's checkpoint is being written
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "inline_container" not in stderr
    message = f"stopped at once by a second Ctrl-C while last.ckpt was being written; {last} is intact"
    assert f"Interrupted: {message}" in stderr
    assert summary(run)["status"] == "interrupted" and summary(run)["error"] == message
    assert last.read_bytes() == before and not list(last.parent.glob(".partial-*"))


def _last_checkpoint(folder: Path, written: bool) -> Path:
    """``<folder>/checkpoints/last.ckpt``, written (a previous epoch's) or not yet."""
    last = folder / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    if written:
        last.write_bytes(b"the checkpoint of the previous epoch")
    return last


@pytest.mark.parametrize("written", [True, False], ids=["last_ckpt_written", "none_yet"])
def test_second_ctrl_c_between_checkpoints_names_the_previous_last_checkpoint(tmp_path, written: bool) -> None:
    """Both signals arrive during a training step (no checkpoint being written): the line names the path."""
    last = _last_checkpoint(tmp_path, written)
    trainer = SimpleNamespace(checkpoint_callback=ModelCheckpoint(dirpath=last.parent, save_last=True))
    stopper = GracefulInterrupt()
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN in a pytest-xdist worker
    stopper.on_train_start(trainer, None)  # installs its handlers
    try:
        signal.raise_signal(signal.SIGINT)  # the first: stop after this step
        with pytest.raises(RunInterrupted) as stopped:
            signal.raise_signal(signal.SIGINT)  # the second: at once
    finally:
        stopper.on_fit_end(trainer, None)  # restores the handlers
    expected = f"{last} is the one before, intact" if written else f"no checkpoint yet ({last})"
    assert str(stopped.value) == f"stopped at once by a second Ctrl-C; {expected}"
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("written", [True, False], ids=["last_ckpt_written", "none_yet"])
def test_a_ctrl_c_no_step_boundary_caught_names_the_checkpoint_it_leaves(tmp_path, written: bool) -> None:
    """Ctrl-C outside a training step (GracefulInterrupt not listening yet): the summary names the path too."""
    last = _last_checkpoint(tmp_path, written)
    trainer = SimpleNamespace(
        checkpoint_callback=ModelCheckpoint(dirpath=last.parent, save_last=True), current_epoch=1, global_step=8,
        is_global_zero=True,
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt), recorded_outcome(tmp_path, compose_config(TINY)) as record:
        record.trainer = trainer
        raise KeyboardInterrupt
    expected = f"{last} is the one before, intact" if written else "no checkpoint yet"
    assert summary(tmp_path)["error"] == f"stopped at once by Ctrl-C; {expected}"


def test_an_early_failure_is_in_train_log_in_the_summarys_words_and_said_once_on_the_terminal(tmp_path) -> None:
    run = tmp_path / "run"
    tiny = [override for override in TINY if not override.startswith("data=")]
    result = run_cli(
        *tiny, "data=image_folder", f"data.root={tmp_path / 'missing'}", f"hydra.run.dir={run}",
        f"paths.data_dir={tmp_path / 'data'}",
    )  # fmt: skip
    assert result.returncode == 2
    error = summary(run)["error"]
    assert "data.root=" in error and "does not exist" in error
    assert f"[ERROR] - Run failed: {error}" in (run / "train.log").read_text()
    assert (result.stdout + result.stderr).count(error) == 1  # the terminal: the one "Error:" line


def test_unwritable_output_folder_is_refused_before_the_run_starts(tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run_cli(*TINY, f"hydra.run.dir={blocker / 'run'}", timeout=120)
    assert result.returncode == 2
    assert "is not writable" in result.stderr and "hydra.run.dir" in result.stderr
    assert "Traceback" not in result.stderr


def test_nearly_full_disk_is_refused_with_needed_and_free_space(tmp_path, monkeypatch) -> None:
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=10 * 2**20))
    with pytest.raises(UserError, match=r"has 10 MiB free, but this run needs about"):
        check_run_folder(tmp_path / "run", compose_config(TINY))


def test_two_runs_with_the_same_seed_on_cpu_give_identical_metrics_and_weights(tmp_path) -> None:
    from transfer_lightning.train import train

    results = []
    for name in ("first", "second"):
        # a fresh feature cache: the first run computes it (miss), the second loads it (hit)
        overrides = [*TINY, "strategy=finetune", "seed=7", f"paths.data_dir={tmp_path / 'data'}"]
        cfg = compose_config(overrides, output_dir=str(tmp_path / name))
        results.append(train(cfg))
    assert (results[0]["feature_cache"]["misses"], results[1]["feature_cache"]["hits"]) == (
        ["train", "val", "test"],
    ) * 2
    keys = ("best_val_acc", "test_acc", "test_per_class_acc", "global_step")
    assert [results[0][k] for k in keys] == [results[1][k] for k in keys]
    first, second = (checkpoint(tmp_path / name / "checkpoints" / "last.ckpt") for name in ("first", "second"))
    assert all(torch.equal(first["state_dict"][k], v) for k, v in second["state_dict"].items())
