"""Gradual unfreezing and discriminative learning rates: schedule, rates, BatchNorm, resume, DDP."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from tests.conftest import TINY, classifier_from_dicts, compose_config, run_cli
from tests.exit_after_epoch import EXIT_CODE
from transfer_lightning.classifier import TransferClassifier
from transfer_lightning.config.compose import compose_checked
from transfer_lightning.data import SyntheticDataModule
from transfer_lightning.models import Backbone, build_backbone
from transfer_lightning.optim.schedulers import cosine_with_warmup
from transfer_lightning.strategies import FreezeStages, GradualUnfreeze
from transfer_lightning.utils.cli import CONFIG_FOLDER
from transfer_lightning.utils.errors import UserError

GRADUAL = "transfer_lightning.strategies.GradualUnfreeze"
SMALL_DATA = ["data.train_size=32", "data.val_size=16", "data.test_size=16", "test=false"]


STAGE_NAMES = ("stem", "layer1", "layer2", "layer3", "layer4")


def _resnet18(num_classes: int = 4) -> Backbone:
    return build_backbone({"name": "resnet18", "weights": None}, num_classes)


# -- the schedule -------------------------------------------------------------------------------
def test_gradual_unfreezes_one_stage_from_the_top_every_unfreeze_every_epochs() -> None:
    strategy = GradualUnfreeze(head_epochs=1, unfreeze_every=2, min_frozen_stages=2)
    trainable = [strategy.trainable_stage_names(epoch) for epoch in range(8)]
    assert trainable == [
        (),
        ("layer4",),
        ("layer4",),
        ("layer3", "layer4"),
        ("layer3", "layer4"),
        ("layer2", "layer3", "layer4"),
        ("layer2", "layer3", "layer4"),  # min_frozen_stages=2: stem and layer1 never train
        ("layer2", "layer3", "layer4"),
    ]
    assert strategy.frozen_stages_throughout() == 2
    assert GradualUnfreeze(min_frozen_stages=2, train_bn=True).frozen_stages_throughout() == 0


def test_gradual_milestones_and_unfreeze_every_zero_set_the_epochs() -> None:
    strategy = GradualUnfreeze(milestones=[2, 2, 5], min_frozen_stages=2)
    assert [len(strategy.trainable_stage_names(e)) for e in range(7)] == [0, 0, 2, 2, 2, 3, 3]
    all_at_once = GradualUnfreeze(head_epochs=1, unfreeze_every=0)
    assert all_at_once.trainable_stage_names(0) == ()
    assert all_at_once.trainable_stage_names(1) == STAGE_NAMES


def test_gradual_refuses_milestones_that_do_not_fit_the_stages() -> None:
    with pytest.raises(UserError, match=r"strategy.milestones.*3 non-decreasing"):
        GradualUnfreeze(milestones=[1, 2], min_frozen_stages=2)


@pytest.mark.parametrize("milestones", ["[3,2,4]", "[1,-1,2]"])
def test_the_config_refuses_milestones_out_of_order_or_negative(milestones: str) -> None:
    with pytest.raises(UserError, match=r"strategy.milestones=.*a non-decreasing list of epochs >= 0"):
        compose_checked(CONFIG_FOLDER, "config", ["strategy=gradual", f"strategy.milestones={milestones}"])


def test_bad_milestones_reach_the_user_as_a_user_error_not_a_hydra_wrapper() -> None:
    with pytest.raises(UserError, match="strategy.milestones"):
        classifier_from_dicts(
            model={"name": "resnet18", "weights": None},
            strategy={"_target_": GRADUAL, "milestones": [1, 2]},
            optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1},
            scheduler=None,
            class_names=["a", "b"],
            preprocessing={},
        )


def test_config_rules_refuse_a_bad_lr_decay_and_bn_mode() -> None:
    with pytest.raises(UserError, match=r"strategy.lr_decay=2"):
        compose_checked(CONFIG_FOLDER, "config", ["strategy=gradual", "strategy.lr_decay=2"])
    with pytest.raises(UserError, match=r"strategy.unfrozen_bn='frozen'"):
        compose_checked(CONFIG_FOLDER, "config", ["strategy=finetune", "strategy.unfrozen_bn=frozen"])


# -- learning rates -----------------------------------------------------------------------------
def test_lr_decay_gives_each_stage_decay_to_the_depth_of_the_head_rate() -> None:
    backbone = _resnet18()
    groups = FreezeStages(frozen_stages=2, lr_decay=0.5).param_groups(backbone, lr=0.1)
    assert [(g["name"], g["lr"]) for g in groups] == [
        ("head", 0.1),
        ("layer4", 0.05),
        ("layer3", 0.025),
        ("layer2", 0.0125),
    ]
    no_decay = FreezeStages(frozen_stages=2).param_groups(backbone, lr=0.1)
    assert {g["lr"] for g in no_decay} == {0.1}


def test_gradual_groups_exist_from_the_start_at_rate_zero_and_follow_decay_and_warmup() -> None:
    backbone = _resnet18()
    model = backbone.model
    strategy = GradualUnfreeze(head_epochs=1, unfreeze_every=1, unfreeze_warmup_epochs=1, lr_decay=0.5)
    strategy.apply(backbone)
    groups = strategy.param_groups(backbone, lr=0.1)
    assert [g["lr"] for g in groups] == [0.1, 0, 0, 0, 0, 0]  # epoch 0's rates from the start
    optimizer = torch.optim.SGD(groups, lr=0.1)
    assert [g["name"] for g in optimizer.param_groups] == ["head", "layer4", "layer3", "layer2", "layer1", "stem"]
    assert all(p.requires_grad for p in model.parameters())  # DDP sees one fixed set of parameters
    rates = {}
    for epoch in (0, 1, 2, 6):
        strategy.update_learning_rates(optimizer, epoch)
        rates[epoch] = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert rates[0] == {"head": 0.1, "layer4": 0, "layer3": 0, "layer2": 0, "layer1": 0, "stem": 0}
    assert rates[1]["layer4"] == pytest.approx(0.1 * 0.5 * 0.5)  # first epoch of warm-up: half
    assert rates[2]["layer4"] == pytest.approx(0.1 * 0.5) and rates[2]["layer3"] == pytest.approx(0.1 * 0.25 * 0.5)
    assert rates[2]["layer2"] == 0
    assert rates[6] == pytest.approx({s: 0.1 * 0.5**d for d, s in enumerate(["head", *reversed(STAGE_NAMES)])})


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam", "adamw"])
def test_rate_zero_alone_keeps_weights_bit_identical_with_momentum_and_weight_decay(optimizer_name: str) -> None:
    """The second safety net: even with gradients present, a group at rate 0 does not move."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    groups = [{"params": model[1].parameters(), "lr": 0.1}, {"params": model[0].parameters(), "lr": 0.0}]
    make = {
        "sgd": lambda: torch.optim.SGD(groups, lr=0.1, momentum=0.9, weight_decay=0.1),
        "adam": lambda: torch.optim.Adam(groups, lr=0.1, weight_decay=0.1),
        "adamw": lambda: torch.optim.AdamW(groups, lr=0.1, weight_decay=0.1),
    }
    optimizer = make[optimizer_name]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(4, 8)).pow(2).mean().backward()
        assert model[0].weight.grad.abs().sum() > 0
        optimizer.step()
    assert torch.equal(model[0].weight, before["0.weight"]) and torch.equal(model[0].bias, before["0.bias"])
    assert not torch.equal(model[1].weight, before["1.weight"])


# -- BatchNorm ----------------------------------------------------------------------------------
def _bn_training(backbone: Backbone, stage: str) -> set[bool]:
    return {
        m.training
        for module in backbone.stage_modules(stage)
        for m in module.modules()
        if isinstance(m, nn.BatchNorm2d)
    }


def test_batchnorm_trains_only_in_unfrozen_stages_unless_unfrozen_bn_is_eval() -> None:
    backbone = _resnet18()
    model = backbone.model
    strategy = GradualUnfreeze(head_epochs=1, unfreeze_every=1)
    strategy.apply(backbone)
    model.train()
    strategy.set_train_modes(backbone, epoch=0)
    assert all(_bn_training(backbone, s) == {False} for s in STAGE_NAMES)
    model.train()
    strategy.set_train_modes(backbone, epoch=2)
    assert [_bn_training(backbone, s) for s in STAGE_NAMES] == [{False}, {False}, {False}, {True}, {True}]

    eval_bn = GradualUnfreeze(head_epochs=1, unfreeze_every=1, unfrozen_bn="eval")
    model.train()
    eval_bn.set_train_modes(backbone, epoch=2)
    assert all(_bn_training(backbone, s) == {False} for s in STAGE_NAMES)
    assert model.layer4[0].bn1.weight.requires_grad  # affine parameters still train

    train_bn = GradualUnfreeze(head_epochs=1, unfreeze_every=1, train_bn=True)
    model.train()
    train_bn.set_train_modes(backbone, epoch=0)
    assert all(_bn_training(backbone, s) == {True} for s in STAGE_NAMES)


# -- through Lightning --------------------------------------------------------------------------
def _datamodule(train_size: int = 32) -> SyntheticDataModule:
    datamodule = SyntheticDataModule(
        train_size=train_size, val_size=16, test_size=16, image_size=32, batch_size=8, num_workers=0
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def _module(datamodule, strategy: dict, optimizer: dict, scheduler: dict | None = None) -> TransferClassifier:
    return classifier_from_dicts(
        model={"name": "resnet18", "weights": None},
        strategy=strategy,
        optimizer=optimizer,
        scheduler=scheduler,
        class_names=datamodule.class_names,
        preprocessing=datamodule.preprocessing,
    )


def _trainer(max_epochs: int, callbacks: list[Callback], logger=False) -> L.Trainer:
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )


class _RateRecorder(Callback):
    """The rate of every group at every optimizer step."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, dict[str, float]]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.steps.append((trainer.current_epoch, {g["name"]: g["lr"] for g in optimizer.param_groups}))


@pytest.mark.parametrize(
    ("optimizer", "extra"),
    [
        ("torch.optim.SGD", {"momentum": 0.9, "weight_decay": 0.1}),
        ("torch.optim.Adam", {"weight_decay": 0.1}),
        ("torch.optim.AdamW", {"weight_decay": 0.1}),
    ],
    ids=["sgd_momentum", "adam", "adamw"],
)
def test_waiting_stages_stay_bit_identical_through_training_steps(optimizer: str, extra: dict) -> None:
    datamodule = _datamodule()
    strategy = {"_target_": GRADUAL, "head_epochs": 2, "lr_decay": 0.5}
    module = _module(datamodule, strategy, {"_target_": optimizer, "_partial_": True, "lr": 0.1, **extra})
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    trainer = _trainer(max_epochs=1, callbacks=[])
    trainer.fit(module, datamodule=datamodule)

    after = module.net.state_dict()
    backbone = [k for k in before if not k.startswith("fc.")]
    changed = [k for k in backbone if not torch.equal(before[k], after[k])]
    assert changed == [], changed[:5]  # weights, BN running statistics, num_batches_tracked
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    state = trainer.optimizers[0].state
    assert all(p not in state for s in STAGE_NAMES for p in module.backbone.stage_parameters(s))  # no momentum/moments


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_group_rates_keep_their_ratios_under_the_core_schedules(schedule: str, tmp_path: Path) -> None:
    datamodule = _datamodule()
    strategy = {
        "_target_": GRADUAL,
        "head_epochs": 1,
        "unfreeze_every": 1,
        "unfreeze_warmup_epochs": 1,
        "lr_decay": 0.5,
    }
    schedulers = {
        "cosine": {"_target_": "transfer_lightning.optim.schedulers.cosine_with_warmup", "_partial_": True,
                   "max_epochs": 3, "warmup_epochs": 1},
        "step": {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 1, "gamma": 0.5},
    }  # fmt: skip
    module = _module(datamodule, strategy, {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1,
                                            "momentum": 0.9}, schedulers[schedule])  # fmt: skip
    recorder, monitor = _RateRecorder(), LearningRateMonitor(logging_interval="epoch")
    _trainer(max_epochs=3, callbacks=[recorder, monitor], logger=CSVLogger(tmp_path)).fit(module, datamodule=datamodule)

    gradual = module.strategy
    factor = _cosine_factor(max_epochs=3, warmup=1) if schedule == "cosine" else (lambda e: 0.5**e)
    depths = {stage: depth for depth, stage in enumerate(["head", *reversed(STAGE_NAMES)])}
    assert len(recorder.steps) == 6
    for epoch, rates in recorder.steps:
        head = 0.1 * factor(epoch)
        assert rates["head"] == pytest.approx(head)
        for stage in STAGE_NAMES:
            assert rates[stage] == pytest.approx(head * 0.5 ** depths[stage] * gradual.lr_gate(stage, epoch)), (
                epoch,
                stage,
            )
    # the learning-rate monitor (logged before the module's epoch hooks) shows the same curves
    for stage in ("head", "layer4", "layer3"):
        logged = monitor.lrs[f"lr-SGD/{stage}"]
        expected = [
            0.1 * factor(e) * 0.5 ** depths[stage] * (gradual.lr_gate(stage, e) if stage != "head" else 1)
            for e in range(3)
        ]
        assert logged == pytest.approx(expected), stage


def _cosine_factor(max_epochs: int, warmup: int):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    return cosine_with_warmup(optimizer, max_epochs=max_epochs, warmup_epochs=warmup).lr_lambdas[0]


# -- resume and DDP through the CLI --------------------------------------------------------------
def _weights_file(path: Path) -> Path:
    torch.manual_seed(123)
    backbone = build_backbone({"name": "resnet18", "weights": None}, 1000)
    model = backbone.model
    torch.save(model.state_dict(), path)
    return path


def _net_state(checkpoint: dict) -> dict[str, torch.Tensor]:
    return {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}


def _stage_keys(state: dict, stage: str) -> list[str]:
    prefixes = {"stem": ("conv1.", "bn1.")}.get(stage, (f"{stage}.",))
    return [k for k in state if k.startswith(prefixes)]


def _same(a: dict, b: dict, stage: str) -> bool:
    return all(torch.equal(a[k], b[k]) for k in _stage_keys(a, stage))


@pytest.mark.slow  # fast cover: test_resuming_with_another_unfreezing_schedule_is_refused_not_ignored + test_resume
def test_kill_after_first_unfreeze_then_resume_trains_the_unfrozen_stage(tmp_path: Path) -> None:
    schedule = ["strategy=gradual", "strategy.head_epochs=1", "strategy.unfreeze_every=2", "strategy.lr_decay=0.5",
                "optimizer=sgd", "optimizer.lr=0.01", *SMALL_DATA]  # fmt: skip
    # monitor=null: Lightning 2.6 rewrites last.ckpt only when a top-k checkpoint is saved (val/acc
    # improved); this test needs the latest epoch in last.ckpt
    schedule.append("callbacks.model_checkpoint.monitor=null")
    killed = run_cli(
        *TINY, *schedule, "trainer.max_epochs=3", f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path}",
        "+callbacks.exit_after._target_=tests.exit_after_epoch.ExitAfterEpoch", "+callbacks.exit_after.epoch=1",
    )  # fmt: skip
    assert killed.returncode == EXIT_CODE, killed.stderr[-3000:]
    assert not (tmp_path / "run" / "run_summary.json").exists()
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    at_kill = torch.load(last, map_location="cpu", weights_only=True)
    assert at_kill["epoch"] == 1  # layer4 has trained for one epoch

    resumed = run_cli(
        *TINY, *schedule, "trainer.max_epochs=3", f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'resumed'}",
        f"paths.data_dir={tmp_path}",
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert after["epoch"] == 2
    before_state, after_state = _net_state(at_kill), _net_state(after)
    assert not _same(before_state, after_state, "layer4"), "layer4 was unfrozen before the kill and must keep training"
    for stage in ("stem", "layer1", "layer2", "layer3"):  # layer3 waits until epoch 3
        assert _same(before_state, after_state, stage), stage
    rates = _logged_rates(tmp_path / "resumed" / "tensorboard")  # the resumed epoch 2, as the LR monitor saw it
    expected = {"head": 0.01, "layer4": 0.005, "layer3": 0, "layer2": 0, "layer1": 0, "stem": 0}
    assert rates == {stage: [pytest.approx(rate)] for stage, rate in expected.items()}
    assert after["transfer_lightning"]["strategy_state"] == {
        "unfreeze_epochs": {"layer4": 1, "layer3": 3, "layer2": 5, "layer1": 7, "stem": 9}
    }


def test_resuming_with_another_unfreezing_schedule_is_refused_not_ignored() -> None:
    strategy = GradualUnfreeze(head_epochs=1, unfreeze_every=2)
    strategy.load_state_dict(GradualUnfreeze(head_epochs=1, unfreeze_every=2).state_dict())  # the same: loads
    with pytest.raises(UserError, match="a resumed run keeps its strategy"):
        strategy.load_state_dict(GradualUnfreeze(head_epochs=1, unfreeze_every=1).state_dict())
    assert strategy.unfreeze_epochs["layer3"] == 3  # this run's schedule, untouched


def _logged_rates(tensorboard_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rates: dict[str, list[float]] = {}
    for events in sorted(tensorboard_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            if tag.startswith("lr-SGD/") and not tag.endswith("momentum"):
                rates.setdefault(tag.removeprefix("lr-SGD/"), []).extend(e.value for e in accumulator.Scalars(tag))
    return rates


@pytest.mark.slow  # fast cover: test_gradual_groups_exist_from_the_start_at_rate_zero_... and tests/test_ddp.py
def test_gradual_runs_under_two_process_cpu_ddp(tmp_path: Path) -> None:
    weights = _weights_file(tmp_path / "resnet18.pth")
    result = run_cli(
        *TINY, *SMALL_DATA, "strategy=gradual", "strategy.head_epochs=1", "trainer.max_epochs=2",
        f"model.weights={weights}", "optimizer=sgd", "optimizer.lr=0.01",
        "trainer.strategy=ddp", "trainer.devices=2", "data.num_workers=0", f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.data_dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 2
    pretrained = torch.load(weights, map_location="cpu", weights_only=True)
    trained = _net_state(
        torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    )
    assert not _same(pretrained, trained, "layer4")  # unfrozen at epoch 1
    for stage in ("stem", "layer1", "layer2", "layer3"):  # still waiting at epoch 1
        assert _same(pretrained, trained, stage), stage


def test_fastai_style_preset_unfreezes_everything_after_one_epoch_with_a_hundredfold_spread() -> None:
    cfg = compose_config(["experiment=fastai_style"])
    strategy = GradualUnfreeze(**{k: v for k, v in cfg.strategy.items() if k != "_target_"})
    assert strategy.trainable_stage_names(0) == () and strategy.trainable_stage_names(1) == STAGE_NAMES
    stem_ratio = strategy.lr_decay**5
    assert 0.005 < stem_ratio < 0.02 and math.isclose(stem_ratio, 0.4**5)
    assert cfg.scheduler._target_.endswith("cosine_with_warmup")
    book = compose_config(["experiment=book_finetune"])
    assert book.strategy.frozen_stages == "all_but_last" and book.strategy.lr_decay is None


def test_one_sgd_step_on_a_waiting_stage_with_grad_present_is_blocked_by_the_module_hook() -> None:
    """on_before_optimizer_step drops the waiting stages' gradients (the first safety net)."""
    backbone = _resnet18()
    model = backbone.model
    strategy = GradualUnfreeze(head_epochs=1)
    strategy.apply(backbone)
    F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1])).backward()
    assert model.layer1[0].conv1.weight.grad is not None
    strategy.on_before_optimizer_step(backbone, epoch=0)
    assert all(p.grad is None for s in STAGE_NAMES for p in backbone.stage_parameters(s))
    assert model.fc.weight.grad is not None


@pytest.mark.parametrize(
    ("arguments", "sentence"),
    [
        ({"min_frozen_stages": 5}, "strategy.min_frozen_stages=5 is out of range for this backbone's 5 stages; allowed: 0..4"),
        ({"min_frozen_stages": -1}, "strategy.min_frozen_stages=-1 is out of range for this backbone's 5 stages; allowed: 0..4"),
    ],
)  # fmt: skip
def test_each_bad_gradual_argument_is_refused_in_its_own_sentence(arguments: dict, sentence: str) -> None:
    with pytest.raises(UserError) as refused:
        GradualUnfreeze(**arguments)
    assert str(refused.value) == sentence


@pytest.mark.parametrize(
    ("override", "sentence"),
    [
        ("strategy.unfreeze_warmup_epochs=-1", "strategy.unfreeze_warmup_epochs=-1 is not allowed; expected an integer >= 0"),
        ("strategy.unfreeze_warmup_epochs=1.5", "strategy.unfreeze_warmup_epochs=1.5 is not allowed; expected an integer >= 0"),
        ("strategy.head_epochs=-2", "strategy.head_epochs=-2 is not allowed; expected an integer >= 0"),
        ("strategy.head_epochs=true", "strategy.head_epochs=True is not allowed; expected an integer >= 0"),
        ("strategy.unfreeze_every=-1", "strategy.unfreeze_every=-1 is not allowed; expected an integer >= 0 (0 = all at once)"),
        ("strategy.milestones=[1,1.5,2]", "strategy.milestones=[1, 1.5, 2] is not allowed; expected a non-decreasing list of epochs >= 0 (one per stage), or null"),
    ],
)  # fmt: skip
def test_each_bad_gradual_setting_is_refused_by_its_schema_in_its_own_sentence(override: str, sentence: str) -> None:
    with pytest.raises(UserError) as refused:
        compose_checked(CONFIG_FOLDER, "config", ["strategy=gradual", override])
    assert str(refused.value) == sentence


def test_gradual_describes_its_schedule_and_restores_only_its_own() -> None:
    strategy = GradualUnfreeze(head_epochs=1, unfreeze_every=2, min_frozen_stages=3, unfreeze_warmup_epochs=2)
    assert strategy.describe() == (
        "GradualUnfreeze: head from epoch 0, layer4 from epoch 1, layer3 from epoch 3 (warm-up 2 epochs); "
        "never trained: stem, layer1, layer2"
    )
    assert GradualUnfreeze(milestones=[0, 0, 0, 0, 0]).describe() == (
        "GradualUnfreeze: head from epoch 0, layer4 from epoch 0, layer3 from epoch 0, layer2 from epoch 0, "
        "layer1 from epoch 0, stem from epoch 0"
    )
    strategy.load_state_dict({})  # a checkpoint without the schedule (a fixed strategy's): nothing to restore
    strategy.load_state_dict(strategy.state_dict())
    assert strategy.unfreeze_epochs == {"layer4": 1, "layer3": 3}
    assert [strategy.lr_gate("layer4", epoch) for epoch in range(5)] == [0.0, 1 / 3, 2 / 3, 1.0, 1.0]


def test_applying_a_gradual_strategy_at_an_epoch_sets_that_epochs_batchnorm_modes() -> None:
    backbone = _resnet18()
    backbone.model.train()
    GradualUnfreeze(head_epochs=1, unfreeze_every=1).apply(backbone, epoch=2)  # layer4 and layer3 train
    modes = {stage: {layer.training for layer in backbone.norm_layers(stage)} for stage in STAGE_NAMES}
    assert modes == {"stem": {False}, "layer1": {False}, "layer2": {False}, "layer3": {True}, "layer4": {True}}


def test_gradual_defaults_and_arguments_passed_to_the_base_strategy() -> None:
    default = GradualUnfreeze()
    assert default.unfreeze_epochs == {"layer4": 1, "layer3": 2, "layer2": 3, "layer1": 4, "stem": 5}
    assert default.unfreeze_warmup_epochs == 0 and default.lr_gate("layer4", 1) == 1.0
    assert GradualUnfreeze(head_epochs=0).unfreeze_epochs["layer4"] == 0  # 0 is allowed: no head-only epochs
    custom = GradualUnfreeze(lr_decay_unit="block", stage_names=("a", "b", "c"), min_frozen_stages=2)
    assert custom.lr_decay_unit == "block" and custom.stage_names == ("a", "b", "c")
    assert custom.unfreeze_epochs == {"c": 1}


@pytest.mark.parametrize("milestones", [[1, 2, 3, 4]])
def test_milestones_are_whole_epochs_one_per_stage_from_the_top(milestones: list) -> None:
    with pytest.raises(UserError) as refused:
        GradualUnfreeze(milestones=milestones, min_frozen_stages=2)
    assert str(refused.value) == (
        f"strategy.milestones={milestones!r} is not allowed; give 3 non-decreasing epochs >= 0 "
        "(one per stage from the top down: layer4, layer3, layer2)"
    )


def test_stages_whose_schedule_starts_after_the_last_epoch_are_named_and_nothing_else() -> None:
    strategy = GradualUnfreeze(head_epochs=1, unfreeze_every=2)  # layer4 1, layer3 3, layer2 5, layer1 7, stem 9
    assert strategy.stages_never_trained(3) == ("layer3", "layer2", "layer1", "stem")
    assert strategy.stages_never_trained(4) == ("layer2", "layer1", "stem")
    assert strategy.stages_never_trained(10) == () == strategy.stages_never_trained(None)
    assert strategy.schedule_warning(10) is None and FreezeStages(frozen_stages=3).schedule_warning(1) is None
    assert strategy.schedule_warning(4).startswith(
        "trainer.max_epochs=4 ends before the schedule reaches layer2, layer1, stem: they never train in this run"
    )


def test_a_schedule_longer_than_the_run_is_warned_about_and_only_what_trains_is_counted(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = run_cli(
        *TINY, *SMALL_DATA, "strategy=gradual", "trainer.max_epochs=3", "data.batch_size=16",
        f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    log = (run / "train.log").read_text()
    warned = [line for line in log.splitlines() if "ends before the schedule reaches" in line]
    assert len(warned) == 1 and "max_epochs=3 ends before the schedule reaches layer2, layer1, stem" in warned[0]

    backbone = _resnet18(num_classes=4)
    trained = sum(p.numel() for stage in ("head", "layer4", "layer3") for p in backbone.stage_parameters(stage))
    total = sum(p.numel() for p in backbone.model.parameters())
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["params"] == {"trainable": trained, "frozen": total - trained}
    assert f"Parameters: {trained:,} trainable, {total - trained:,} frozen" in log
