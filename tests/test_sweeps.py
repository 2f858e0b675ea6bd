"""Sweeps through the real CLI: the lr x frozen_stages grid and its report, resume after a kill,
failed jobs recorded, the joblib launcher, CPU DDP, and the SLURM preset's job parameters."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import ROOT, TINY, compose_config, run_cli
from tests.exit_after_epoch import EXIT_CODE
from tests.test_dashboards import session_hparams
from tests.test_ddp import PIDS

# one epoch of 2 batches per job: the sweep machinery is under test, not the learning
SWEEP_TINY = [
    *TINY,
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]
GRID = ["strategy=finetune", "optimizer.lr=1e-2,1e-3", "strategy.frozen_stages=5,4"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_lr_x_frozen_stages_grid_writes_four_jobs_csv_report_and_heatmap(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli("-m", *SWEEP_TINY, *GRID, f"hydra.sweep.dir={sweep}", f"paths.data_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]

    assert sorted(p.name for p in sweep.iterdir() if p.name.isdigit()) == ["0", "1", "2", "3"]
    output = result.stdout + result.stderr  # each job starts with where the sweep stands
    assert "Sweep job 1 of 4 (optimizer.lr=0.01, strategy.frozen_stages=5); the sweep's time left" in output
    assert re.search(r"Sweep job 4 of 4 \(optimizer.lr=0.001, strategy.frozen_stages=4\); about .+ left for the sweep "
                     r"\(3 jobs in .+\)", output), output[-3000:]  # fmt: skip
    rows = read_csv(sweep / "sweep_summary.csv")
    assert len(rows) == 4 and {row["status"] for row in rows} == {"completed"}
    accuracies = [float(row["best_val_acc"]) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)  # best first
    values = [dict(item.split("=", 1) for item in row["overrides"].split()) for row in rows]
    by_stages = {
        value["strategy.frozen_stages"]: int(row["trainable_params"]) for value, row in zip(values, rows, strict=True)
    }
    assert by_stages == {"5": 2_052, "4": 8_393_728 + 2_052}  # the 4-class head; + layer4 when unfrozen
    assert all(row["epochs"] == "1" and float(row["wall_time_s"]) > 0 for row in rows)

    report = (sweep / "sweep_report.md").read_text()
    (rerun,) = [line for line in report.splitlines() if line.startswith("python -m transfer_lightning")]
    assert shlex.split(rerun)[3:] == rows[0]["overrides"].split()  # the winner's command line
    assert "`optimizer.lr` | `strategy.frozen_stages`" in report
    assert (sweep / "sweep_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # each job is its own TensorBoard run, named by what the sweep changed
    runs = sorted(p.name for p in (sweep / "0" / "tensorboard").iterdir() if p.is_dir())
    assert runs == ["lr=0.01 fs=5"]  # short: the swept keys only
    # strategy=finetune with frozen_stages=5 trains the head only: labelled by what it is
    labels = {row["job"]: json.loads((sweep / row["job"] / "run_summary.json").read_text())["strategy"] for row in rows}
    assert labels == {"0": "feature_extract", "1": "finetune", "2": "feature_extract", "3": "finetune"}
    hparams, _ = session_hparams(sweep / "0" / "tensorboard" / "lr=0.01 fs=5")
    assert hparams["group_name"] == "lr=0.01 fs=5 (sweep/0)"  # HPARAMS' Trial ID: the short name first
    assert hparams["strategy"] == "feature_extract" and hparams["frozen_stages"] == "5"

    # the report is rebuilt from the job folders alone
    for name in ("sweep_summary.csv", "sweep_report.md", "sweep_heatmap.png"):
        (sweep / name).unlink()
    rebuilt = run_cli(str(sweep), module="transfer_lightning.sweep_report", timeout=120)
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    assert read_csv(sweep / "sweep_summary.csv") == rows
    assert (sweep / "sweep_heatmap.png").is_file() and (sweep / "sweep_report.md").read_text() == report


def test_killed_sweep_resumes_skips_finished_jobs_and_records_a_failed_one(tmp_path) -> None:
    # run from tmp_path so the sweep lands in the default timestamped outputs/multirun/<date>/<time>
    env = {"PYTHONPATH": str(ROOT)}
    command = ["-m", *SWEEP_TINY, "strategy.frozen_stages=5,4,9", f"paths.data_dir={tmp_path}"]
    started = subprocess.Popen(
        [sys.executable, "-m", "transfer_lightning", *command],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob("outputs/multirun/*/*/0/run_summary.json")):
            assert started.poll() is None, "the sweep ended before its first job finished"
            assert time.monotonic() < deadline
            time.sleep(0.1)
        started.kill()  # half way: job 0 finished, job 1 running or about to start
    finally:
        started.kill()
        started.wait()
    (first_sweep,) = [p.parent.parent for p in tmp_path.glob("outputs/multirun/*/*/0/run_summary.json")]
    assert not (first_sweep / "sweep_summary.csv").exists()
    finished_at = (first_sweep / "0" / "run_summary.json").stat().st_mtime_ns
    time.sleep(1.1)  # a new sweep started now would get another <time> folder

    resumed = run_cli(*command, "resume=true", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert list(tmp_path.glob("outputs/multirun/*/*")) == [first_sweep]  # no new (even empty) sweep folder
    assert (first_sweep / "0" / "run_summary.json").stat().st_mtime_ns == finished_at  # skipped
    rows = {row["job"]: row for row in read_csv(first_sweep / "sweep_summary.csv")}
    assert rows["0"]["status"] == "completed" and rows["1"]["status"] == "completed"
    assert rows["2"]["status"] == "failed"
    assert "strategy.frozen_stages=9 is out of range for this backbone's 5 stages" in rows["2"]["error"]
    report = (first_sweep / "sweep_report.md").read_text()
    assert "job 2 (failed): strategy.frozen_stages=9 is out of range" in report


@pytest.mark.slow  # fast cover: test_killed_sweep_resumes_skips_finished_jobs_and_records_a_failed_one
def test_a_job_killed_mid_training_continues_from_its_last_ckpt_when_the_sweep_resumes(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    command = [
        "-m", *SWEEP_TINY, "trainer.max_epochs=2", "optimizer.lr=1e-2,1e-3", f"hydra.sweep.dir={sweep}",
        f"paths.data_dir={tmp_path}", "+callbacks.exit_after._target_=tests.exit_after_epoch.ExitAfterEpoch",
    ]  # fmt: skip
    env = {"PYTHONPATH": str(ROOT)}
    killed = run_cli(*command, env={**env, "EXIT_AFTER_EPOCH": "0"})  # job 0 dies as its epoch 2 starts
    assert killed.returncode == EXIT_CODE, killed.stderr[-3000:]
    last = sweep / "0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0
    assert not (sweep / "0" / "run_summary.json").exists() and not (sweep / "1").exists()

    resumed = run_cli(*command, "resume=true", env=env)  # the same command: no exit this time
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    job0 = json.loads((sweep / "0" / "run_summary.json").read_text())
    assert job0["status"] == "completed" and job0["epochs"] == 2
    assert job0["resumed_from"] == str(last)
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 1  # epoch 2 trained, not redone
    assert json.loads((sweep / "1" / "run_summary.json").read_text())["resumed_from"] is None
    rows = {row["job"]: row["status"] for row in read_csv(sweep / "sweep_summary.csv")}
    assert rows == {"0": "completed", "1": "completed"}


def test_resume_true_of_a_finished_sweep_skips_its_jobs_and_creates_no_new_folder(tmp_path) -> None:
    command = ["data=synthetic", "seed=1"]
    earlier = tmp_path / "outputs" / "multirun" / "2026-01-01" / "00-00-00"
    (earlier / "0" / ".hydra").mkdir(parents=True)
    (earlier / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": command}}}))
    (earlier / "0" / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(command))
    summary = {"status": "completed", "overrides": command, "best_val_acc": 0.5}
    (earlier / "0" / "run_summary.json").write_text(json.dumps(summary))

    resumed = run_cli("-m", *command, "resume=true", cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert list(tmp_path.glob("outputs/multirun/*/*")) == [earlier]  # the folder check ran on the earlier sweep
    assert json.loads((earlier / "0" / "run_summary.json").read_text()) == summary  # skipped, not re-run
    assert (earlier / "sweep_summary.csv").is_file()


def test_resume_of_a_folder_that_is_no_sweep_is_refused(tmp_path) -> None:
    from transfer_lightning.sweeps.resume import resume_sweep_dir
    from transfer_lightning.utils.errors import UserError

    cfg = compose_config([*TINY, f"resume={tmp_path}"], return_hydra_config=True)
    with pytest.raises(UserError, match="is not a sweep folder"):
        resume_sweep_dir(cfg)


def test_a_sweep_started_in_the_same_second_as_another_gets_a_folder_of_its_own(tmp_path, monkeypatch) -> None:
    from transfer_lightning.run import preflight
    from transfer_lightning.sweeps.resume import claim_new_sweep_dir

    monkeypatch.setattr(preflight, "_claimed", {})  # this process has claimed nothing yet
    timestamped = f"hydra.sweep.dir={tmp_path}/sweeps/${{now:%Y}}"  # the same value all year: a same-second start
    first = compose_config([*TINY, timestamped], return_hydra_config=True)
    taken = Path(str(first.hydra.sweep.dir))
    assert claim_new_sweep_dir(first) is None and taken.is_dir()  # free: used as it is
    monkeypatch.setattr(preflight, "_claimed", {})  # the second sweep is another process
    second = compose_config([*TINY, timestamped], return_hydra_config=True)
    assert claim_new_sweep_dir(second) == Path(f"{taken}-2")
    assert second.hydra.sweep.dir == f"{taken}-2" and Path(f"{taken}-2").is_dir()
    assert second.hydra.overrides.hydra[-1] == f"hydra.sweep.dir={taken}-2"  # the jobs' configs get it too
    fixed = compose_config([*TINY, f"hydra.sweep.dir={taken}"], return_hydra_config=True)
    assert claim_new_sweep_dir(fixed) is None and fixed.hydra.sweep.dir == str(taken)  # a fixed folder is reused


@pytest.mark.slow  # fast cover: test_lr_x_frozen_stages_grid_... and test_each_joblib_worker_claims_a_gpu_...
def test_joblib_sweep_runs_two_jobs_in_parallel_workers_with_dataloader_workers(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        *SWEEP_TINY,
        "data.num_workers=1",  # DataLoader worker processes inside loky worker processes
        "optimizer.lr=1e-2,1e-3",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
        f"paths.data_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stderr + result.stdout
    rows = read_csv(sweep / "sweep_summary.csv")
    assert [row["status"] for row in rows] == ["completed", "completed"], rows


@pytest.mark.slow  # fast cover: tests/test_ddp.py (2-process CPU DDP runs with one summary)
def test_ddp_on_two_cpu_processes_writes_one_summary_in_one_run_folder(tmp_path) -> None:
    # no hydra.run.dir: both ranks must agree on the timestamped folder
    env = {"PYTHONPATH": str(ROOT)}
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.sync_batchnorm=false"]
    result = run_cli(*SWEEP_TINY, *ddp, PIDS, "strategy=finetune", f"paths.data_dir={tmp_path}", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = [p for p in tmp_path.glob("outputs/*/*") if p.is_dir()]
    assert sorted(path.name for path in (run / "pids").iterdir()) == ["rank0", "rank1"]  # both trained in it
    assert "Run folder:" not in (run / "train_ddp_process_1.log").read_text()  # rank 1 left the summary to rank 0
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["status"] == "completed" and summary["device"].startswith("cpu")


def test_ddp_inside_a_local_multirun_is_refused_with_the_alternatives(tmp_path) -> None:
    result = run_cli(
        "-m", *TINY, "trainer=ddp", "trainer.devices=2", "trainer.sync_batchnorm=false", "trainer.accelerator=cpu",
        "optimizer.lr=1e-2,1e-3", f"hydra.sweep.dir={tmp_path}", f"paths.data_dir={tmp_path}", timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "submitit_slurm" in result.stderr and "ddp_spawn" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "0").exists()


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        (["hydra/launcher=joblib"], True),
        (["trainer.devices=1"], False),
        (["trainer.strategy=ddp_spawn"], False),
        (["hydra/launcher=submitit_slurm"], False),  # SLURM starts one task per device, no re-launch
    ],
)
def test_ddp_refusal_depends_on_launcher_devices_and_strategy(overrides: list[str], refused: bool) -> None:
    from transfer_lightning.sweeps.guards import refuse_ddp_in_local_multirun
    from transfer_lightning.utils.errors import UserError

    cfg = compose_config(["trainer=ddp", "trainer.devices=2", *overrides], return_hydra_config=True)
    if refused:
        with pytest.raises(UserError, match="ddp_spawn"):
            refuse_ddp_in_local_multirun(cfg)
    else:
        refuse_ddp_in_local_multirun(cfg)


def test_slurm_preset_submits_one_task_per_device_with_requeue(tmp_path, monkeypatch) -> None:
    import submitit
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext

    cfg = compose_config(
        ["data=synthetic", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", "trainer=ddp", "trainer.devices=4",
         f"hydra.sweep.dir={tmp_path}"],
        return_hydra_config=True,
    )  # fmt: skip
    launcher = Plugins.instance().instantiate_launcher(
        hydra_context=HydraContext(config_loader=None, callbacks=None), task_function=lambda c: None, config=cfg
    )
    submitted = {}

    def capture(self, function, *args):  # the real executor, stopped before sbatch
        submitted["executor"] = self
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture)
    # no cluster here: pretend srun exists, the parameters are built exactly as on a cluster
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    launcher.launch([["optimizer.lr=0.01"]], initial_job_idx=0)
    slurm = submitted["executor"]._executor
    script = slurm._make_submission_file_text("python -u -m submitit.core._submit", "uid")
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --time=240",
        "#SBATCH --signal=USR2@120",
    ):
        assert line in script, (line, script)
    assert slurm.max_num_timeout == 3
    assert str(slurm.folder).startswith(str(tmp_path / ".submitit"))  # stable across requeues


def test_a_job_with_last_ckpt_continues_from_it_and_a_foreign_result_is_refused(tmp_path) -> None:
    from transfer_lightning.run.summary import write_summary
    from transfer_lightning.sweeps.resume import prepare_sweep_job
    from transfer_lightning.utils.errors import UserError

    job = tmp_path / "1"
    (job / "checkpoints").mkdir(parents=True)
    (job / "checkpoints" / "last.ckpt").write_bytes(b"checkpoint")
    cfg = compose_config(TINY, output_dir=str(job))
    assert prepare_sweep_job(cfg, ["optimizer.lr=0.01"]) is None
    assert cfg.ckpt_path == str(job / "checkpoints" / "last.ckpt")

    write_summary(job, {"status": "completed", "best_val_acc": 0.5, "overrides": ["optimizer.lr=0.01", "resume=true"]})
    assert prepare_sweep_job(compose_config(TINY, output_dir=str(job)), ["optimizer.lr=0.01"])["best_val_acc"] == 0.5
    with pytest.raises(UserError, match="holds the result of another job"):
        prepare_sweep_job(compose_config(TINY, output_dir=str(job)), ["optimizer.lr=0.1"])


def test_each_joblib_worker_claims_a_gpu_no_other_worker_holds(tmp_path, monkeypatch) -> None:
    from transfer_lightning.sweeps import joblib_worker

    monkeypatch.setattr(joblib_worker, "_claimed", None)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    holder = subprocess.Popen(  # another worker holding GPU 3
        [sys.executable, "-c", "import fcntl,sys,time; f=open(sys.argv[1],'w'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('held', flush=True); time.sleep(60)", str(tmp_path / "gpu3.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        assert joblib_worker.claim_gpu(tmp_path, job_num=1, gpus=["2", "3"]) == "2"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "2"
        assert joblib_worker.claim_gpu(tmp_path, job_num=5, gpus=["2", "3"]) == "2"  # a worker keeps its GPU
    finally:
        holder.kill()
        holder.wait()
        joblib_worker._claimed.close()


def test_optuna_search_runs_trials_as_jobs_and_keeps_the_study_in_sqlite(tmp_path) -> None:
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    result = run_cli(
        "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}",
        *SWEEP_TINY, f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.data_dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    trials = optuna.load_study(study_name="transfer_lightning", storage=storage).trials
    assert [trial.state.name for trial in trials] == ["COMPLETE", "COMPLETE"]
    rows = read_csv(tmp_path / "sweep" / "sweep_summary.csv")
    assert sorted(float(row["best_val_acc"]) for row in rows) == sorted(trial.value for trial in trials)
