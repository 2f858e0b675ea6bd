"""The recipe's pieces (transfer_lightning/recipes/): each one does what it names, and stops doing it when it is
switched off. Augmentation, mixup, the loss, class balance, schedules, EMA, TTA, the linear probe, presets."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from timm.data.mixup import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from tests.conftest import ROOT, TINY, classifier_from_dicts, compose_config, run_cli
from transfer_lightning.analysis.report import build_report, classification_metrics
from transfer_lightning.cache.datamodule import CachedFeatureDataModule
from transfer_lightning.cache.plan import cache_plan
from transfer_lightning.callbacks import RunCheckpoint
from transfer_lightning.data import SyntheticDataModule
from transfer_lightning.data.base import ClassificationDataModule, Splits, TensorImageDataset
from transfer_lightning.models import build_backbone
from transfer_lightning.optim.schedulers import cosine_with_warmup, lightning_scheduler, one_cycle
from transfer_lightning.recipes.augment import (
    AugmentSettings,
    PerImageOperations,
    PerImageRandAugment,
    TrainAugmentation,
)
from transfer_lightning.recipes.ema import EMAWeights, exact_ema
from transfer_lightning.recipes.linear_probe import fit_linear_probe
from transfer_lightning.recipes.loss import ClassificationLoss, balanced_class_weights, build_loss
from transfer_lightning.recipes.mixup import BatchMixer, MixupSettings
from transfer_lightning.recipes.tta import FlipTTA, logits_with_tta
from transfer_lightning.run.summary import is_unbalanced

POLICIES = ("standard", "trivial", "randaugment", "augmix", "aug_transforms")
GRADUAL = "transfer_lightning.strategies.GradualUnfreeze"


# -- augmentation ---------------------------------------------------------------------------------
class _AddIndex(nn.Module):
    """An "operation" that marks the images it is applied to: adds 2**index."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images + 2.0**self.index


def test_every_image_of_a_batch_draws_its_own_randaugment_operations() -> None:
    torch.manual_seed(0)
    policy = PerImageRandAugment(ops=2, magnitude=9)
    count = len(policy.choice)
    policy.choice.operations = nn.ModuleList(_AddIndex(i) for i in range(count))  # see which ran on which image
    marks = policy(torch.zeros(64, 1, 1, 1)).flatten()
    applied = [{i for i in range(count) if int(mark) >> i & 1} for mark in marks.tolist()]
    assert all(len(ops) == 2 for ops in applied)  # two different operations on every image
    assert len({frozenset(ops) for ops in applied}) > 20  # kornia's RandAugment: one pair for the whole batch


def test_each_operation_runs_once_on_the_images_that_drew_it() -> None:
    calls = []

    class Recorder(nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            calls.append(len(images))
            return images + 1

    choice = PerImageOperations([Recorder(), Recorder()])
    out = choice(torch.zeros(5, 1, 2, 2), torch.tensor([0, 1, -1, 1, 0]))
    assert out[:, 0, 0, 0].tolist() == [1, 1, 0, 1, 1] and sorted(calls) == [2, 2]


@pytest.mark.parametrize("policy", POLICIES)
def test_each_policy_augments_every_image_differently_and_keeps_the_shape(policy: str) -> None:
    torch.manual_seed(0)
    augmentation = TrainAugmentation(AugmentSettings(policy=policy, train_crop="random_resized"), size=32)
    image = torch.rand(1, 3, 32, 32)
    out = augmentation(image.expand(16, -1, -1, -1).clone())
    assert out.shape == (16, 3, 32, 32) and out.min() >= 0 and out.max() <= 1
    distinct = {tuple(row.flatten()[:64].tolist()) for row in out}
    assert len(distinct) >= 12  # one image, 16 draws


def test_crop_scale_sets_how_much_of_the_image_a_random_resized_crop_keeps() -> None:
    torch.manual_seed(0)
    ramp = torch.linspace(0, 1, 32)
    images = (ramp.view(1, 1, 1, 32) * ramp.view(1, 1, 32, 1)).expand(32, 3, 32, 32).clone()  # smooth: a crop shows

    def distance(scale: tuple[float, float]) -> float:
        settings = AugmentSettings(policy="standard", train_crop="random_resized", crop_scale=scale)
        out = TrainAugmentation(settings, size=32)(images.clone())
        unflipped = (out - images).abs().mean(dim=(1, 2, 3))
        flipped = (out - images.flip(-1)).abs().mean(dim=(1, 2, 3))
        return float(torch.minimum(unflipped, flipped).mean())

    assert distance((0.9, 1.0)) < 0.2 * distance((0.05, 0.1))


def test_the_preprocessor_augments_in_training_only() -> None:
    datamodule = _synthetic(augment="randaugment")
    batch = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    preprocessor = datamodule.preprocessor
    assert torch.equal(preprocessor(batch, train=False), preprocessor(batch, train=False))
    assert not torch.equal(preprocessor(batch, train=True), preprocessor(batch, train=False))
    assert _synthetic(augment="none").preprocessor.augmentation is None


# -- mixup / CutMix ---------------------------------------------------------------------------------
def test_mixup_mixes_each_image_with_its_partner_and_its_target_holds_their_shares() -> None:
    torch.manual_seed(0)
    mixer = BatchMixer(MixupSettings(mixup_alpha=1.0), num_classes=4)
    images, labels = torch.rand(8, 3, 4, 4), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    mixed, targets = mixer(images.clone(), labels)
    share = targets[0, 0]  # image 0 (class 0) is mixed with image 7 (class 3)
    assert 0 < share < 1 and targets.sum(dim=1).allclose(torch.ones(8))
    assert torch.allclose(mixed[0], share * images[0] + (1 - share) * images[7], atol=1e-6)
    assert not MixupSettings().active and not MixupSettings(mixup_alpha=0, cutmix_alpha=0).active


def test_an_odd_batch_mixes_all_but_its_last_image_which_keeps_its_label() -> None:
    mixer = BatchMixer(MixupSettings(cutmix_alpha=1.0), num_classes=3)
    images, labels = torch.rand(5, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1])
    mixed, targets = mixer(images.clone(), labels)
    assert torch.equal(mixed[-1], images[-1]) and targets[-1].tolist() == [0.0, 1.0, 0.0]
    assert targets.shape == (5, 3)


def test_training_batches_are_mixed_and_evaluation_batches_are_not() -> None:
    datamodule = _synthetic(mixup_alpha=1.0)
    images, labels = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), torch.arange(8) % 4
    datamodule.trainer = SimpleNamespace(training=True)
    _, targets = datamodule.on_after_batch_transfer((images, labels), 0)
    assert targets.shape == (8, 4) and targets.dtype == torch.float32
    datamodule.trainer = SimpleNamespace(training=False)
    assert torch.equal(datamodule.on_after_batch_transfer((images, labels), 0)[1], labels)
    assert _synthetic().mixer is None


def test_train_accuracy_counts_a_mixed_image_as_right_when_its_dominant_label_is_predicted() -> None:
    module = _module(_synthetic())
    module.log = lambda *args, **kwargs: None
    module.net = nn.Sequential(nn.Flatten(), nn.LazyLinear(4))  # any network: only the metric matters here
    images = torch.rand(4, 3, 32, 32)
    logits = module(images)
    dominant = logits.argmax(dim=1)
    other = (dominant + 1) % 4
    targets = 0.7 * F.one_hot(dominant, 4) + 0.3 * F.one_hot(other, 4)
    module.training_step((images, targets.float()), 0)
    assert module.train_acc.compute() == 1.0


# -- the loss ---------------------------------------------------------------------------------------
def test_label_smoothing_is_applied_once_to_labels_and_to_mixed_targets() -> None:
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    loss = ClassificationLoss(5, label_smoothing=0.1)
    assert loss(logits, labels) == pytest.approx(float(F.cross_entropy(logits, labels, label_smoothing=0.1)))
    assert loss(logits, labels) != pytest.approx(float(F.cross_entropy(logits, labels)))
    # mixed targets: what timm's Mixup (smoothing 0.1) + SoftTargetCrossEntropy give, not smoothed twice
    images = torch.rand(6, 3, 4, 4)
    np_state = np.random.get_state()
    _, ours = BatchMixer(MixupSettings(mixup_alpha=1.0), 5)(images.clone(), labels)
    np.random.set_state(np_state)
    timm_mixup = Mixup(mixup_alpha=1.0, cutmix_alpha=0.0, label_smoothing=0.1, num_classes=5)
    _, timms = timm_mixup(images.clone(), labels)
    expected = SoftTargetCrossEntropy()(logits, timms)
    assert loss(logits, ours) == pytest.approx(float(expected))
    twice = SoftTargetCrossEntropy()(logits, timms * 0.9 + 0.1 / 5)
    assert loss(logits, ours) != pytest.approx(float(twice))


def test_balanced_class_weights_are_the_inverse_training_frequency() -> None:
    labels = torch.tensor([0] * 6 + [1] * 2 + [2] * 4)
    weights = balanced_class_weights(labels, 3)
    assert weights.tolist() == pytest.approx([12 / 18, 12 / 6, 12 / 12])
    logits = torch.randn(12, 3)
    weighted = build_loss({"label_smoothing": 0.0, "class_weights": "balanced"}, 3, labels)
    assert weighted(logits, labels) == pytest.approx(float(F.cross_entropy(logits, labels, weight=weights)))
    plain = build_loss({"label_smoothing": 0.0, "class_weights": "none"}, 3, labels)
    assert plain.class_weights is None and weighted(logits, labels) != pytest.approx(float(plain(logits, labels)))


def test_a_run_builds_its_class_weights_from_the_training_labels() -> None:
    datamodule = _synthetic()
    labels = torch.tensor([0, 0, 0, 1, 2, 3])
    module = _module(datamodule, loss={"label_smoothing": 0.0, "class_weights": "balanced"}, train_labels=labels)
    assert module.loss.class_weights.tolist() == pytest.approx(balanced_class_weights(labels, 4).tolist())
    assert module.record.loss == {"label_smoothing": 0.0, "class_weights": "balanced"}


# -- class balance: sampler and balanced accuracy -------------------------------------------------
class _Unbalanced(ClassificationDataModule):
    def load_splits(self) -> Splits:
        labels = torch.tensor([0] * 36 + [1] * 4)
        images = torch.zeros(40, 3, 8, 8, dtype=torch.uint8)
        images[:, 0] = labels.view(-1, 1, 1).to(torch.uint8)
        train = TensorImageDataset(images, labels)
        return Splits(train=train, val=train, test=train, class_names=["many", "few"])


def test_the_balanced_sampler_draws_every_class_equally_often_from_images_and_from_cached_features() -> None:
    balanced = _Unbalanced(image_size=32, batch_size=8, sampler="balanced")
    balanced.setup()
    torch.manual_seed(0)
    drawn = Counter(label for _ in range(30) for _, labels in balanced.train_dataloader() for label in labels.tolist())
    assert 0.42 < drawn[1] / sum(drawn.values()) < 0.58, drawn
    features = {split: (torch.rand(40, 5), balanced.splits.train.labels) for split in ("train", "val", "test")}
    cached = CachedFeatureDataModule(balanced, features)
    drawn = Counter(label for _ in range(30) for _, labels in cached.train_dataloader() for label in labels.tolist())
    assert 0.42 < drawn[1] / sum(drawn.values()) < 0.58, drawn
    plain = _Unbalanced(image_size=32, batch_size=8)
    plain.setup()
    assert Counter(label for _, labels in plain.train_dataloader() for label in labels.tolist()) == {0: 36, 1: 4}


def test_balanced_accuracy_stands_beside_accuracy_only_when_classes_are_unbalanced() -> None:
    def report(labels: list[int], predictions: list[int]) -> dict:
        metrics = classification_metrics(2)
        metrics.update(F.one_hot(torch.tensor(predictions), 2).float(), torch.tensor(labels))
        return build_report(metrics.compute(), ["a", "b"])

    unbalanced = report([0, 0, 0, 1], [0, 0, 0, 0])
    assert unbalanced["accuracy"] == 0.75 and unbalanced["balanced_accuracy"] == 0.5
    assert "balanced_accuracy" not in report([0, 0, 1, 1], [0, 0, 0, 0])
    assert is_unbalanced(torch.tensor([0, 0, 1])) and not is_unbalanced(torch.tensor([0, 1, 2, 0, 1, 2]))


def test_an_unbalanced_run_weights_and_balances_its_classes_and_reports_balanced_accuracy(tmp_path) -> None:
    from tests.test_image_folder import write_class_folders

    root, run = tmp_path / "photos", tmp_path / "run"
    write_class_folders(root, {"ants": 24, "honey bees": 6})
    result = run_cli(
        *[a for a in TINY if a != "data=synthetic"], "data=image_folder", f"data.root={root}", "data.image_size=32",
        "data.batch_size=8", "data.sampler=balanced", "loss.class_weights=balanced", f"hydra.run.dir={run}",
        f"paths.data_dir={tmp_path / 'data'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run / "run_summary.json").read_text())
    train = summary["data"]["class_counts"]["train"]
    total = sum(train.values())
    expected = {name: total / (2 * count) for name, count in train.items()}
    assert summary["recipe"]["class_weights"] == pytest.approx(expected) and summary["recipe"]["sampler"] == "balanced"
    per_class = summary["test_per_class_acc"]
    assert summary["test_balanced_acc"] == pytest.approx(sum(per_class.values()) / len(per_class))
    log = (run / "train.log").read_text()
    assert "every class drawn equally often (data.sampler=balanced)" in log and "class weights [" in log
    checkpoint = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert checkpoint["transfer_lightning"]["loss"] == {"label_smoothing": 0.0, "class_weights": "balanced"}


# -- schedules --------------------------------------------------------------------------------------
def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)


def _rates(schedule: dict, steps: int) -> list[float]:
    optimizer, rates = schedule["scheduler"].optimizer, []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule["scheduler"].step()
    return rates


def test_onecycle_is_stepped_per_batch_over_the_run_and_its_warmup_is_settable_in_steps_or_epochs() -> None:
    trainer = SimpleNamespace(estimated_stepping_batches=40)

    def schedule(**settings):
        factory = functools.partial(one_cycle, max_epochs=4, **settings)
        return lightning_scheduler(factory, _optimizer(), trainer)

    default = schedule()
    assert default["interval"] == "step"
    rates = _rates(default, 40)
    assert rates[0] == pytest.approx(0.1 / 5) and max(rates) == pytest.approx(0.1, rel=1e-3)
    assert rates.index(max(rates)) == 11  # the peak ends pct_start 0.3 of 40 steps (fastai's fine_tune cycle)
    assert rates[-1] < 0.1 / 5 / 1000
    by_steps = _rates(schedule(warmup_steps=5), 40)
    assert by_steps.index(max(by_steps)) == 4  # the 5th step runs at the peak
    by_epoch = _rates(schedule(warmup_epochs=1), 40)  # 10 steps per epoch
    assert by_epoch.index(max(by_epoch)) == 9


def test_cosine_warms_up_over_steps_per_batch_or_over_epochs_per_epoch() -> None:
    trainer = SimpleNamespace(estimated_stepping_batches=20)
    factory = functools.partial(cosine_with_warmup, max_epochs=2, warmup_steps=4)
    stepped = lightning_scheduler(factory, _optimizer(), trainer)
    rates = _rates(stepped, 20)
    assert stepped["interval"] == "step"
    assert rates[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1]) and rates[-1] < 0.01
    epochs = lightning_scheduler(functools.partial(cosine_with_warmup, max_epochs=2), _optimizer(), trainer)
    assert epochs["interval"] == "epoch"


# -- EMA --------------------------------------------------------------------------------------------
class _Snapshots(Callback):
    """The raw weights after every optimizer step, and the weights validation and the test run with."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []
        self.validated: list[dict[str, torch.Tensor]] = []
        self.tested: dict[str, torch.Tensor] = {}

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.steps.append({k: v.detach().clone() for k, v in pl_module.net.state_dict().items()})

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.validated.append({k: v.detach().clone() for k, v in pl_module.net.state_dict().items()})

    def on_test_start(self, trainer, pl_module) -> None:
        self.tested = {k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}


def _expected_average(steps: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    """The EMA by hand: the first update copies, then average.lerp(weights, 1 - decay); counts follow."""
    average = {k: v.clone() for k, v in steps[0].items()}
    for weights in steps[1:]:
        average = {
            k: a.lerp(weights[k], 1 - decay) if a.is_floating_point() else weights[k].clone()
            for k, a in average.items()
        }
    return average


def test_ema_checkpoint_holds_the_exact_average_of_the_raw_weights_and_frozen_stages_do_not_drift(tmp_path) -> None:
    datamodule = _synthetic(train_size=16, val_size=8, test_size=8)
    module = _module(
        datamodule, strategy={"_target_": GRADUAL, "head_epochs": 1, "lr_decay": 0.5, "min_frozen_stages": 3}
    )
    initial = {k: v.clone() for k, v in module.net.state_dict().items()}
    snapshots = _Snapshots()
    last = RunCheckpoint(dirpath=tmp_path, filename="best", monitor=None, save_last=True)  # the runs' checkpoints
    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, default_root_dir=tmp_path, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[EMAWeights(decay=0.6), snapshots, last],
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    path = tmp_path / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)

    saved = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    raw = {k.removeprefix("net."): v for k, v in checkpoint["current_model_state"].items() if k.startswith("net.")}
    expected = _expected_average(snapshots.steps, decay=0.6)
    assert all(torch.equal(saved[k], expected[k]) for k in expected)  # exactly the average of the raw weights
    assert all(torch.equal(raw[k], snapshots.steps[-1][k]) for k in raw)  # and the raw weights beside it
    assert not torch.equal(saved["fc.weight"], raw["fc.weight"]) and not torch.equal(saved["layer4.0.conv1.weight"],
                                                                                    raw["layer4.0.conv1.weight"])  # fmt: skip
    frozen = [k for k in initial if k.startswith(("conv1.", "bn1.", "layer1.", "layer2.", "layer3."))]
    assert all(torch.equal(saved[k], initial[k]) for k in frozen)  # no drift in stages that never train
    # layer4 waited through epoch 0: its average stayed its weights until it unfroze
    first_epoch = len(snapshots.steps) // 2
    waiting = _expected_average(snapshots.steps[:first_epoch], decay=0.6)
    assert torch.equal(waiting["layer4.0.conv1.weight"], initial["layer4.0.conv1.weight"])
    # validation ran on the average; the test of a checkpoint keeps its averaged weights
    assert all(torch.equal(snapshots.validated[-1][k], expected[k]) for k in expected)
    trainer.test(module, datamodule=datamodule, ckpt_path=path, verbose=False)
    assert all(torch.equal(snapshots.tested[k], expected[k]) for k in expected)


def test_the_exact_average_keeps_a_weight_that_does_not_move_and_torchs_does_not() -> None:
    weights = torch.randn(10000)
    average = weights.clone()
    update = exact_ema(0.9998, warmup=True)
    for step in range(50):
        average = update(average, weights, torch.tensor(step))
    assert torch.equal(average, weights)
    from torch.optim.swa_utils import get_ema_avg_fn

    torchs = weights.clone()
    for step in range(50):
        torchs = get_ema_avg_fn(0.9998)(torchs, weights, step)
    assert not torch.equal(torchs, weights)
    assert update(torch.tensor(3), torch.tensor(7), torch.tensor(1)) == 7  # counts follow the model


# -- test-time augmentation -------------------------------------------------------------------------
def test_flip_tta_is_the_mean_of_the_images_and_their_mirrors_logits() -> None:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.LazyLinear(3)).eval()
    images = torch.rand(4, 3, 8, 8)
    expected = (network(images) + network(images.flip(-1))) / 2
    assert torch.allclose(logits_with_tta(network, images, "flip"), expected)
    assert torch.allclose(FlipTTA(network)(images), expected)
    assert not torch.allclose(logits_with_tta(network, images, "none"), expected)


def test_evaluate_and_export_apply_tta_and_say_so(trained_run: Path, tmp_path: Path) -> None:
    from transfer_lightning.export import export_checked, tta_contract
    from transfer_lightning.run.checkpoint import load_classifier

    module = load_classifier(trained_run / "checkpoints" / "best.ckpt")
    images = torch.rand(3, 3, 32, 32)
    plain = module.net.eval()(images)
    module.tta = "flip"
    flipped = module.predict_step((images, torch.arange(3)), 0)["probs"]
    assert torch.allclose(flipped, ((plain + module.net(images.flip(-1))) / 2).softmax(dim=1), atol=1e-6)
    parity = export_checked(module, "torchscript", tmp_path / "m.pt", 4, 1e-3, tta="flip")
    exported = torch.jit.load(str(tmp_path / "m.pt"))
    assert parity["max_abs_logit_diff"] <= 1e-3
    assert torch.allclose(exported(images), (plain + module.net(images.flip(-1))) / 2, atol=1e-4)
    assert tta_contract("flip", "torchscript")["in_model"] and not tta_contract("flip", "state_dict")["in_model"]
    assert tta_contract("none", "onnx") == {"mode": "none", "in_model": False}


# -- feature cache ----------------------------------------------------------------------------------
def test_the_cache_is_off_with_one_line_under_augmentation_and_mixup() -> None:
    network = build_backbone({"name": "resnet18", "weights": None}, 4)
    common = {"setting": "auto", "frozen_stages": 5, "network": network, "image_size": 32, "num_images": 8, "max_gb": 1}
    for policy in ("trivial", "randaugment", "augmix", "aug_transforms"):
        plan = cache_plan(augment=policy, **common)
        assert plan.stage == 0 and f"data.augment={policy}" in plan.reason and "\n" not in plan.reason
    mixed = cache_plan(augment="none", mixup=True, **common)
    assert mixed.stage == 0 and "mixup" in mixed.reason and "never mixed" in mixed.reason
    assert cache_plan(augment="none", mixup=False, **common).stage == 5


# -- LP-FT ------------------------------------------------------------------------------------------
def test_lp_ft_fits_the_head_on_cached_frozen_features_then_fine_tunes_everything_at_a_smaller_rate(tmp_path) -> None:
    datamodule = _synthetic(feature_cache_dir=str(tmp_path / "cache"))
    strategy = {"_target_": "transfer_lightning.strategies.LinearProbeFinetune", "probe_max_iter": 100}
    torch.manual_seed(1)
    module = _module(datamodule, strategy=strategy)
    trainer = L.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path)
    head_before = module.backbone.head().weight.clone()
    probe = fit_linear_probe(module, datamodule, trainer, resumed=False)
    assert probe["train_acc"] == 1.0 and probe["val_acc"] >= 0.9 and "misses ['train', 'val']" in probe["features"]
    assert not torch.equal(module.backbone.head().weight, head_before)
    torch.manual_seed(1)  # the same frozen weights
    again = fit_linear_probe(_module(datamodule, strategy=strategy), datamodule, trainer, resumed=False)
    assert "hits ['train', 'val']" in again["features"]  # exact features, computed once
    groups = module.strategy.param_groups(module.backbone, lr=1e-3)
    assert {g["name"] for g in groups} == {"head", "layer4", "layer3", "layer2", "layer1", "stem"}
    assert all(g["lr"] == pytest.approx(1e-4) for g in groups)
    assert fit_linear_probe(module, datamodule, trainer, resumed=True) == {"resumed": True}
    no_probe = _module(datamodule, strategy={**strategy, "probe_max_iter": 0})
    assert fit_linear_probe(no_probe, datamodule, trainer, resumed=False) is None
    assert fit_linear_probe(_module(datamodule), datamodule, trainer, resumed=False) is None  # not LP-FT


# -- gradient accumulation ----------------------------------------------------------------------------
def test_accumulated_gradients_step_the_optimizer_every_k_batches_under_gradual_unfreezing(tmp_path) -> None:
    datamodule = _synthetic(train_size=32, batch_size=4)
    module = _module(datamodule, strategy={"_target_": GRADUAL, "head_epochs": 1, "min_frozen_stages": 4})
    layer4 = [p.detach().clone() for p in module.backbone.stage_parameters("layer4")]
    steps = []

    class Steps(Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            unchanged = all(
                torch.equal(a, b) for a, b in zip(layer4, pl_module.backbone.stage_parameters("layer4"), strict=True)
            )
            steps.append((trainer.global_step, unchanged))

    trainer = L.Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=1, accumulate_grad_batches=4,
        default_root_dir=tmp_path, callbacks=[Steps()],
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)
    assert steps == [(2, True), (4, False)]  # 8 batches an epoch, one step per 4; layer4 waits through epoch 0


def test_the_lr_finder_counts_accumulated_batches_as_one_step(tmp_path) -> None:
    from omegaconf import OmegaConf

    from transfer_lightning.run.tuning import find_learning_rate
    from transfer_lightning.utils.errors import UserError

    datamodule = _synthetic(train_size=40, batch_size=2)  # 20 batches an epoch
    module = _module(datamodule, strategy={"_target_": GRADUAL, "head_epochs": 1})
    tune = {"lr_find": True, "apply": True, "min_lr": 1e-5, "max_lr": 1.0, "num_training": 11}
    cfg = OmegaConf.create({"tune": tune, "optimizer": {"lr": 1e-3}, "ckpt_path": None})
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, accumulate_grad_batches=2, default_root_dir=tmp_path,
    )  # fmt: skip
    with pytest.raises(UserError, match=r"only 10 \(10 steps of 2 batches \(trainer.accumulate_grad_batches\)"):
        find_learning_rate(cfg, trainer, module, datamodule, tmp_path)
    cfg.tune.num_training = 10
    seen = []
    module.on_before_optimizer_step = lambda optimizer: seen.append(optimizer.param_groups[0]["lr"])
    found = find_learning_rate(cfg, trainer, module, datamodule, tmp_path)
    assert found["steps"] == len(seen) <= 10 and seen == sorted(seen)


# -- presets ----------------------------------------------------------------------------------------
def test_recipe_presets_set_their_anchors_defaults_and_name_their_sources() -> None:
    book, default = compose_config(["recipe=book"]), compose_config([])
    assert book == default  # recipe=book is what the framework does without a recipe
    timm = compose_config(["recipe=timm"])
    assert (timm.strategy.frozen_stages, timm.optimizer._target_, timm.optimizer.lr, timm.optimizer.weight_decay) == (
        0, "torch.optim.SGD", 0.0125, 2e-5)  # fmt: skip
    assert (timm.scheduler.warmup_epochs, timm.loss.label_smoothing) == (1, 0.1)
    assert (timm.data.augment, timm.data.randaugment_ops, timm.data.randaugment_magnitude) == ("randaugment", 2, 27)
    assert (timm.data.mixup_alpha, timm.data.cutmix_alpha, timm.data.train_crop) == (0.8, 1.0, "random_resized")
    assert timm.ema.enabled and timm.ema.decay == 0.9998
    fastai = compose_config(["recipe=fastai"])
    assert (fastai.strategy.head_epochs, fastai.strategy.unfreeze_every, fastai.strategy.lr_decay) == (1, 0, 0.4)
    assert (fastai.optimizer._target_, fastai.optimizer.lr, list(fastai.optimizer.betas)) == (
        "torch.optim.AdamW", 1e-3, [0.9, 0.99])  # fmt: skip
    assert (fastai.scheduler._target_.rsplit(".", 1)[1], fastai.scheduler.pct_start, fastai.scheduler.div_factor) == (
        "one_cycle", 0.3, 5.0)  # fmt: skip
    assert fastai.data.augment == "aug_transforms" and fastai.loss.label_smoothing == 0.0
    assert compose_config(["recipe=fastai", "strategy=full"]).strategy.frozen_stages == 0  # a strategy replaces it
    comments = {name: (ROOT / "conf" / "recipe" / f"{name}.yaml").read_text() for name in ("timm", "fastai")}
    assert "train.py" in comments["timm"] and "Where this preset differs" in comments["timm"]
    assert "Learner.fine_tune" in comments["fastai"] and "aug_transforms()" in comments["fastai"]


# -- helpers ----------------------------------------------------------------------------------------
def _synthetic(train_size: int = 32, val_size: int = 16, test_size: int = 16, batch_size: int = 8, **data):
    datamodule = SyntheticDataModule(
        train_size=train_size, val_size=val_size, test_size=test_size, image_size=32, batch_size=batch_size,
        num_workers=0, **data,
    )  # fmt: skip
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def _module(datamodule, strategy: dict | None = None, loss: dict | None = None, train_labels=None):
    from transfer_lightning.run.builders import build_classifier

    module = classifier_from_dicts(
        model={"name": "resnet18", "weights": None},
        strategy=strategy or {"_target_": "transfer_lightning.strategies.FreezeStages", "frozen_stages": 0},
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.05, "momentum": 0.9},
        scheduler=None,
        class_names=datamodule.class_names,
        preprocessing=datamodule.preprocessing,
    )
    if loss is None:
        return module
    return build_classifier(dataclasses.replace(module.record, loss=loss), pretrained=False, train_labels=train_labels)
