"""The feature cache's plan, decided from the settings before any feature is computed: every reason it
stays off, the stage and shape it caches, and its memory estimate."""

from __future__ import annotations

import pytest
from torch import nn

from transfer_lightning.cache.plan import BYTES_PER_VALUE, cache_plan, feature_shape
from transfer_lightning.models import build_backbone
from transfer_lightning.models.backbone import eval_mode


@pytest.fixture(scope="module")
def resnet18():
    return build_backbone({"name": "resnet18", "weights": None}, 4)


@pytest.mark.parametrize(
    ("setting", "frozen", "augment", "reason"),
    [
        (False, 5, "none", "off (data.feature_cache=false)"),
        ("false", 5, "none", "off (data.feature_cache=false)"),
        ("FALSE", 5, "none", "off (data.feature_cache=false)"),
        ("auto", 0, "none", "off: no stage stays frozen for the whole run (nothing to cache)"),
        ("auto", 5, "standard", "off: data.augment=standard changes the training images every epoch, so the "
                                "frozen output is not fixed"),
    ],
)  # fmt: skip
def test_each_reason_to_stay_off_is_given_in_its_words(resnet18, setting, frozen, augment, reason) -> None:
    plan = cache_plan(setting, frozen, augment, resnet18, 32, num_images=10, max_gb=1.0)
    assert (plan.stage, plan.reason, plan.feature_shape, plan.estimated_bytes) == (0, reason, (), 0)


@pytest.mark.parametrize(("frozen", "shape"), [(5, (512,)), (4, (256, 2, 2)), (1, (64, 8, 8))])
def test_the_plan_caches_the_frozen_stages_output_with_its_shape_and_size(resnet18, frozen, shape) -> None:
    plan = cache_plan("auto", frozen, "none", resnet18, 32, num_images=10, max_gb=1.0)
    assert plan.stage == frozen and plan.reason == f"on: caching the output of {frozen} frozen stages"
    numel = 1
    for side in shape:
        numel *= side
    assert plan.feature_shape == shape and plan.estimated_bytes == 10 * BYTES_PER_VALUE * numel


def test_a_cache_over_the_memory_budget_stays_off_and_says_what_it_would_need(resnet18) -> None:
    plan = cache_plan("auto", 4, "none", resnet18, 32, num_images=1000, max_gb=0.001)
    needed = 1000 * BYTES_PER_VALUE * 256 * 2 * 2  # 4,096,000 bytes: 0.0038 GB
    assert (plan.stage, plan.feature_shape, plan.estimated_bytes) == (0, (256, 2, 2), needed)
    assert plan.reason == (
        "off: caching stage 4 output (256, 2, 2) for 1000 images needs 0.00381 GB > data.feature_cache_max_gb=0.001 "
        "(raise it, freeze more stages or lower data.image_size)"
    )
    fits = cache_plan("auto", 4, "none", resnet18, 32, num_images=1000, max_gb=needed / 2**30)
    assert fits.stage == 4  # exactly at the budget: on
    over = cache_plan("auto", 4, "none", resnet18, 32, num_images=1000, max_gb=0.75 * needed / 2**30)
    assert over.stage == 0  # a quarter over (GB of 2**30 bytes): off


def test_the_shape_dry_run_leaves_every_module_in_its_own_mode(resnet18) -> None:
    model = resnet18.model.train()
    model.layer1.eval()  # a frozen stage in eval mode, the rest training
    assert feature_shape(resnet18, 5, 32) == (512,)
    assert model.training and not model.layer1.training and model.layer2.training
    layer = nn.Linear(2, 2).train()
    with eval_mode(layer):
        assert not layer.training
    assert layer.training
