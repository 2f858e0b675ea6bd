"""Freezing strategies: what trains, what stays bit-identical, and what the optimizer sees."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transfer_lightning.models import Backbone, build_backbone
from transfer_lightning.strategies import FreezeStages
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
    strategy.set_batchnorm_modes(backbone)
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
    strategy.set_batchnorm_modes(backbone)
    assert not model.bn1.training and not model.layer3[0].bn1.training
    assert model.layer4[0].bn1.training


def test_train_bn_opts_into_training_batchnorm_of_frozen_stages() -> None:
    backbone = _resnet18()
    model = backbone.model
    strategy = FreezeStages(frozen_stages=5, train_bn=True)
    strategy.apply(backbone)
    model.train()
    strategy.set_batchnorm_modes(backbone)
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
