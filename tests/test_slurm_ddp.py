"""DDP jobs of two tasks on the live single-node SLURM cluster (``make test-slurm``; skipped without it,
like ``test_slurm.py``): ``srun`` starts both processes and Hydra runs in each (ranks from
``SLURM_PROCID``), yet every job is one run: one folder, rank 0's summary with every test image once,
data prepared once, TensorBoard events and setup lines from rank 0 only, state ``COMPLETED``. A
requeued job stops both tasks at one step and continues from that step's ``last.ckpt``.

Both tasks need a core each, so on a 2-core machine the jobs run one after another.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.conftest import TINY, run_cli
from tests.fault_injection import PREPARE_LOG_VARIABLE, RECORD_PREPARATION
from tests.test_ddp import DDP, PIDS
from tests.test_resume import checkpoint
from tests.test_slurm import ENDED, JOB_ENV, array_job_ids, pytestmark, scontrol_job, wait_for_state  # noqa: F401 - pytestmark: marker, skip
from tests.test_torchrun import assert_one_ddp_run, prepared_by, run_folders, wait_for_first_last_checkpoint
from transfer_lightning.run.summary import read_summary

TWO_TASKS_ON_SLURM = [
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.timeout_min=10",
]
STOPPED_AT = re.compile(r"^Interrupted: stopped .* at epoch (\d+) \(0-based\), global step (\d+);", re.MULTILINE)


def submit_two_task_job(folder: Path, overrides: list[str]) -> str:
    """``sbatch`` a job whose two tasks ``srun`` this checkout's CLI in ``folder`` (docs/distributed.md's sbatch
    script, on the CPU); its output, across restarts, goes to ``folder/job.out``. Returns the job id."""
    script = folder / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --time=10\n"
        f"#SBATCH --chdir={folder} --output={folder}/job.out --open-mode=append\n"
        f"srun {shlex.quote(sys.executable)} -m transfer_lightning {shlex.join(overrides)}\n"
    )
    environment = {**os.environ, **JOB_ENV, PREPARE_LOG_VARIABLE: str(folder / "prepared")}  # sbatch passes it on
    submitted = subprocess.run(["sbatch", "--parsable", str(script)], env=environment, capture_output=True, text=True)
    assert submitted.returncode == 0, submitted.stderr
    return submitted.stdout.strip().split(";")[0]


def test_a_two_task_ddp_job_launched_by_srun_is_one_run_in_one_folder(tmp_path) -> None:
    odd = 33  # on 2 processes a padding sampler would count one image twice
    job_id = submit_two_task_job(
        tmp_path,
        [*TINY, *DDP, f"data.test_size={odd}", RECORD_PREPARATION, PIDS, f"paths.data_dir={tmp_path / 'data'}"],
    )  # fmt: skip
    state = wait_for_state(job_id, ENDED)
    output = (tmp_path / "job.out").read_text()
    assert state["JobState"] == "COMPLETED", output[-3000:]
    (run,) = run_folders(tmp_path / "outputs")  # rank 1's clock may have said another second
    assert prepared_by(tmp_path / "prepared") == {(run / "pids" / "rank0").read_text()}
    assert_one_ddp_run(run, output, prepared_by(tmp_path / "prepared"), test_images=odd)


def test_a_sweep_of_two_two_task_ddp_jobs_through_submitit_completes_as_two_runs(tmp_path) -> None:
    sweep, odd = tmp_path / "sweep", 33
    result = run_cli(
        "-m", *TINY, *DDP, *TWO_TASKS_ON_SLURM, "optimizer.lr=0.01,0.001", f"data.test_size={odd}", RECORD_PREPARATION,
        PIDS, f"hydra.sweep.dir={sweep}", f"paths.data_dir={tmp_path / 'data'}",
        env={**JOB_ENV, PREPARE_LOG_VARIABLE: str(tmp_path / "prepared")}, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = array_job_ids(sweep)
    assert sorted(jobs) == [0, 1]
    prepared = prepared_by(tmp_path / "prepared")  # one file for both jobs: their rank 0s, nobody else
    assert prepared == {(sweep / str(number) / "pids" / "rank0").read_text() for number in jobs}
    for number, job_id in jobs.items():
        # submitit returns on task 0's result; SLURM ends the job once task 1 has exited too
        assert wait_for_state(job_id, ENDED, timeout=60)["JobState"] == "COMPLETED"
        logs = sorted((sweep / ".submitit" / job_id).glob(f"{job_id}_*_log.*"))  # both tasks' stdout and stderr
        assert len(logs) == 4
        output = "".join(path.read_text() for path in logs)
        assert_one_ddp_run(sweep / str(number), output, prepared, test_images=odd)
    assert sorted(path.name for path in sweep.iterdir() if path.name.isdigit()) == ["0", "1"]


def test_a_requeued_two_task_job_stops_both_tasks_at_one_step_and_continues_from_that_last_ckpt(tmp_path) -> None:
    max_epochs = 2
    job_id = submit_two_task_job(
        tmp_path,
        [*TINY, *DDP, f"trainer.max_epochs={max_epochs}", "~callbacks.early_stopping",
         "+callbacks.slow._target_=tests.fault_injection.SlowTrainingSteps", "+callbacks.slow.seconds=1.0",
         "+callbacks.epochs._target_=tests.fault_injection.RecordTrainedEpochs", f"paths.data_dir={tmp_path / 'data'}"],
    )  # fmt: skip
    running = ("PENDING", "RUNNING")
    run = wait_for_first_last_checkpoint(tmp_path / "outputs", lambda: scontrol_job(job_id)["JobState"] in running, 600)
    assert run_folders(tmp_path / "outputs") == [run]
    last = run / "checkpoints" / "last.ckpt"
    subprocess.run(["scontrol", "requeue", job_id], check=True)  # SIGTERM to both tasks, as a preemption
    wait_for_state(job_id, ("PENDING",), reason="BeginTime")
    output = (tmp_path / "job.out").read_text()
    stops = STOPPED_AT.findall(output)
    assert len(stops) == 2 and len(set(stops)) == 1, output[-3000:]  # both tasks, the same epoch and step
    assert checkpoint(last)["global_step"] == int(stops[0][1])  # written at that step
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)  # not in 2 minutes

    state = wait_for_state(job_id, ENDED)
    output = (tmp_path / "job.out").read_text()
    assert state["JobState"] == "COMPLETED" and int(state["Restarts"]) == 1, output[-3000:]
    assert run_folders(tmp_path / "outputs") == [run]
    assert f"SLURM requeued this job (restart 1): continuing from {last}" in output
    summary = read_summary(run)
    assert summary["status"] == "completed" and summary["resumed_from"] == str(last)
    assert summary["epochs"] == max_epochs
    lines = (run / "trained_epochs.log").read_text().splitlines()
    epochs, processes = zip(*(line.split() for line in lines), strict=True)
    assert epochs == tuple(str(epoch) for epoch in range(max_epochs))  # no finished epoch trained again
    assert len(set(processes)) == 2  # stopped while training, and trained on after the restart
