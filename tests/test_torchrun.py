"""``torchrun --nproc_per_node=2 -m transfer_lightning trainer=ddp trainer.accelerator=cpu trainer.devices=2``:
torchrun starts both processes and Hydra runs in each, yet the job is one run: one folder (the default
``outputs/<date>/<time>``, no ``hydra.run.dir``), one summary by rank 0 counting every test image once,
data prepared once, TensorBoard events and setup lines from rank 0 only; Ctrl-C stops both processes.

``python -m torch.distributed.run`` is the module the ``torchrun`` command runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ROOT, TINY
from tests.fault_injection import PREPARE_LOG_VARIABLE, RECORD_PREPARATION
from tests.test_ddp import DDP, PIDS, SETUP_LINES, assert_every_process_exits, summary
from tests.test_resume import SLOW, checkpoint, wait_for_file

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "transfer_lightning"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def run_folders(outputs: Path) -> list[Path]:
    """The run folders under ``outputs/<date>/`` (hidden bookkeeping such as ``.slurm_jobs`` aside)."""
    return sorted(run for run in outputs.glob("*/*") if not run.parent.name.startswith("."))


def wait_for_first_last_checkpoint(outputs: Path, alive: Callable[[], bool], timeout: float = 240) -> Path:
    """The run folder under ``outputs/<date>/`` whose ``checkpoints/last.ckpt`` appears first, while ``alive()``."""
    deadline = time.monotonic() + timeout
    while not (written := sorted(outputs.glob("*/*/checkpoints/last.ckpt"))):
        assert alive() and time.monotonic() < deadline, "no last.ckpt was written"
        time.sleep(0.1)
    return written[0].parent.parent


def prepared_by(prepare_log: Path) -> set[str]:
    """The process ids that prepared the data (``RecordDataPreparation``)."""
    return set(prepare_log.read_text().split())


def assert_one_ddp_run(run: Path, output: str, prepared: set[str], test_images: int) -> None:
    """One completed run of two processes: rank 0's summary with every test image once, data prepared by
    rank 0 and not rank 1 (``prepared``: process ids; rank 0 prepares before fit, and again in Lightning's
    fit), TensorBoard events and setup lines from rank 0 only (``output``: what both processes printed)."""
    stopped = summary(run)
    assert stopped["status"] == "completed" and stopped["test_images"] == test_images
    rank0, rank1 = ((run / "pids" / f"rank{rank}").read_text() for rank in (0, 1))
    assert rank0 != rank1 and rank0 in prepared and rank1 not in prepared
    events = list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and {path.name.split(".")[-2] for path in events} == {rank0}  # ...<host>.<pid>.<n>
    for line in SETUP_LINES:
        assert output.count(line) == 1, f"{line!r} printed {output.count(line)} times:\n{output[-3000:]}"


def test_torchrun_with_two_processes_makes_one_run_folder_with_one_summary_and_every_test_image(tmp_path) -> None:
    odd = 33  # on 2 processes a padding sampler would count one image twice
    result = subprocess.run(
        [*TORCHRUN, *TINY, *DDP, f"data.test_size={odd}", RECORD_PREPARATION, PIDS, f"paths.data_dir={tmp_path / 'data'}"],
        cwd=tmp_path, env={**ENV, PREPARE_LOG_VARIABLE: str(tmp_path / "prepared")}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_folders(tmp_path / "outputs")
    assert prepared_by(tmp_path / "prepared") == {(run / "pids" / "rank0").read_text()}
    assert_one_ddp_run(run, result.stdout + result.stderr, prepared_by(tmp_path / "prepared"), test_images=odd)


def test_ctrl_c_to_torchrun_stops_both_processes_within_30_s_with_last_ckpt_written(tmp_path) -> None:
    command = [*TORCHRUN, *TINY, *DDP, "trainer.max_epochs=50", *SLOW, PIDS, f"paths.data_dir={tmp_path / 'data'}"]
    # a terminal's Ctrl-C goes to the foreground process group: torchrun's (it starts its workers in sessions
    # of their own and forwards the signal to them)
    process = subprocess.Popen(
        command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    outputs = tmp_path / "outputs"
    run = wait_for_first_last_checkpoint(outputs, alive=lambda: process.poll() is None)
    assert run_folders(outputs) == [run]
    wait_for_file(run / "pids" / "rank1", process)
    os.killpg(process.pid, signal.SIGINT)
    signalled = time.monotonic()
    _, stderr = process.communicate(timeout=120)
    assert time.monotonic() - signalled < 30, stderr[-3000:]
    assert_every_process_exits(run, within=5)
    assert run_folders(outputs) == [run]
    stopped = summary(run)
    assert stopped["status"] == "interrupted" and "stopped by Ctrl-C" in stopped["error"], stderr[-3000:]
    assert checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == stopped["global_step"] > 0
