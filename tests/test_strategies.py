"""Freezing strategies: what trains, what stays bit-identical, and what the optimizer sees."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transfer_lightning.config.compose import compose_checked
from transfer_lightning.models import Backbone, build_backbone
from transfer_lightning.strategies import FreezeStages
from transfer_lightning.utils.cli import CONFIG_FOLDER
from transfer_lightning.utils.errors import UserError

STAGE_NAMES = ("stem", "layer1", "layer2", "layer3", "layer4")


def _resnet18(num_classes: int = 10) -> Backbone:
    return build_backbone({"name": "resnet18", "weights": None}, num_classes)


def _trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("frozen_stages", "expected"),
    [(5, 5_130), (4, 8_398_858), (0, 11_181_642)],
    ids=["feature_extract", "finetune", "full"],
)
def test_resnet18_trainable_parameter_counts_per_preset(frozen_stages: int, expected: int) -> None:
    backbone = _resnet18()
    model = backbone.model
    FreezeStages(frozen_stages=frozen_stages).apply(backbone)
    assert _trainable(model) == expected
    assert sum(p.numel() for p in model.parameters()) == 11_181_642


def test_optimizer_groups_hold_exactly_the_trainable_parameters() -> None:
    backbone = _resnet18()
    model = backbone.model
    strategy = FreezeStages(frozen_stages=3)
    strategy.apply(backbone)
    groups = strategy.param_groups(backbone, lr=0.1)
    assert [g["name"] for g in groups] == ["head", "layer4", "layer3"]
    in_groups = {id(p) for g in groups for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert in_groups == trainable


@pytest.mark.parametrize("frozen_stages", [5, 4, 2])
def test_one_step_changes_trainable_and_keeps_frozen_weights_and_bn_stats_bit_identical(
    frozen_stages: int,
) -> None:
    torch.manual_seed(0)
    backbone = _resnet18(num_classes=3)
    model = backbone.model
    strategy = FreezeStages(frozen_stages=frozen_stages)
    strategy.apply(backbone)
    model.train()
    strategy.set_train_modes(backbone)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(strategy.param_groups(backbone, lr=0.1), lr=0.1, momentum=0.9)

    loss = F.cross_entropy(model(torch.randn(4, 3, 64, 64)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    optimizer.step()

    after = model.state_dict()
    frozen = STAGE_NAMES[:frozen_stages]
    for stage in STAGE_NAMES:
        prefixes = tuple(f"{name}." for name in _attributes(backbone, stage))
        keys = [k for k in before if k.startswith(prefixes)]
        weight_keys = [k for k in keys if "running" not in k and "num_batches" not in k]
        stat_keys = [k for k in keys if "running" in k]
        if stage in frozen:
            assert all(torch.equal(before[k], after[k]) for k in keys), f"{stage} moved"
        else:
            assert any(not torch.equal(before[k], after[k]) for k in weight_keys), f"{stage} did not train"
            assert any(not torch.equal(before[k], after[k]) for k in stat_keys), f"{stage} BN stats frozen"
    assert not torch.equal(before["fc.weight"], after["fc.weight"])


def test_model_train_keeps_frozen_batchnorm_in_eval_mode() -> None:
    backbone = _resnet18()
    model = backbone.model
    strategy = FreezeStages(frozen_stages=4)
    strategy.apply(backbone)
    model.train()
    strategy.set_train_modes(backbone)
    assert not model.bn1.training and not model.layer3[0].bn1.training
    assert model.layer4[0].bn1.training


def test_train_bn_opts_into_training_batchnorm_of_frozen_stages() -> None:
    backbone = _resnet18()
    model = backbone.model
    strategy = FreezeStages(frozen_stages=5, train_bn=True)
    strategy.apply(backbone)
    model.train()
    strategy.set_train_modes(backbone)
    bn_params = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    assert _trainable(model) == 5_130 + bn_params
    assert model.layer1[0].bn1.training
    assert not model.layer1[0].conv1.weight.requires_grad
    names = [g["name"] for g in strategy.param_groups(backbone, lr=0.1)]
    assert names == ["head", "frozen_bn"]


@pytest.mark.parametrize("bad", [-1, 6, 2.5])
def test_frozen_stages_outside_range_is_refused(bad) -> None:
    with pytest.raises(UserError, match=r"strategy.frozen_stages.*5 stages.*0\.\.5"):
        FreezeStages(frozen_stages=bad)


def test_stage_parameters_partition_the_model() -> None:
    backbone = _resnet18()
    model = backbone.model
    ids = [id(p) for stage in (*STAGE_NAMES, "head") for p in backbone.stage_parameters(stage)]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def _attributes(backbone: Backbone, stage: str) -> list[str]:
    names = {id(module): name for name, module in backbone.model.named_children()}
    return [
        names[id(m)]
        for m in backbone.stage_modules(stage)
        if id(m) in names and (any(True for _ in m.parameters()) or isinstance(m, nn.BatchNorm2d))
    ]


@pytest.mark.parametrize(
    ("override", "sentence"),
    [
        ("strategy.lr_decay_unit=layer", "strategy.lr_decay_unit='layer' is not allowed; expected stage | block"),
        ("strategy.lr_decay=0", "strategy.lr_decay=0.0 is not allowed; expected a number in (0, 1], or null"),
        ("strategy.lr_decay=1.5", "strategy.lr_decay=1.5 is not allowed; expected a number in (0, 1], or null"),
        ("strategy.lr_decay=half", "strategy.lr_decay='half' is not allowed; expected a number in (0, 1], or null"),
        ("strategy.unfrozen_bn=frozen", "strategy.unfrozen_bn='frozen' is not allowed; expected train | eval"),
    ],
)
def test_each_bad_strategy_argument_is_refused_in_its_own_sentence(override: str, sentence: str) -> None:
    with pytest.raises(UserError) as refused:
        compose_checked(CONFIG_FOLDER, "config", ["strategy=finetune", override])
    assert str(refused.value) == sentence


def test_lr_decay_of_one_and_boundary_values_are_accepted() -> None:
    assert FreezeStages(lr_decay=1).lr_decay == 1.0 and FreezeStages(lr_decay=None).lr_decay is None
    assert FreezeStages(frozen_stages="all").frozen_stages == 5 and FreezeStages(frozen_stages=0).frozen_stages == 0


@pytest.mark.parametrize(
    ("arguments", "described"),
    [
        ({"frozen_stages": 3}, "FreezeStages: 3 of 5 stages frozen; trainable stages: layer3, layer4 + head"),
        (
            {"frozen_stages": 5, "train_bn": True},
            "FreezeStages: 5 of 5 stages frozen; only the head trains (+ BatchNorm of frozen stages)",
        ),
        (
            {"frozen_stages": 3, "lr_decay": 0.5},
            "FreezeStages: 3 of 5 stages frozen; trainable stages: layer3, layer4 + head; "
            "lr_decay 0.5: layer4 x0.5, layer3 x0.25 of the head's rate",
        ),
        (
            {"frozen_stages": 4, "lr_decay": 0.8, "lr_decay_unit": "block", "unfrozen_bn": "eval"},
            "FreezeStages: 4 of 5 stages frozen; trainable stages: layer4 + head; "
            "lr_decay 0.8 per block: each block x0.8 of the one above; BatchNorm of training stages in eval mode",
        ),
        ({"frozen_stages": 5, "lr_decay": 0.5}, "FreezeStages: 5 of 5 stages frozen; only the head trains"),
    ],
)
def test_the_logged_description_names_depth_trainable_stages_and_rates(arguments: dict, described: str) -> None:
    assert FreezeStages(**arguments).describe() == described


def test_fixed_strategy_has_no_state_names_its_frozen_stages_and_refuses_another_backbone() -> None:
    strategy = FreezeStages(frozen_stages=2)
    assert strategy.state_dict() == {}
    assert strategy.frozen_stage_names() == ("stem", "layer1") and strategy.frozen_stage_names(7) == ("stem", "layer1")
    assert strategy.waiting_stage_names(0) == ()
    other = FreezeStages(frozen_stages=1, stage_names=("a", "b"))
    with pytest.raises(ValueError, match=r"strategy built for stages \('a', 'b'\), backbone has \('stem', 'layer1'"):
        other.apply(_resnet18())


def test_group_rates_follow_the_head_group_and_stay_put_without_one() -> None:
    strategy = FreezeStages(frozen_stages=3, lr_decay=0.5)
    head = {"name": "head", "lr": 0.2, "lr_scale": 1.0, "params": []}
    layer4 = {"name": "layer4", "stage": "layer4", "lr": 0.0, "lr_scale": 0.5, "params": []}
    other = {"name": "other", "lr": 0.7, "params": []}  # no lr_scale: not one of the strategy's groups
    optimizer = torch.optim.SGD([head, layer4, other], lr=0.1)
    strategy.update_learning_rates(optimizer, epoch=0)
    assert [group["lr"] for group in optimizer.param_groups] == [0.2, 0.1, 0.7]
    headless = torch.optim.SGD(
        [{"name": "layer4", "stage": "layer4", "lr": 0.3, "lr_scale": 0.5, "params": []}], lr=0.1
    )
    strategy.update_learning_rates(headless, epoch=0)
    assert headless.param_groups[0]["lr"] == 0.3


def test_presets_by_meaning_resolve_on_the_backbones_stage_count_and_the_default_trains_all() -> None:
    assert FreezeStages().frozen_stages == 0
    assert FreezeStages(frozen_stages="all_but_last").frozen_stages == 4
    assert FreezeStages(frozen_stages="all_but_last", stage_names=("a", "b", "c")).frozen_stages == 2
    with pytest.raises(UserError) as refused:
        FreezeStages(frozen_stages=6)
    assert str(refused.value) == (
        "strategy.frozen_stages=6 is out of range for this backbone's 5 stages (stem, layer1, layer2, layer3, "
        "layer4); allowed: 0..5, all or all_but_last (0 = train everything, 5 = all = only the head trains)"
    )


def test_a_fixed_strategy_gates_frozen_stages_to_zero_and_trainable_ones_to_one() -> None:
    strategy = FreezeStages(frozen_stages=3)
    assert [strategy.lr_gate(stage, 0) for stage in STAGE_NAMES] == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_block_decay_names_a_group_per_block_and_a_one_block_stage_by_its_name() -> None:
    strategy = FreezeStages(frozen_stages=0, lr_decay=0.5, lr_decay_unit="block")
    groups = strategy.param_groups(_resnet18(), lr=1.0)
    names = ["head", "layer4.1", "layer4.0", "layer3.1", "layer3.0", "layer2.1", "layer2.0", "layer1.1", "layer1.0"]
    assert [g["name"] for g in groups] == [*names, "stem"]  # the stem is one block: one group named after it
    assert [g["lr"] for g in groups] == [0.5**depth for depth in range(10)]
    assert [g.get("stage") for g in groups[1:3]] == ["layer4", "layer4"]


def test_train_bn_puts_the_frozen_stages_batchnorm_affine_parameters_in_a_group_at_the_heads_rate() -> None:
    backbone = _resnet18()
    strategy = FreezeStages(frozen_stages=5, train_bn=True)
    strategy.apply(backbone)
    groups = strategy.param_groups(backbone, lr=0.1)
    affine = [
        id(p) for stage in STAGE_NAMES for layer in backbone.norm_layers(stage) for p in (layer.weight, layer.bias)
    ]
    assert [g["name"] for g in groups] == ["head", "frozen_bn"] and len(affine) == 40
    assert [id(p) for p in groups[1]["params"]] == affine and groups[1]["lr"] == 0.1
    optimizer = torch.optim.SGD(groups, lr=0.1)
    optimizer.param_groups[0]["lr"] = 0.05  # the scheduler moved the head's rate
    strategy.update_learning_rates(optimizer, epoch=0)
    assert [g["lr"] for g in optimizer.param_groups] == [0.05, 0.05]
