"""Select's linear probe: its fit against scikit-learn's LogisticRegression on the same features, its head
in the network, and the head file a fine-tune starts from (``model.head_init``)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from tests.conftest import compose_config
from transfer_lightning.cache import use_feature_cache
from transfer_lightning.models.head_init import load_head_init, write_head_init
from transfer_lightning.selection.linear_probe import Scaling, fit_linear_probe, fit_logistic_regression
from transfer_lightning.selection.probe import _frozen_parts
from transfer_lightning.utils.errors import UserError

GRID = [1e-3, 1e-2, 1e-1, 1.0]
# 40 classes of 8 x 8 images whose colours lie close: a tiny random network's features tell them apart well, not perfectly
PROBED = ["data=synthetic", "data.num_classes=40", "data.native_size=8", "data.train_size=400", "data.val_size=200",
          "data.test_size=400", "model=timm", "model.name=test_resnet", "model.weights=null", "trainer.accelerator=cpu"]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    """Small L-BFGS problems (torch's and scikit-learn's BLAS): one thread is faster than two contending."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


def frozen_parts(tmp_path: Path):
    """The probe's data, frozen network and trainer for ``PROBED``, its feature cache under ``tmp_path``."""
    overrides = [*PROBED, f"paths.data_dir={tmp_path}"]
    L.seed_everything(0, verbose=False)  # the same random network whatever ran before: the same problem every time
    return _frozen_parts(compose_config(overrides), overrides)


def gaussian_classes(classes: int, dimension: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping classes (a linear model gets about 60-80% right), features far from zero and unscaled."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dimension, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, classes, (count,), generator=generator)
    features = 5 + 0.4 * centres[labels] + torch.randn(count, dimension, generator=generator)
    return features, labels


def sklearn_accuracy(train, test, weight_decay: float) -> float:
    """scikit-learn's L-BFGS logistic regression with the same objective: C = 1 / (weight_decay x n_train)."""
    model = LogisticRegression(C=1 / (weight_decay * len(train[1])), max_iter=2000, tol=1e-6)
    model.fit(train[0].numpy(), train[1].numpy())
    return float(model.score(test[0].numpy(), test[1].numpy()))


@pytest.mark.parametrize("weight_decay", [1e-4, 1e-2, 1e-1])
def test_logistic_regression_matches_scikit_learn_on_the_same_features(weight_decay: float) -> None:
    train, test = gaussian_classes(6, 40, 600, seed=1), gaussian_classes(6, 40, 2000, seed=2)
    scale = Scaling.of(train[0])
    train, test = (scale(train[0]), train[1]), (scale(test[0]), test[1])
    weight, bias, _ = fit_logistic_regression(*train, num_classes=6, weight_decay=weight_decay, max_iterations=1000)
    ours = float(((test[0] @ weight.T + bias).argmax(dim=1) == test[1]).float().mean())
    theirs = sklearn_accuracy(train, test, weight_decay)
    assert 0.4 < theirs < 0.95  # a problem where the fit matters
    assert abs(ours - theirs) <= 0.005


def test_the_probe_chooses_its_penalty_on_val_as_a_scikit_learn_grid_search_does(tmp_path: Path) -> None:
    """On a backbone's real pooled features (the feature cache of a tiny timm model on 40 synthetic classes)."""
    datamodule, module, trainer = frozen_parts(tmp_path)
    splits = use_feature_cache(datamodule, module, trainer).datamodule.features
    train, val, test = (splits[name] for name in ("train", "val", "test"))
    probe = fit_linear_probe(train, val, 40, GRID, max_iterations=1000)

    scale = Scaling.of(train[0])
    scaled = {name: (scale(x), y) for name, (x, y) in splits.items()}
    val_scores = {decay: sklearn_accuracy(scaled["train"], scaled["val"], decay) for decay in GRID}
    chosen = max(GRID, key=lambda decay: (val_scores[decay], decay))  # ties: the larger penalty, as the probe
    assert 0.5 < val_scores[chosen] < 1.0 and len(set(val_scores.values())) > 1  # the choice matters
    for decay in GRID:
        assert abs(probe.val_accuracies[decay] - val_scores[decay]) <= 0.005
    ours = float(probe.correct(test).float().mean())  # the head maps back to the raw features
    assert abs(ours - sklearn_accuracy(scaled["train"], scaled["test"], chosen)) <= 0.005


def test_the_probe_head_in_the_network_predicts_what_the_probe_predicts(tmp_path: Path) -> None:
    datamodule, module, trainer = frozen_parts(tmp_path)
    features = use_feature_cache(datamodule, module, trainer).datamodule.features
    probe = fit_linear_probe(features["train"], features["val"], 40, [0.1], max_iterations=1000)
    head = write_head_init(tmp_path / "probe.head.pt", probe.weight, probe.bias, list(datamodule.class_names))
    link = load_head_init(module.backbone, str(head), list(datamodule.class_names))
    assert link == {"head_init": str(head.resolve())}
    test_features = features["test"][0]
    with torch.no_grad():
        logits = module.backbone.forward_from(test_features, module.backbone.num_stages)
    assert torch.equal(logits.argmax(dim=1), probe.logits(test_features).argmax(dim=1))


def test_a_head_file_for_other_classes_or_another_model_is_one_sentence(tmp_path: Path) -> None:
    datamodule, module, _ = frozen_parts(tmp_path)
    names = list(datamodule.class_names)
    head = module.backbone.head()
    path = write_head_init(tmp_path / "h.pt", head.weight, head.bias, names)
    with pytest.raises(UserError, match=r"was fitted for other classes \(class_0, class_1, class_2, class_3"):
        load_head_init(module.backbone, str(path), list(reversed(names)))
    other = write_head_init(tmp_path / "other.pt", torch.zeros(40, 7), torch.zeros(40), names)
    with pytest.raises(UserError, match=r"holds a weight of shape \(40, 7\), but test_resnet's head needs \(40, 96\)"):
        load_head_init(module.backbone, str(other), names)
    (tmp_path / "not.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="model.head_init=.*not.pt cannot be loaded"):
        load_head_init(module.backbone, str(tmp_path / "not.pt"), names)
    torch.save({"weight": torch.zeros(1)}, tmp_path / "partial.pt")
    with pytest.raises(UserError, match="is not a head file"):
        load_head_init(module.backbone, str(tmp_path / "partial.pt"), names)


def test_scaling_centres_and_divides_by_one_number() -> None:
    features = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    scale = Scaling.of(features)
    scaled = scale(features)
    assert torch.allclose(scaled.mean(dim=0), torch.zeros(2))
    assert float(scaled.square().mean()) == pytest.approx(1.0)
    assert float(scaled[0, 1] / scaled[0, 0]) == pytest.approx(10.0)  # one scale for every feature
    assert np.isfinite(Scaling.of(torch.ones(4, 3)).scale)


def test_the_probe_reads_unmixed_features_when_the_fine_tune_recipe_mixes_images(tmp_path: Path) -> None:
    """``finetune_overrides='recipe=timm'`` (mixup and CutMix, RandAugment) belong to the fine-tune: the probe
    still reads the frozen features of the plain images from the cache (it refused, the cache being off)."""
    overrides = [*PROBED, f"paths.data_dir={tmp_path}", "recipe=timm"]
    cfg = compose_config(overrides)
    assert cfg.data.mixup_alpha > 0 and cfg.data.cutmix_alpha > 0 and cfg.data.augment != "none"
    datamodule, module, trainer = _frozen_parts(cfg, overrides)
    report = use_feature_cache(datamodule, module, trainer)
    assert report.enabled, report.reason
