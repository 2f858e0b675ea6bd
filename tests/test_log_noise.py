"""Every line a run prints says what is true, once: no hint a user cannot act on, no setting that is off shown as on."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from lightning.fabric.plugins.environments import SLURMEnvironment
from omegaconf import OmegaConf

from tests.conftest import TINY, run_cli
from transfer_lightning.utils.cli import run_tool


def _fake_srun(folder: Path) -> str:
    """A PATH on which SLURM's ``srun`` exists, as on a cluster's login node."""
    folder.mkdir()
    srun = folder / "srun"
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_a_tool_does_not_pass_on_lightnings_srun_hint(tmp_path, monkeypatch) -> None:
    """evaluate, predict and export all run through run_tool; Lightning's SLURM detection warns there."""
    monkeypatch.setenv("PATH", _fake_srun(tmp_path / "bin"))
    for variable in ("SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(variable, raising=False)
    with warnings.catch_warnings(record=True) as unfiltered:
        warnings.simplefilter("always")
        SLURMEnvironment.detect()
    assert any("srun" in str(w.message) for w in unfiltered), "the hint this test is about was not raised"
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        run_tool(lambda cfg: SLURMEnvironment.detect(), OmegaConf.create({"trainer": {}}))
    assert not [w for w in shown if "srun" in str(w.message)]


def test_a_small_training_run_prints_no_hint_it_cannot_act_on_and_no_setting_that_is_off(tmp_path) -> None:
    run = tmp_path / "run"
    result = run_cli(
        *TINY, "data.train_size=32", "data.val_size=16", "test=false", f"hydra.run.dir={run}",
        f"paths.data_dir={tmp_path / 'data'}", env={"PATH": _fake_srun(tmp_path / "bin")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "srun" not in output
    assert "log_every_n_steps" not in output  # 2 batches an epoch: the epoch's metrics are logged all the same
    assert "Speed settings: channels_last; torch.compile off (compile=false)" in output
    assert "only the head trains" in output and "none + head" not in output
    summary = json.loads((run / "run_summary.json").read_text())
    preprocessing = summary["data"]["preprocessing"]
    assert preprocessing["resize_size"] == 32
    logged = [line for line in output.splitlines() if "Preprocessing: " in line]
    assert len(logged) == 1 and "Preprocessing: 32 px (resize 32, centre crop 32, " in logged[0]
    _lightning_lines_once_and_in_the_log(output, run / "train.log")


def _lightning_lines_once_and_in_the_log(output: str, log_file: Path) -> None:
    """Lightning's own lines are shown once, as the job's others are, and kept in the job's train.log."""
    shown = [line for line in output.splitlines() if "GPU available: " in line]
    assert len(shown) == 1, shown
    assert "[lightning.pytorch.utilities.rank_zero][INFO] - GPU available: " in shown[0]
    assert shown[0] in log_file.read_text().splitlines()


def test_a_sweep_job_prints_lightnings_lines_once_and_keeps_them_in_its_log(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m", *TINY, "data.train_size=32", "data.val_size=16", "test=false", "optimizer.lr=1e-3",
        f"hydra.sweep.dir={sweep}", f"paths.data_dir={tmp_path / 'data'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    _lightning_lines_once_and_in_the_log(result.stdout + result.stderr, sweep / "0" / "train.log")
