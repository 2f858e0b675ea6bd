"""Correctness on a CUDA GPU (``pytest -m gpu``, run by ``make gpu-check`` on the lent GPU machine).

Skipped where torch sees no GPU. ``TL_GPU_TEST_DEVICE=cpu`` runs the same tests on the CPU, so they can be
dry-run before a GPU session. A GPU asked for where none is present is refused with a sentence: that is
``tests/test_cli.py::test_gpu_asked_for_without_gpu_is_an_error_not_a_cpu_run`` (it runs everywhere).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import TINY, compose_config, run_cli
from transfer_lightning.cache import use_feature_cache
from transfer_lightning.export import sample_batch
from transfer_lightning.run.builders import build_trainer, classifier_for
from transfer_lightning.run.checkpoint import load_classifier
from transfer_lightning.strategies.base import RESNET_STAGE_NAMES as STAGE_NAMES

DEVICE = os.environ.get("TL_GPU_TEST_DEVICE", "cuda")
ACCELERATOR = "gpu" if DEVICE == "cuda" else "cpu"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
# TINY with the GPU (precision auto: bf16-mixed where the GPU supports it) and a few more images
ON_DEVICE = [*(a for a in TINY if not a.startswith("trainer.accelerator")), f"trainer.accelerator={ACCELERATOR}"]
SMALL = ["data.train_size=64", "data.val_size=32", "data.test_size=32", "data.batch_size=16"]


def _build(tmp_path: Path, *overrides: str):
    cfg = compose_config([*ON_DEVICE, *SMALL, f"paths.data_dir={tmp_path / 'data'}", *overrides],
                         output_dir=str(tmp_path / "run"))  # fmt: skip
    L.seed_everything(0, verbose=False)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    module = classifier_for(cfg, datamodule)
    trainer = build_trainer(cfg, [], False)
    return datamodule, module, trainer


def test_cached_features_give_the_live_logits_under_bf16_autocast(tmp_path) -> None:
    datamodule, module, trainer = _build(tmp_path, "strategy=finetune")
    if DEVICE == "cuda" and torch.cuda.is_bf16_supported():
        assert str(trainer.precision) == "bf16-mixed", "precision auto must pick bf16 autocast on this GPU"
    report = use_feature_cache(datamodule, module, trainer)
    assert report.enabled and report.stage == 4 and report.misses == ["train", "val", "test"]
    device = trainer.strategy.root_device
    net = module.to(device).eval()
    features, _ = report.datamodule.features["test"]
    images = datamodule.splits.test.images.to(device)
    with torch.no_grad(), trainer.precision_plugin.forward_context():
        cached = net(features.to(device).contiguous(memory_format=torch.channels_last)).float()
        net.input_stage = 0
        live = net(datamodule.preprocessor.to(device)(images).contiguous(memory_format=torch.channels_last)).float()
    assert torch.allclose(cached, live, atol=2e-2, rtol=2e-2), (cached - live).abs().max()
    assert (cached.argmax(1) == live.argmax(1)).float().mean() >= 0.95


def test_frozen_batchnorm_statistics_do_not_move_while_the_last_stage_trains_on_the_gpu(tmp_path) -> None:
    datamodule, module, trainer = _build(tmp_path, "strategy=finetune", "data.feature_cache=false")
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    trainer.fit(module, datamodule=datamodule)
    after = {k: v.cpu() for k, v in module.net.state_dict().items()}
    frozen = tuple(f"{name}." for name in ("conv1", "bn1", "layer1", "layer2", "layer3"))
    assert STAGE_NAMES[:4] == ("stem", "layer1", "layer2", "layer3")
    for key, value in before.items():
        if key.startswith(frozen):
            assert torch.equal(value, after[key]), f"{key} moved in a frozen stage"
    assert not torch.equal(before["layer4.0.bn1.running_mean"], after["layer4.0.bn1.running_mean"])
    assert not torch.equal(before["fc.weight"], after["fc.weight"])


def test_a_killed_gpu_run_resumes_from_its_last_checkpoint_without_redoing_an_epoch(tmp_path) -> None:
    run = tmp_path / "run"
    args = [*ON_DEVICE, *SMALL, "strategy=finetune", "trainer.max_epochs=2", "~callbacks.early_stopping",
            f"paths.data_dir={tmp_path / 'data'}", "+callbacks.exit_after._target_=tests.exit_after_epoch.ExitAfterEpoch"]  # fmt: skip
    killed = run_cli(*args, f"hydra.run.dir={run}", env={"EXIT_AFTER_EPOCH": "0"})
    assert killed.returncode == 17, killed.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "run_summary.json").exists()
    resumed = run_cli(
        f"resume={run}", "trusted_classes=[tests.exit_after_epoch.ExitAfterEpoch]"
    )  # the run's own config (EXIT_AFTER_EPOCH unset: no exit)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"] and summary["epochs"] == 2
    assert summary["device"].startswith(DEVICE) and summary["global_step"] == 2 * 4  # 64 images / 16 per batch


@pytest.mark.parametrize("export_format", ["onnx", "torchscript"])
def test_a_gpu_trained_checkpoint_exports_with_parity(tmp_path, export_format) -> None:
    run = tmp_path / "run"
    trained = run_cli(*ON_DEVICE, *SMALL, f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={run}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert json.loads((run / "run_summary.json").read_text())["device"].startswith(DEVICE)
    ckpt = run / "checkpoints" / "best.ckpt"
    exported = run_cli(f"ckpt_path={ckpt}", f"format={export_format}", f"output_dir={tmp_path / 'export'}",
                       f"hydra.run.dir={tmp_path / 'export-run'}", module="transfer_lightning.export")  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    contract = json.loads(next((tmp_path / "export").glob("*.json")).read_text())
    assert contract["parity"]["max_abs_logit_diff"] <= 1e-3
    module = load_classifier(ckpt)  # on the CPU: a GPU-trained checkpoint needs no GPU to load
    assert next(module.parameters()).device.type == "cpu"
    with torch.no_grad():
        assert torch.isfinite(module(sample_batch(module.record.preprocessing.to_dict(), size=2, seed=1))).all()
