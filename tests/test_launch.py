"""The processes of one torchrun or srun launch agree on rank 0's run folder, a requeued SLURM job finds
its folder again and continues from its ``last.ckpt``, and Lightning's SLURM auto-requeue stays off
(``transfer_lightning/run/launch.py``). The launches themselves run live in ``test_torchrun.py`` and
``test_slurm_ddp.py``; here each rank is this process with the environment its launcher would set."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.fabric.plugins.environments import SLURMEnvironment
from omegaconf import OmegaConf
from torch.distributed import TCPStore

from transfer_lightning.run import launch, preflight, resume  # noqa: F401 - resume registers the tl.* resolvers
from transfer_lightning.run.launch import cluster_environment_plugins, continue_requeued_job, launch_run_folder
from transfer_lightning.utils.errors import UserError

LAUNCHER_VARIABLES = (
    "TORCHELASTIC_RUN_ID", "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RESTART_COUNT", "RANK", "LOCAL_RANK",
    "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID", "SLURM_NTASKS",
    "SLURM_NTASKS_PER_NODE", "SLURM_JOB_NAME", "SLURM_RESTART_COUNT",
)  # fmt: skip


@pytest.fixture(autouse=True)
def started_alone(monkeypatch):
    """No launcher variables, and no folder agreed or claimed yet in this process."""
    for variable in LAUNCHER_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(launch, "_agreed", {})
    monkeypatch.setattr(preflight, "_claimed", {})


def become(monkeypatch, **variables: object) -> None:
    """This process is now the process of a launch that ``variables`` describe (a fresh process: no cache)."""
    for name, value in variables.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setattr(launch, "_agreed", {})
    monkeypatch.setattr(preflight, "_claimed", {})


def slurm_task(monkeypatch, rank: int, restart: int = 0, job: int = 71) -> None:
    become(
        monkeypatch, SLURM_JOB_ID=job, SLURM_STEP_ID=0, SLURM_PROCID=rank, SLURM_NTASKS=2, SLURM_NTASKS_PER_NODE=2,
        SLURM_JOB_NAME="train.sh", SLURM_RESTART_COUNT=restart,
    )  # fmt: skip


def folders(day: Path) -> list[str]:
    return sorted(path.name for path in day.iterdir())


def test_slurm_tasks_take_the_folder_task_0_claimed_although_their_clocks_said_another_second(tmp_path, monkeypatch):
    day = tmp_path / "outputs" / "2026-01-31"
    slurm_task(monkeypatch, rank=0)
    claimed = launch_run_folder(str(day / "12-00-00"))
    slurm_task(monkeypatch, rank=1)
    assert launch_run_folder(str(day / "12-00-01")) == claimed == str(day / "12-00-00")
    assert folders(day) == ["12-00-00"]


def test_a_requeued_slurm_job_takes_its_earlier_folder_and_continues_from_its_last_checkpoint(tmp_path, monkeypatch):
    day = tmp_path / "outputs" / "2026-01-31"
    slurm_task(monkeypatch, rank=0)
    first = launch_run_folder(str(day / "12-00-00"))
    (Path(first) / "checkpoints").mkdir()
    (Path(first) / "checkpoints" / "last.ckpt").write_bytes(b"state")
    cfg = OmegaConf.create({"paths": {"output_dir": first}, "resume": None, "ckpt_path": None})
    continue_requeued_job(cfg)
    assert cfg.ckpt_path is None  # not requeued: a run never continues by itself

    slurm_task(monkeypatch, rank=0, restart=1)
    assert launch_run_folder(str(day / "12-30-00")) == first
    slurm_task(monkeypatch, rank=1, restart=1)
    assert launch_run_folder(str(day / "12-30-01")) == first
    assert folders(day) == ["12-00-00"]
    continue_requeued_job(cfg)
    assert cfg.ckpt_path == str(Path(first) / "checkpoints" / "last.ckpt")


def test_a_second_run_in_the_same_slurm_step_gets_its_own_folder(tmp_path, monkeypatch):
    day = tmp_path / "outputs" / "2026-01-31"
    slurm_task(monkeypatch, rank=0)
    launch_run_folder(str(day / "12-00-00"))
    slurm_task(monkeypatch, rank=0)  # the same job, step and start: python run twice in one batch script
    assert launch_run_folder(str(day / "12-05-00")) == str(day / "12-05-00")
    slurm_task(monkeypatch, rank=0, job=72)
    assert launch_run_folder(str(day / "12-05-00")) == str(day / "12-05-00-2")  # another job, the same second


def test_a_slurm_task_that_never_hears_from_task_0_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "WAIT_FOR_RANK_ZERO_S", 0.5)
    slurm_task(monkeypatch, rank=1)
    with pytest.raises(UserError, match=r"task 0 of SLURM job 71\.0 recorded no run folder .* hydra\.run\.dir="):
        launch_run_folder(str(tmp_path / "outputs" / "2026-01-31" / "12-00-00"))


def test_only_rank_0_of_a_launch_saves_the_hydra_config():
    subdir = OmegaConf.create({"subdir": "${tl.hydra_subdir:null,null}"})
    assert subdir.subdir == ".hydra"


def test_other_slurm_tasks_save_no_hydra_config(monkeypatch):
    slurm_task(monkeypatch, rank=1)
    assert OmegaConf.create({"subdir": "${tl.hydra_subdir:null,null}"}).subdir is None


def test_torchrun_ranks_take_the_folder_rank_0_published_in_torchruns_store(tmp_path, monkeypatch):
    agent_store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)  # what torchrun's agent hosts
    day = tmp_path / "outputs" / "2026-01-31"
    torchrun = {"TORCHELASTIC_RUN_ID": "none", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": agent_store.port}
    become(monkeypatch, **torchrun, WORLD_SIZE=2, TORCHELASTIC_USE_AGENT_STORE=True, RANK=0)
    claimed = launch_run_folder(str(day / "12-00-00"))
    become(monkeypatch, RANK=1)
    assert launch_run_folder(str(day / "12-00-01")) == claimed == str(day / "12-00-00")
    assert folders(day) == ["12-00-00"]
    slurm_task(monkeypatch, rank=1)  # torchrun inside a SLURM job: torchrun's processes (Lightning's order too)
    assert launch_run_folder(str(day / "12-00-02")) == claimed
    assert cluster_environment_plugins() == []


def test_torchrun_without_its_shared_store_asks_for_a_fixed_folder(tmp_path, monkeypatch):
    become(monkeypatch, TORCHELASTIC_RUN_ID="none", WORLD_SIZE=2, RANK=1, TORCHELASTIC_USE_AGENT_STORE=False)
    with pytest.raises(UserError, match=r"cannot agree on a run folder; give them one with hydra\.run\.dir="):
        launch_run_folder(str(tmp_path / "outputs" / "2026-01-31" / "12-00-00"))


def test_lightnings_slurm_auto_requeue_is_off_under_slurm_and_nothing_is_added_elsewhere(monkeypatch):
    assert cluster_environment_plugins() == []
    slurm_task(monkeypatch, rank=0)
    (environment,) = cluster_environment_plugins()
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue is False
