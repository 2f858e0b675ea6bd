"""Every config group option composes, and the trainer config exposes every Trainer argument."""

from __future__ import annotations

import inspect
from pathlib import Path

import lightning as L
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from tests.conftest import CONFIG_DIR, compose_config

GROUPS = [
    "data",
    "model",
    "strategy",
    "optimizer",
    "scheduler",
    "loss",
    "trainer",
    "callbacks",
    "logger",
    "experiment",
    "recipe",
    "debug",
]
BUILT_ELSEWHERE = {"self", "logger", "callbacks", "plugins", "model_registry"}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in _options(g)])
def test_every_config_group_option_composes(group: str, option: str) -> None:
    cfg = compose_config([f"{group}={option}"], return_hydra_config=True)
    assert cfg.hydra.runtime.choices[group] == option
    with open_dict(cfg):
        del cfg["hydra"]  # the hydra node resolves only inside a run
    OmegaConf.resolve(cfg)  # every interpolation resolves


def test_trainer_config_lists_every_trainer_argument() -> None:
    arguments = set(inspect.signature(L.Trainer.__init__).parameters) - BUILT_ELSEWHERE
    cfg = compose_config()
    assert arguments <= set(cfg.trainer.keys()), arguments - set(cfg.trainer.keys())


def test_book_presets_match_the_book() -> None:
    fe = compose_config(["experiment=book_feature_extract"])
    assert (fe.model.name, fe.strategy.frozen_stages, fe.optimizer._target_) == ("resnet18", "all", "torch.optim.Adam")
    assert (fe.data.batch_size, fe.data.image_size, fe.trainer.max_epochs, fe.optimizer.lr) == (32, 224, 5, 1e-3)
    ft = compose_config(["experiment=book_finetune"])
    assert (ft.strategy.frozen_stages, ft.optimizer._target_, ft.optimizer.momentum) == (
        "all_but_last",
        "torch.optim.SGD",
        0.9,
    )
    full = compose_config(["experiment=book_full"])
    assert (full.strategy.frozen_stages, full.trainer.max_epochs, full.data.test_each_epoch) == (0, 10, True)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_optimizer_configs_build_over_given_parameter_groups(name: str) -> None:
    import torch

    cfg = compose_config([f"optimizer={name}"])
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = instantiate(cfg.optimizer)(params=[{"name": "head", "params": [weight], "lr": 0.5}])
    assert optimizer.param_groups[0]["name"] == "head"
    assert optimizer.param_groups[0]["lr"] == 0.5


def test_cosine_schedule_keeps_group_ratios_and_warms_up() -> None:
    import torch

    from transfer_lightning.optim.schedulers import cosine_with_warmup

    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.25}], lr=1.0)
    scheduler = cosine_with_warmup(optimizer, max_epochs=6, warmup_epochs=2)
    seen = []
    for _ in range(6):
        seen.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert seen[0][0] < seen[1][0] < seen[2][0]  # warm-up rises
    assert seen[2][0] > seen[5][0]  # cosine decays
    assert all(abs(head / 4 - other) < 1e-12 for head, other in seen)
