"""Every long wait shows progress: plain timed lines off a terminal, a live bar on one, sweep ETAs."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import ProcessingSpeedColumn
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import TINY, compose_config, run_cli
from transfer_lightning.callbacks import ImagesProgressBar
from transfer_lightning.callbacks.loop_progress import LoopProgress
from transfer_lightning.callbacks.progress_bar import ImagesPerSecond
from transfer_lightning.run.builders import build_callbacks
from transfer_lightning.sweeps.progress import count_jobs, job_start_line, note_sweep_start
from transfer_lightning.utils import progress
from transfer_lightning.utils.progress import INTERVAL_VARIABLE, PhaseProgress, configure_progress, format_duration

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but tab and newline: \r, ESC, ...
PERIODIC = re.compile(r": \d[\d,]*/[\d,]+ \w+ \(\d+%\), [\d,.]+ \w+/s, ETA \d+")


@pytest.fixture(autouse=True)
def _bar_setting_restored():
    yield
    configure_progress(None)


def _run_phase(total: int = 12, pause_s: float = 0.02, **kwargs) -> None:
    with PhaseProgress("Counting sheep", total, unit="sheep", **kwargs) as phase:
        for _ in range(total):
            time.sleep(pause_s)
            phase.advance()


def test_plain_lines_off_a_terminal_give_count_rate_and_eta_at_most_every_interval(caplog, capsys) -> None:
    with caplog.at_level(logging.INFO, logger="transfer_lightning.utils.progress"):
        _run_phase(total=12, pause_s=0.02, interval_s=0.1)
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "Counting sheep: 0/12 sheep (0%)"  # the start
    assert re.fullmatch(r"Counting sheep: 12/12 sheep \(100%\) in \d+ s \([\d.]+ sheep/s\)", lines[-1])  # the end
    periodic = lines[1:-1]
    assert periodic and all(PERIODIC.search(line) for line in periodic), lines
    assert len(periodic) <= 12 * 0.02 / 0.1 + 1  # at most one per interval, not one per item
    captured = capsys.readouterr()
    assert not CONTROL.search(captured.out + captured.err + "\n".join(lines))


def test_no_plain_line_between_start_and_end_within_the_interval(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="transfer_lightning.utils.progress"):
        _run_phase(total=5, pause_s=0.001, interval_s=30)
    assert len(caplog.records) == 2


def test_a_live_bar_on_a_terminal_and_only_plain_lines_with_the_bar_off(caplog, capsys, monkeypatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich treats the output as a terminal
    with caplog.at_level(logging.INFO, logger="transfer_lightning.utils.progress"):
        _run_phase(total=6, pause_s=0.02, interval_s=0.01)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1 and " in " in lines[0]  # the bar replaces the plain lines; the end is logged
    assert "Counting sheep" in capsys.readouterr().out

    configure_progress(False)  # trainer.enable_progress_bar=false
    with caplog.at_level(logging.INFO, logger="transfer_lightning.utils.progress"):
        _run_phase(total=6, pause_s=0.02, interval_s=0.01)
    captured = capsys.readouterr()
    assert not CONTROL.search(captured.out + captured.err) and "━" not in captured.out  # no bar drawn
    assert any(PERIODIC.search(record.getMessage()) for record in caplog.records)


def test_a_long_phase_is_announced_once_with_its_duration_and_what_makes_it_faster(caplog, monkeypatch) -> None:
    monkeypatch.setattr(progress, "_PROBE_S", 0.05)
    monkeypatch.setattr(progress, "LONG_PHASE_S", 0.2)
    with caplog.at_level(logging.INFO, logger="transfer_lightning.utils.progress"):
        _run_phase(total=30, pause_s=0.01, interval_s=30, faster="count fewer sheep", where="on this CPU")
        _run_phase(total=3, pause_s=0.001, interval_s=30, faster="never shown")  # too short to announce
    announced = [record.getMessage() for record in caplog.records if "about" in record.getMessage()]
    assert len(announced) == 1, announced
    assert re.fullmatch(r"Counting sheep, 30 sheep: about \d+ s on this CPU; count fewer sheep", announced[0])


class _Clock:
    """``time.monotonic`` for PhaseProgress, moved by the test: timings without sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


@pytest.mark.parametrize(("seconds_per_image", "announced"), [(0.0004, []), (0.01, ["about 8 min 21 s"])])
def test_the_first_estimate_comes_from_the_rate_measured_after_the_first_item(
    caplog, monkeypatch, seconds_per_image: float, announced: list[str]
) -> None:
    """CIFAR-10's train folder: the thread pool starts and the first image arrives after 1.2 s, then 2,500 images/s.
    Extrapolating the first item announced "about 17 h 16 min" for a 21 s phase."""
    clock = _Clock()
    monkeypatch.setattr(progress, "time", clock)
    logged = caplog.at_level(logging.INFO, logger="transfer_lightning.utils.progress")
    with logged, PhaseProgress("Decoding train", 50_000, interval_s=1e9, where="on this machine") as phase:
        clock.now = 1.2
        phase.advance()
        for _ in range(49_999):
            clock.now += seconds_per_image
            phase.advance()
    said = [re.search(r"about [\w ]+ on this machine", r.getMessage()) for r in caplog.records]
    assert [found.group(0).removesuffix(" on this machine") for found in said if found] == announced


class _Linear(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self.layer(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Stopped(Exception):
    pass


class _StopAtStep(Callback):
    """Writes a checkpoint after training step ``step`` and stops there, mid-epoch (as Ctrl-C does)."""

    def __init__(self, path: Path, step: int) -> None:
        self.path, self.step = path, step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)
            raise _Stopped


def test_a_run_resumed_mid_epoch_says_where_it_continues_and_shows_the_rest_of_that_epoch(tmp_path, caplog) -> None:
    loader = DataLoader(TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,))), batch_size=4)  # 4 steps
    options = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
               "enable_model_summary": False, "max_epochs": 3}  # fmt: skip
    checkpoint = tmp_path / "last.ckpt"
    with pytest.raises(_Stopped):
        L.Trainer(callbacks=[_StopAtStep(checkpoint, 6)], **options).fit(_Linear(), loader)  # epoch 1: 2 of 4 done
    with caplog.at_level(logging.INFO, logger="transfer_lightning"):
        L.Trainer(callbacks=[LoopProgress()], **options).fit(_Linear(), loader, ckpt_path=checkpoint)
    lines = [record.getMessage() for record in caplog.records]
    assert f"Continuing from {checkpoint}: epoch 1 (0-based) after 2 of its 4 batches, global step 6" in lines
    assert "Epoch 1 (resumed): 2/4 batches (50%)" in lines
    assert any(line.startswith("Epoch 1 (resumed): 4/4 batches (100%) in ") for line in lines), lines
    assert "Epoch 2: 0/4 batches (0%)" in lines


def test_the_terminal_bar_counts_images_per_second_not_iterations() -> None:
    cfg = compose_config(["trainer.accelerator=cpu"])
    bar = next(c for c in build_callbacks(cfg.callbacks) if isinstance(c, ProgressBar))
    assert isinstance(bar, ImagesProgressBar)
    columns = bar.configure_columns(SimpleNamespace(datamodule=SimpleNamespace(batch_size=16)))
    rates = [column for column in columns if isinstance(column, ImagesPerSecond)]
    assert len(rates) == 1 and not any(isinstance(column, ProcessingSpeedColumn) for column in columns)
    assert rates[0].render(SimpleNamespace(finished_speed=None, speed=2.5)).plain == "40.0 images/s"


def test_durations_read_as_a_person_plans_with_them() -> None:
    assert [format_duration(s) for s in (4.4, 61, 600, 1679, 3600, 7500)] == [
        "4 s", "1 min 1 s", "10 min", "28 min", "1 h", "2 h 5 min",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("params", "task", "jobs"),
    [
        ({"x.b": "1,2,3"}, ["x.a=1,2", "x.b=7,8"], 4),  # a key given again replaces the sweeper's values
        ({}, ["x.a=range(1,4)", "+y=a,b", "seed=3"], 6),
        ({}, ["x.a=interval(0,1)"], None),  # not a grid: the basic sweeper refuses it
        ({}, ["x.a=1,2", "x.c=glob(*)"], None),  # a glob over config options: not counted before composing
    ],
)
def test_the_sweep_job_count_is_the_basic_sweepers_grid(params, task, jobs) -> None:
    sweeper = {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": params}
    assert count_jobs(OmegaConf.create({"hydra": {"sweeper": sweeper, "overrides": {"task": task}}})) == jobs


def test_sweep_job_line_says_job_k_of_n_its_values_and_the_time_left(tmp_path, monkeypatch) -> None:
    sweeper = {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": {"x.b": "1,2,3"}}
    config = OmegaConf.create(
        {"hydra": {"sweeper": sweeper, "overrides": {"task": ["x.a=1,2", "seed=3"]}, "sweep": {"dir": str(tmp_path)}}}
    )
    assert count_jobs(config) == 6
    assert count_jobs(OmegaConf.create({"hydra": {"sweeper": {"n_trials": 20}}})) == 20
    monkeypatch.setenv("TRANSFER_LIGHTNING_SWEPT_KEYS", "x.a,x.b")
    for variable in ("TRANSFER_LIGHTNING_SWEEP_JOBS", "TRANSFER_LIGHTNING_SWEEP_STARTED"):
        monkeypatch.setenv(variable, "")  # note_sweep_start writes them; monkeypatch restores them
    note_sweep_start(config)
    started = float(os.environ["TRANSFER_LIGHTNING_SWEEP_STARTED"])
    job = OmegaConf.merge(config, {"hydra": {"job": {"num": 0}, "overrides": {"task": ["x.a=1", "seed=3", "x.b=1"]}}})
    assert job_start_line(job) == (
        "Sweep job 1 of 6 (x.a=1, x.b=1); the sweep's time left is estimated once a job has finished"
    )
    for number in (0, 1):  # two jobs finished, 10 minutes after the start
        (tmp_path / str(number)).mkdir()
        (tmp_path / str(number) / "run_summary.json").write_text("{}")
    job.hydra.job.num = 2
    assert job_start_line(job, now=started + 600) == (
        "Sweep job 3 of 6 (x.a=1, x.b=1); about 20 min left for the sweep (2 jobs in 10 min)"
    )


def _image_folder(root: Path, classes: int = 4, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for label in range(classes):
        (root / f"class_{label}").mkdir(parents=True)
        for index in range(per_class):
            Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(root / f"class_{label}/{index}.jpg")
    return root


def _assert_plain(result, *phases: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, result.stderr[-3000:]
    assert not CONTROL.search(output), "control characters in the output"
    for phase in phases:
        lines = [line for line in output.splitlines() if phase in line]
        assert any(PERIODIC.search(line) for line in lines), f"no periodic {phase!r} line in:\n{output[-3000:]}"


def test_feature_pass_lr_finder_epochs_test_evaluate_and_predict_print_plain_progress_lines(tmp_path) -> None:
    env = {INTERVAL_VARIABLE: "0"}  # a line at every step: any run is long enough to show one
    small = ["data.train_size=32", "data.val_size=16", "data.test_size=16", "data.batch_size=8"]
    run = tmp_path / "run"
    # 20 finder steps (the least allowed) must fit in the run: 4 batches per epoch x 5 epochs
    lr_find = ["tune.lr_find=true", "tune.num_training=20", "trainer.max_epochs=5"]
    trained = run_cli(*TINY, *small, *lr_find, f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}", env=env)
    _assert_plain(trained, "First feature pass (train split, 32 px)", "LR finder", "Epoch 0", "Test pass")
    assert "Epoch 0: 4/4 batches (100%) in" in trained.stdout  # validation batches are not counted as training

    checkpoint = run / "checkpoints" / "best.ckpt"
    folder = _image_folder(tmp_path / "photos")
    evaluated = run_cli(
        f"ckpt_path={checkpoint}", "data=image_folder", f"data.root={folder}", "data.val_fraction=0.5",
        "data.cache=memory", "data.batch_size=4", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
        f"output_dir={tmp_path / 'eval'}", f"hydra.run.dir={tmp_path / 'eval'}",
        module="transfer_lightning.evaluate", env=env,
    )  # fmt: skip
    _assert_plain(evaluated, "Decoding the images of", "Test pass")

    predicted = run_cli(
        f"ckpt_path={checkpoint}", f"inputs={folder}", "batch_size=4", "num_workers=0", "trainer.accelerator=cpu",
        f"output_dir={tmp_path / 'predict'}", module="transfer_lightning.predict", env=env,
    )  # fmt: skip
    _assert_plain(predicted, "Predict")
