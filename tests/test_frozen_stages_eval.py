"""A frozen stage runs in eval mode as a whole: no stochastic depth, no dropout, the same live as cached.

ConvNeXt (torchvision, random init) has stochastic depth in every stage, so a frozen stage left in
train mode would drop paths and give another output on every call.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback

from tests.conftest import TINY, classifier_from_dicts, compose_config
from transfer_lightning.cache import use_feature_cache
from transfer_lightning.classifier import TransferClassifier
from transfer_lightning.data import SyntheticDataModule
from transfer_lightning.run.builders import build_trainer, classifier_for

CONVNEXT = {"name": "convnext_tiny", "weights": None}
GRADUAL = {"_target_": "transfer_lightning.strategies.GradualUnfreeze", "head_epochs": 1, "unfreeze_every": 1}
FINETUNE = {"_target_": "transfer_lightning.strategies.FreezeStages", "frozen_stages": "all_but_last"}


def _modes(module: TransferClassifier, stage: str) -> set[bool]:
    """The ``training`` flags of every module (and submodule) of ``stage``."""
    return {m.training for top in module.backbone.stage_modules(stage) for m in top.modules()}


class _ModeRecorder(Callback):
    """Per epoch, the train/eval flags of each stage's modules, seen at every training step."""

    def __init__(self) -> None:
        self.seen: dict[int, dict[str, set[bool]]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        epoch = self.seen.setdefault(trainer.current_epoch, {})
        for stage in pl_module.backbone.stage_names:
            epoch.setdefault(stage, set()).update(_modes(pl_module, stage))


@pytest.mark.parametrize("strategy", [FINETUNE, GRADUAL], ids=["finetune", "gradual"])
def test_every_module_of_a_frozen_or_waiting_stage_is_in_eval_mode_in_every_epoch(strategy: dict) -> None:
    datamodule = SyntheticDataModule(train_size=8, val_size=8, test_size=8, image_size=32, batch_size=4, num_workers=0)
    datamodule.prepare_data()
    datamodule.setup("fit")
    optimizer = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.01}
    module = classifier_from_dicts(
        CONVNEXT, strategy, optimizer, None, datamodule.class_names, datamodule.preprocessing
    )
    depths = [m.p for m in module.net.modules() if type(m).__name__ == "StochasticDepth"]
    assert depths and max(depths) > 0, "the test needs a backbone with stochastic depth"
    recorder = _ModeRecorder()
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=3, logger=False, callbacks=[recorder], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_train_batches=1, limit_val_batches=1,
        num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, datamodule=datamodule)  # validation (model.eval, then model.train) between epochs

    assert sorted(recorder.seen) == [0, 1, 2]
    for epoch, stages in recorder.seen.items():
        training = set(module.strategy.trainable_stage_names(epoch))
        for stage, modes in stages.items():
            assert modes == ({True} if stage in training else {False}), (epoch, stage, modes)
    assert len(training) < module.backbone.num_stages, "some stage must stay frozen to the end"


def test_cached_features_equal_the_live_frozen_stages_and_give_the_same_logits_in_train_mode(tmp_path: Path) -> None:
    cfg = compose_config(
        [*TINY, "model=convnext_tiny", "strategy=finetune", "data.train_size=8", "data.val_size=4",
         "data.test_size=4", "data.batch_size=4"]
    )  # fmt: skip
    cfg.paths.data_dir, cfg.paths.output_dir = str(tmp_path / "data"), str(tmp_path / "run")
    L.seed_everything(0, verbose=False)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    module = classifier_for(cfg, datamodule)
    with torch.no_grad():  # random init scales residual branches by 1e-6; trained weights do not hide them
        for block in module.net.modules():
            if hasattr(block, "layer_scale"):
                block.layer_scale.fill_(1.0)
    report = use_feature_cache(datamodule, module, build_trainer(cfg, [], False))
    stage = module.input_stage
    assert report.enabled and stage == 4
    cached, _ = report.datamodule.features["train"]

    images = datamodule.preprocessor(datamodule.splits.train.images, train=False)
    images = images.contiguous(memory_format=torch.channels_last)
    module.input_stage = 0
    module.train()  # as in a training step: the trainable stage4 keeps its stochastic depth
    with torch.no_grad():
        live_features = module.backbone.frozen_features(images, stage)
        assert torch.allclose(live_features, cached, atol=1e-5, rtol=1e-5), (live_features - cached).abs().max()
        torch.manual_seed(1)
        live = module(images)  # cache off: the whole network on images
        module.input_stage = stage
        torch.manual_seed(1)
        from_cache = module(cached)  # cache on: the trainable part on cached features
    assert torch.allclose(live, from_cache, atol=1e-5, rtol=1e-5), (live - from_cache).abs().max()
