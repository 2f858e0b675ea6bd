"""The learning-rate finder: plot, suggestion, optimizer.lr, and the strategy's ratios during the sweep."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import TINY, classifier_from_dicts, compose_config, run_cli
from transfer_lightning.classifier import TransferClassifier
from transfer_lightning.config.check import check_config
from transfer_lightning.data import SyntheticDataModule
from transfer_lightning.run.tuning import PLOT_FILE, find_learning_rate
from transfer_lightning.utils.errors import UserError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_lr_find_writes_its_plot_and_sets_optimizer_lr_to_the_suggestion(tiny_run_args, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_cli(
        *tiny_run_args, "strategy=finetune", "strategy.lr_decay=0.5", "data.train_size=40", "data.batch_size=2",
        "data.val_size=8", "tune.lr_find=true", "tune.num_training=20", "test=false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / PLOT_FILE).read_bytes().startswith(PNG_MAGIC)
    found = json.loads((run / "run_summary.json").read_text())["lr_find"]
    assert found["applied"] and 13 <= found["steps"] <= 20 and 1e-6 <= found["suggestion"] <= 1.0
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["transfer_lightning"]["optimizer"]["lr"] == found["suggestion"]
    groups = {g["name"]: g["lr"] for g in checkpoint["optimizer_states"][0]["param_groups"]}
    assert groups == {"head": pytest.approx(found["suggestion"]), "layer4": pytest.approx(found["suggestion"] / 2)}
    # the finder's temporary checkpoint is gone and never touched checkpoints/
    assert not list(run.rglob(".lr_find*"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    images, suggestions = [], []
    for events in (run / "tensorboard").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        images += accumulator.Tags()["images"]
        if "tune/lr_suggestion" in accumulator.Tags()["scalars"]:
            suggestions += [e.value for e in accumulator.Scalars("tune/lr_suggestion")]
    assert "tune/lr_find" in images
    assert suggestions == [pytest.approx(found["suggestion"])]
    assert "LR finder: optimizer.lr" in result.stderr + result.stdout + (run / "train.log").read_text()


def _setup(
    tmp_path: Path, strategy: dict, train_size: int = 40, max_epochs: int = 1
) -> tuple[L.Trainer, TransferClassifier, SyntheticDataModule]:
    datamodule = SyntheticDataModule(
        train_size=train_size, val_size=4, test_size=4, image_size=32, batch_size=2, num_workers=0
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = classifier_from_dicts(
        model={"name": "resnet18", "weights": None},
        strategy=strategy,
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 1e-3, "momentum": 0.9},
        scheduler=None,
        class_names=datamodule.class_names,
        preprocessing=datamodule.preprocessing,
    )
    trainer = L.Trainer(
        max_epochs=max_epochs, accelerator="cpu", default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    return trainer, module, datamodule


def _tune_config(apply: bool, ckpt_path: str | None = None):
    tune = {"lr_find": True, "apply": apply, "min_lr": 1e-5, "max_lr": 1.0, "num_training": 20}
    return OmegaConf.create({"tune": tune, "optimizer": {"lr": 1e-3}, "ckpt_path": ckpt_path})


def test_lr_find_sweeps_the_head_rate_with_the_strategy_ratios_and_apply_false_keeps_lr(tmp_path: Path, caplog) -> None:
    strategy = {"_target_": "transfer_lightning.strategies.FreezeStages", "frozen_stages": 3, "lr_decay": 0.5}
    trainer, module, datamodule = _setup(tmp_path, strategy)
    sweep: list[dict[str, float]] = []
    module.on_before_optimizer_step = lambda optimizer: sweep.append(
        {g["name"]: g["lr"] for g in optimizer.param_groups}
    )
    weights_before = {k: v.clone() for k, v in module.state_dict().items()}

    with caplog.at_level(logging.INFO):
        found = find_learning_rate(_tune_config(apply=False), trainer, module, datamodule, tmp_path)

    # our progress counts the finder's steps (torch's optimizer step hook), not Lightning's tqdm bar
    assert f"LR finder: {found['steps']}/20 steps" in caplog.text
    assert len(sweep) == found["steps"] >= 13 and sweep[0]["head"] == pytest.approx(1e-5)  # may stop on divergence
    heads = [step["head"] for step in sweep]
    assert heads == sorted(heads) and heads[-1] > 100 * heads[0]
    for step in sweep:  # Lightning sets every group to one rate; the module re-derives the ratios
        assert step["layer4"] == pytest.approx(step["head"] / 2) and step["layer3"] == pytest.approx(step["head"] / 4)
    assert found["applied"] is False and found["suggestion"] is not None
    assert module.learning_rate == 1e-3
    assert (tmp_path / PLOT_FILE).read_bytes().startswith(PNG_MAGIC)
    assert all(torch.equal(weights_before[k], v) for k, v in module.state_dict().items())  # the sweep is undone


def test_lr_find_is_not_run_again_on_resume_and_refuses_distributed_runs(tmp_path: Path) -> None:
    strategy = {"_target_": "transfer_lightning.strategies.FreezeStages", "frozen_stages": 5}
    trainer, module, datamodule = _setup(tmp_path, strategy)
    resumed = find_learning_rate(_tune_config(apply=True, ckpt_path="last.ckpt"), trainer, module, datamodule, tmp_path)
    assert resumed == {"resumed": True, "lr": 1e-3} and not (tmp_path / PLOT_FILE).exists()
    ddp = L.Trainer(accelerator="cpu", strategy="ddp", devices=2, logger=False)
    with pytest.raises(UserError, match="one device"):
        find_learning_rate(_tune_config(apply=True), ddp, module, datamodule, tmp_path)


def test_lr_find_refuses_more_steps_than_the_run_has_before_searching(tmp_path: Path) -> None:
    strategy = {"_target_": "transfer_lightning.strategies.FreezeStages", "frozen_stages": 5}
    trainer, module, datamodule = _setup(tmp_path, strategy)  # 40 images, batches of 2: 20 steps per epoch
    tune = _tune_config(apply=True)
    tune.tune.num_training = 21
    with pytest.raises(
        UserError, match=r"only 20 \(20 steps per epoch x trainer.max_epochs=1\).*num_training=20 or less"
    ):
        find_learning_rate(tune, trainer, module, datamodule, tmp_path)
    assert not (tmp_path / PLOT_FILE).exists()  # refused before the search started


def test_the_training_entry_point_switches_off_tqdm_bars_that_do_not_ask_for_themselves() -> None:
    """Lightning's LR finder draws a tqdm bar (carriage returns in a log file); tqdm's public TQDM_DISABLE,
    read when tqdm is imported, turns it off, so it must be set before anything imports tqdm."""
    probe = (
        "import os; os.environ.pop('TQDM_DISABLE', None); import transfer_lightning.__main__; "
        "import lightning.pytorch.tuner.lr_finder; from tqdm import tqdm; "
        "print(tqdm(total=1).disable, tqdm(total=1, disable=False).disable)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "False"]


@pytest.mark.parametrize(("train_size", "advice"), [(12, "trainer.max_epochs=4"), (44, "tune.num_training=22")])
def test_the_advice_for_too_few_steps_is_one_the_checks_accept(tmp_path: Path, train_size: int, advice: str) -> None:
    """6 steps per epoch: fewer than the 20 the finder may be set to, so the advice is more epochs, not
    tune.num_training=6; 22 steps: either fix works. The advice given is then taken and accepted."""
    strategy = {"_target_": "transfer_lightning.strategies.FreezeStages", "frozen_stages": 5}
    trainer, module, datamodule = _setup(tmp_path, strategy, train_size=train_size)  # batches of 2
    tune = _tune_config(apply=False)
    tune.tune.num_training = 24
    with pytest.raises(UserError) as refused:
        find_learning_rate(tune, trainer, module, datamodule, tmp_path)
    offered = re.findall(r"set (\S+)=(\d+)", str(refused.value))
    assert f"set {advice} or more" in str(refused.value) or f"set {advice} or less" in str(refused.value)
    for key, value in offered:
        config = compose_config([*TINY, "tune.num_training=24", f"{key}={value}"])
        check_config(config)  # the check every command runs accepts it
        tune.tune.num_training = config.tune.num_training
        trainer, module, datamodule = _setup(tmp_path, strategy, train_size, config.trainer.max_epochs)
        assert find_learning_rate(tune, trainer, module, datamodule, tmp_path)["steps"] >= 1  # and the run does
