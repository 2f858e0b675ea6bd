"""Sweeps on a live single-node SLURM cluster (``make test-slurm`` starts one with
``scripts/slurm-local.sh``): jobs complete, survive a requeue and a time limit, and fail alone.

Skipped unless ``TL_SLURM_TESTS=1`` (set by ``make test-slurm``; by hand: start the cluster, export
its ``SLURM_CONF`` and ``TL_SLURM_TESTS=1``) and a cluster answers ``sinfo``: ``make test`` never
submits jobs, even on a machine that is a SLURM login node.
The jobs run this checkout's code with the test's Python (submitit submits ``sys.executable``, and
SLURM passes the environment, ``PYTHONPATH`` included, to the job).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, run_cli
from transfer_lightning.run.summary import read_summary


def _cluster_answers() -> bool:
    if os.environ.get("TL_SLURM_TESTS") != "1" or shutil.which("sinfo") is None:
        return False
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return result.returncode == 0 and bool(result.stdout.strip())


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not _cluster_answers(), reason="no SLURM test cluster (make test-slurm starts one)"),
]

# one CPU and no GPU per job: two jobs run at once on a 2-core machine
ON_SLURM = [
    "hydra/launcher=submitit_slurm",
    "trainer.devices=1",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.timeout_min=10",
]
JOB_ENV = {"PYTHONPATH": str(ROOT)}


def scontrol_job(job_id: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (JobState, Reason, Restarts, TimeLimit, RunTime, ...)."""
    text = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def wait_for_state(job_id: str, wanted: tuple[str, ...], timeout: float = 600, reason: str | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while (state := scontrol_job(job_id)).get("JobState") not in wanted or reason not in (None, state.get("Reason")):
        assert time.monotonic() < deadline, f"job {job_id} is still {state.get('JobState')} ({state.get('Reason')})"
        time.sleep(1)
    return state


def array_job_ids(sweep: Path) -> dict[int, str]:
    """Sweep job number -> SLURM job id (``<array>_<index>``), from submitit's folder."""
    folder = sweep / ".submitit"
    names = [path.name for path in folder.iterdir()] if folder.is_dir() else []
    return {int(name.split("_")[1]): name for name in names if re.fullmatch(r"\d+_\d+", name)}


def sweep_rows(sweep: Path) -> dict[str, dict[str, str]]:
    with open(sweep / "sweep_summary.csv") as handle:
        return {row["job"]: row for row in csv.DictReader(handle)}


def test_grid_of_four_jobs_completes_on_slurm_with_its_report_and_heatmap(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m", *TINY, *ON_SLURM, "optimizer.lr=0.01,0.001", "optimizer.weight_decay=0,0.01",
        f"hydra.sweep.dir={sweep}", f"paths.data_dir={tmp_path / 'data'}",
        env=JOB_ENV, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = array_job_ids(sweep)
    assert sorted(jobs) == [0, 1, 2, 3]
    # a sweep returns once every job has written its result, a moment before the job's process exits
    assert [wait_for_state(job_id, ENDED, timeout=120)["JobState"] for job_id in jobs.values()] == ["COMPLETED"] * 4
    rows = sweep_rows(sweep)
    assert len(rows) == 4 and {row["status"] for row in rows.values()} == {"completed"}
    assert (sweep / "sweep_report.md").is_file() and (sweep / "sweep_heatmap.png").stat().st_size > 0


def test_requeued_and_timed_out_jobs_finish_from_their_last_checkpoint_and_a_bad_job_fails_alone(
    tmp_path,
) -> None:
    """Job 0 is requeued by ``scontrol requeue``; job 1 is brought to its time limit, so SLURM sends
    submitit's checkpoint signal (USR2 ``signal_delay_s`` before the limit) and submitit requeues it;
    job 2 has a negative learning rate. A requeued job waits (``BeginTime``) until released here."""
    sweep, max_epochs = tmp_path / "sweep", 8
    command = [
        sys.executable, "-m", "transfer_lightning", "-m", *TINY, *ON_SLURM,
        f"trainer.max_epochs={max_epochs}", "~callbacks.early_stopping", "hydra.launcher.signal_delay_s=300",
        "+callbacks.slow._target_=tests.fault_injection.SlowTrainingSteps", "+callbacks.slow.seconds=1.0",
        "+callbacks.epochs._target_=tests.fault_injection.RecordTrainedEpochs",
        "optimizer.lr=0.01,0.005,-1", f"hydra.sweep.dir={sweep}", f"paths.data_dir={tmp_path / 'data'}",
    ]  # fmt: skip
    log = open(tmp_path / "sweep.log", "w")  # noqa: SIM115 - closed below; a pipe could fill and block the sweep
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **JOB_ENV}, stdout=log, stderr=log)
    preempted: dict[int, str] = {}
    deadline = time.monotonic() + 900
    try:
        while process.poll() is None:
            assert time.monotonic() < deadline, "the sweep did not finish in 15 minutes"
            jobs = array_job_ids(sweep) if sweep.is_dir() else {}
            for number, action in ((0, "requeue"), (1, "time limit")):
                if number in preempted or not (sweep / str(number) / "checkpoints" / "last.ckpt").is_file():
                    continue
                state = scontrol_job(jobs[number])
                if state.get("JobState") != "RUNNING":
                    continue
                if action == "requeue":
                    subprocess.run(["scontrol", "requeue", jobs[number]], check=True)
                else:  # a limit that is reached in less than signal_delay_s: SLURM signals at its next check
                    minutes = _minutes(state["RunTime"]) + 2
                    subprocess.run(["scontrol", "update", f"JobId={jobs[number]}", f"TimeLimit={minutes}"], check=True)
                preempted[number] = action
            for number in preempted:  # released at once instead of SLURM's requeue delay; limit back to 10 min
                state = scontrol_job(jobs[number])
                if state.get("JobState") == "PENDING" and state.get("Reason") == "BeginTime":
                    subprocess.run(
                        ["scontrol", "update", f"JobId={jobs[number]}", "StartTime=now", "TimeLimit=10"], check=True
                    )
            time.sleep(1)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    output = (tmp_path / "sweep.log").read_text()
    assert process.returncode == 0, output[-3000:]
    assert sorted(preempted) == [0, 1], output[-3000:]
    jobs = array_job_ids(sweep)
    for number in (0, 1):
        assert int(scontrol_job(jobs[number])["Restarts"]) >= 1
        summary = read_summary(sweep / str(number))
        assert summary["status"] == "completed"
        assert summary["resumed_from"] == str(sweep / str(number) / "checkpoints" / "last.ckpt")
        assert summary["epochs"] == max_epochs
        lines = (sweep / str(number) / "trained_epochs.log").read_text().splitlines()
        epochs, processes = zip(*(line.split() for line in lines), strict=True)
        assert epochs == tuple(str(epoch) for epoch in range(max_epochs))  # no finished epoch trained again
        assert len(set(processes)) == 2  # stopped while training, and trained on after the restart
    job_log = next((sweep / ".submitit" / jobs[1]).glob("*_log.err")).read_text()
    assert "Caught signal SIGUSR2" in job_log and "timed-out" in job_log
    rows = sweep_rows(sweep)
    assert [rows[str(n)]["status"] for n in range(3)] == ["completed", "completed", "failed"]
    assert "optimizer.lr" in rows["2"]["error"]


def _minutes(run_time: str) -> int:
    """``[D-]HH:MM:SS`` or ``MM:SS`` -> whole minutes, rounded up."""
    days, _, clock = run_time.rpartition("-")
    parts = [int(part) for part in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    seconds = ((int(days or 0) * 24 + parts[0]) * 60 + parts[1]) * 60 + parts[2]
    return -(-seconds // 60)
