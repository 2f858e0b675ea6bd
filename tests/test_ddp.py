"""Two CPU DDP processes (gloo) through the real CLI: they stop together (a NaN loss on one process,
Ctrl-C to the launching process and SIGTERM to one process each end every process within 30 s, with
one summary that says why and a ``last.ckpt`` that loads and resumes), and their test numbers count
every image once."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, TINY, run_cli
from tests.fault_injection import PREPARE_LOG_VARIABLE, RECORD_PREPARATION
from tests.test_resume import SLOW, checkpoint, start_cli, wait_for_file
from transfer_lightning.run.test_predictions import read_test_predictions

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false"]
PIDS = "+callbacks.pids._target_=tests.fault_injection.RecordProcessIds"
# the resumed run's saved config names the test's own hooks: the command vouches for them
TRUST_HOOKS = "trusted_classes=[tests.fault_injection.SlowTrainingSteps,tests.fault_injection.RecordProcessIds]"
ENV = {"PYTHONPATH": str(ROOT)}
# what every process sets up, said once (by rank 0)
SETUP_LINES = ("Backbone resnet18", "Parameters: ", "Feature cache off", "Device: cpu (CPU) x2")


def summary(run: Path) -> dict:
    return json.loads((run / "run_summary.json").read_text())


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent has not collected it yet


def assert_every_process_exits(run: Path, within: float) -> None:
    pids = [int(path.read_text()) for path in sorted((run / "pids").iterdir())]
    assert len(pids) == 2
    deadline = time.monotonic() + within
    while any(_running(pid) for pid in pids):
        assert time.monotonic() < deadline, f"DDP processes {pids} still running after {within} s"
        time.sleep(0.2)


def test_nan_loss_on_one_ddp_process_fails_every_process_and_only_rank_0_prepared_the_data(tmp_path) -> None:
    run = tmp_path / "run"
    nan_on_rank_1 = "+callbacks.nan._target_=tests.fault_injection.NonFiniteLossOnRank"
    result = run_cli(
        *TINY, *DDP, "trainer.max_epochs=3", nan_on_rank_1, PIDS, RECORD_PREPARATION, f"hydra.run.dir={run}",
        f"paths.data_dir={tmp_path / 'data'}", env={**ENV, PREPARE_LOG_VARIABLE: str(tmp_path / "prepared")},
        timeout=240,
    )  # fmt: skip
    ended = time.time()
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert summary(run)["status"] == "failed"
    assert "another process of this run" in summary(run)["error"]  # rank 0's loss was finite
    assert "Error: the training loss became nan" in result.stderr  # rank 1's own message (same stderr)
    last = run / "checkpoints" / "last.ckpt"
    assert ended - (run / "nan_injected").stat().st_mtime < 30  # not the collective's 30-minute timeout
    assert_every_process_exits(run, within=5)
    # data prepared once per node: by rank 0 only (before fit, and again by Lightning in fit)
    assert set((tmp_path / "prepared").read_text().split()) == {(run / "pids" / "rank0").read_text()}
    state = checkpoint(last)
    assert state["epoch"] == 0 and all(torch.isfinite(t).all() for t in state["state_dict"].values())


def _start_slow_ddp_run(tmp_path: Path) -> tuple:
    run = tmp_path / "run"
    process = start_cli(
        *TINY, *DDP, "trainer.max_epochs=50", *SLOW, PIDS, f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}"
    )
    wait_for_file(run / "checkpoints" / "last.ckpt", process, timeout=240)
    wait_for_file(run / "pids" / "rank1", process)
    return run, process


def _assert_stopped_together(run: Path, process, signalled_at: float, returncode: int = 130) -> dict:
    _, stderr = process.communicate(timeout=120)
    assert time.monotonic() - signalled_at < 30, stderr[-3000:]
    assert process.returncode == returncode, stderr[-3000:]
    assert "Traceback" not in stderr
    assert_every_process_exits(run, within=5)
    stopped = summary(run)
    assert stopped["status"] == "interrupted"
    assert checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == stopped["global_step"]
    return stopped


def test_ctrl_c_to_the_launching_process_stops_both_ddp_processes_and_the_checkpoint_resumes(tmp_path) -> None:
    run, process = _start_slow_ddp_run(tmp_path)
    process.send_signal(signal.SIGINT)
    stopped = _assert_stopped_together(run, process, time.monotonic())
    assert "stopped by Ctrl-C" in stopped["error"]
    # continue on one process, through the end of the interrupted epoch
    resumed = run_cli(
        f"resume={run}",
        "trainer.devices=1",
        f"trainer.max_epochs={stopped['epochs'] + 1}",
        TRUST_HOOKS,
        env=ENV,
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert summary(run)["status"] == "completed" and summary(run)["global_step"] > stopped["global_step"]


@pytest.mark.slow  # fast cover: the Ctrl-C test above (the same cross-process stop, by signal)
def test_sigterm_to_one_ddp_process_stops_both_with_an_interrupted_summary(tmp_path) -> None:
    run, process = _start_slow_ddp_run(tmp_path)
    os.kill(int((run / "pids" / "rank1").read_text()), signal.SIGTERM)
    stopped = _assert_stopped_together(run, process, time.monotonic())
    assert "another process of this run was signalled" in stopped["error"]  # rank 0 writes the summary


def test_two_process_test_accuracy_counts_each_image_once_and_equals_a_one_process_evaluation(tmp_path) -> None:
    run, odd = tmp_path / "run", 33  # 33 images on 2 processes: a padding sampler would count one twice
    trained = run_cli(
        *TINY, *DDP, f"data.test_size={odd}", "data.batch_size=8", f"hydra.run.dir={run}",
        f"paths.data_dir={tmp_path / 'data'}", env=ENV, timeout=240,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert summary(run)["test_images"] == odd
    per_image = read_test_predictions(run)  # rank 0 gathered both shares, back in the split's order
    assert per_image is not None and np.array_equal(per_image.labels, np.arange(odd) % 4)
    assert per_image.accuracy == pytest.approx(summary(run)["test_acc"], abs=1e-6)
    for line in SETUP_LINES:  # rank 1, started by Lightning, prints to the same terminal
        assert trained.stdout.count(line) == 1, f"{line!r} printed {trained.stdout.count(line)} times"
    evaluated = run_cli(
        f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", "data=synthetic", f"data.test_size={odd}",
        "trainer.accelerator=cpu", f"output_dir={tmp_path / 'eval'}", f"hydra.run.dir={tmp_path / 'eval'}",
        module="transfer_lightning.evaluate", env=ENV,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "eval_report.json").read_text())
    assert report["num_images"] == odd
    per_class = {name: row["accuracy"] for name, row in report["per_class"].items()}
    assert summary(run)["test_per_class_acc"] == pytest.approx(per_class, abs=1e-6)
    # test/acc and the report's "accuracy" are both over images (micro), which with 9/8/8/8 images per
    # class differs from the mean over classes
    assert summary(run)["test_acc"] == pytest.approx(report["accuracy"], abs=1e-6)
