"""The frozen-feature cache: exact keys, never stale, self-healing files, same training as live."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import TINY, compose_config, run_cli
from transfer_lightning.cache import FeatureCache, cache_key, data_fingerprint, use_feature_cache
from transfer_lightning.cache.key import frozen_weights_fingerprint
from transfer_lightning.classifier import TransferClassifier
from transfer_lightning.run.builders import build_trainer, classifier_for
from transfer_lightning.run.checkpoint import load_classifier

SMALL = ["data.train_size=32", "data.val_size=16", "data.test_size=16", "data.batch_size=8"]


def _build(tmp_path: Path, *overrides: str, seed: int = 0):
    """Datamodule, module and trainer from the real config, as ``train.py`` builds them."""
    cfg = compose_config([*TINY, *SMALL, *overrides])  # the same for every test: composed once
    cfg.paths.data_dir, cfg.paths.output_dir = str(tmp_path / "data"), str(tmp_path / "run")
    L.seed_everything(seed, verbose=False)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    module = classifier_for(cfg, datamodule)
    trainer = build_trainer(cfg, [], False)
    return datamodule, module, trainer


def _key_inputs(module: TransferClassifier, datamodule, **changes) -> dict:
    inputs = {
        "model": "resnet18",
        "frozen_weights": frozen_weights_fingerprint(module.backbone, 5),
        "stage": 5,
        "image_size": 32,
        "preprocessing": datamodule.preprocessing,
        "device": "cpu",
        "precision": "32-true",
        "split": "train",
        "data": data_fingerprint(datamodule.splits.train),
    }
    return {**inputs, **changes}


def test_cache_key_changes_when_any_input_changes(tmp_path) -> None:
    datamodule, module, _ = _build(tmp_path)
    base = cache_key(module.backbone, **_key_inputs(module, datamodule))
    assert base == cache_key(module.backbone, **_key_inputs(module, datamodule)), "the key must be deterministic"

    images = datamodule.splits.train.images.clone()
    images[0, 0, 0, 0] ^= 1  # one pixel of one image
    changed_data = data_fingerprint(type(datamodule.splits.train)(images, datamodule.splits.train.labels))
    labels = datamodule.splits.train.labels.clone()
    labels[0] = (labels[0] + 1) % 4
    changed_labels = data_fingerprint(type(datamodule.splits.train)(datamodule.splits.train.images, labels))
    with torch.no_grad():
        module.net.layer4[1].bn2.running_mean[0] += 1e-3  # one buffer of a frozen stage
    changed_weights = frozen_weights_fingerprint(module.backbone, 5)
    variants = {
        "model": "resnet34",
        "frozen_weights": changed_weights,
        "stage": 4,
        "image_size": 64,
        "preprocessing": {**datamodule.preprocessing, "mean": [0.5, 0.5, 0.5]},
        "device": "cuda",
        "precision": "bf16-mixed",
        "split": "val",
        "data": changed_data,
    }
    keys = {
        name: cache_key(module.backbone, **_key_inputs(module, datamodule, **{name: value}))
        for name, value in variants.items()
    }
    keys["labels"] = cache_key(module.backbone, **_key_inputs(module, datamodule, data=changed_labels))
    assert base not in keys.values()
    assert len(set(keys.values())) == len(keys), "two different inputs gave the same key"


def test_head_weights_are_not_part_of_the_frozen_fingerprint(tmp_path) -> None:
    _, module, _ = _build(tmp_path)
    before = frozen_weights_fingerprint(module.backbone, 5)
    with torch.no_grad():
        module.net.fc.weight.add_(1.0)
    assert frozen_weights_fingerprint(module.backbone, 5) == before
    assert frozen_weights_fingerprint(module.backbone, 4) != frozen_weights_fingerprint(module.backbone, 5)


def test_stale_cache_is_never_used_after_the_images_or_weights_change(tmp_path, caplog) -> None:
    datamodule, module, trainer = _build(tmp_path)
    with caplog.at_level("INFO", logger="transfer_lightning.cache.setup"):
        first = use_feature_cache(datamodule, module, trainer)
        again = use_feature_cache(datamodule, module, trainer)
    assert first.enabled and first.misses == ["train", "val", "test"] and first.hits == []
    assert again.hits == ["train", "val", "test"] and again.misses == []
    folder = tmp_path / "data" / "feature_cache"
    logged = [record.getMessage() for record in caplog.records if record.name == "transfer_lightning.cache.setup"]
    assert logged == [  # the log says where the cache is and what it served
        f"Feature cache on (stage 5, {folder}): hits none, misses ['train', 'val', 'test'], "
        f"{first.seconds:.1f}s (data.feature_cache)",
        f"Feature cache on (stage 5, {folder}): hits ['train', 'val', 'test'], misses none, "
        f"{again.seconds:.1f}s (data.feature_cache)",
    ]
    # the run record (run_summary.json) reuses the fingerprints the cache was keyed on
    assert first.fingerprints == again.fingerprints == datamodule.split_fingerprints()
    assert again.summary() == {  # what run_summary.json records as feature_cache
        "enabled": True,
        "reason": again.reason,
        "stage": module.input_stage,
        "dir": str(tmp_path / "data" / "feature_cache"),
        "hits": ["train", "val", "test"],
        "misses": [],
        "seconds": round(again.seconds, 2),
    }
    assert again.stage == 5 and again.reason.startswith("on") and 0 < again.seconds < 600

    datamodule.splits.val.images[3] = 255 - datamodule.splits.val.images[3]
    changed_data = use_feature_cache(datamodule, module, trainer)
    assert changed_data.hits == ["train", "test"] and changed_data.misses == ["val"]
    assert not torch.equal(changed_data.datamodule.features["val"][0], first.datamodule.features["val"][0])

    with torch.no_grad():
        module.net.conv1.weight.mul_(1.5)
    changed_weights = use_feature_cache(datamodule, module, trainer)
    assert changed_weights.misses == ["train", "val", "test"]
    assert not torch.allclose(changed_weights.datamodule.features["train"][0], first.datamodule.features["train"][0])


def test_training_the_stages_after_the_frozen_ones_keeps_the_cache(tmp_path) -> None:
    """Resuming a fine-tuning run (or a sweep job with the same frozen stages) serves the cached
    output of the frozen stages though the stages trained after them changed."""
    datamodule, module, trainer = _build(tmp_path, "strategy=finetune")
    assert use_feature_cache(datamodule, module, trainer).misses == ["train", "val", "test"]
    with torch.no_grad():
        module.net.layer4[0].conv1.weight.mul_(1.5)  # the trainable stage, as after some training
        module.net.fc.weight.add_(1.0)
    report = use_feature_cache(datamodule, module, trainer)
    assert report.stage == 4 and report.hits == ["train", "val", "test"] and report.misses == []


# One setting changed from the first run's; every split must then be recomputed.
KEY_CHANGES = {
    "image_size": (["data.image_size=64"], None),
    "normalisation": (["data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]"], None),  # the contract's keys
    "frozen_depth": (["strategy=finetune"], None),
    "precision": (["trainer.precision=bf16-mixed"], None),
}


@pytest.mark.parametrize("change", list(KEY_CHANGES))
def test_cache_misses_through_the_real_setup_when_one_setting_changes(tmp_path, change: str) -> None:
    datamodule, module, trainer = _build(tmp_path)
    assert use_feature_cache(datamodule, module, trainer).misses == ["train", "val", "test"]
    assert use_feature_cache(datamodule, module, trainer).hits == ["train", "val", "test"]

    overrides, patch = KEY_CHANGES[change]
    datamodule, module, trainer = _build(tmp_path, *overrides)  # the same seed: the same weights and data
    if patch is not None:
        patch(datamodule)
    report = use_feature_cache(datamodule, module, trainer)
    assert report.enabled and report.misses == ["train", "val", "test"] and report.hits == []
    assert len(list((tmp_path / "data" / "feature_cache").glob("*.pt"))) == 6


def test_cache_key_includes_the_split_so_two_splits_with_the_same_images_get_two_entries(tmp_path) -> None:
    datamodule, module, trainer = _build(tmp_path, "data.val_size=32")
    datamodule.splits.val = datamodule.splits.train  # same images and labels under another split name
    report = use_feature_cache(datamodule, module, trainer)
    assert report.misses == ["train", "val", "test"] and report.hits == []
    assert len(list((tmp_path / "data" / "feature_cache").glob("*.pt"))) == 3


def test_cache_entry_records_and_is_keyed_by_everything_the_features_depend_on(tmp_path) -> None:
    datamodule, module, trainer = _build(tmp_path)
    use_feature_cache(datamodule, module, trainer)
    entries = [torch.load(p, weights_only=True) for p in (tmp_path / "data" / "feature_cache").glob("*.pt")]
    assert sorted(entry["meta"]["split"] for entry in entries) == ["test", "train", "val"]
    for entry in entries:
        inputs = {name: value for name, value in entry["meta"].items() if name != "weights_lineage"}  # not in the key
        expected = {
            "model": "resnet18",
            "frozen_weights": frozen_weights_fingerprint(module.backbone, 5),
            "stage": 5,
            "image_size": 32,
            "preprocessing": datamodule.preprocessing,
            "device": "cpu",
            "precision": "32-true",
            "split": entry["meta"]["split"],
            "data": data_fingerprint(getattr(datamodule.splits, entry["meta"]["split"])),
        }
        assert inputs == expected
        assert entry["key"] == cache_key(module.backbone, **inputs), (
            "the file's key must be the hash of exactly these inputs"
        )


@pytest.mark.parametrize("damage", ["truncated", "tampered"])
def test_corrupted_cache_file_is_detected_and_rebuilt(tmp_path, damage: str, caplog) -> None:
    cache = FeatureCache(tmp_path / "cache")
    features, labels = torch.randn(6, 8), torch.arange(6)
    path = cache.save("k" * 64, features, labels, meta={})
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    else:  # a readable file whose tensors no longer match their checksum
        entry = torch.load(path, weights_only=True)
        entry["features"][2, 3] += 1.0
        torch.save(entry, path)

    calls = []

    def compute():
        calls.append(1)
        return features, labels

    with caplog.at_level("WARNING"):
        loaded = cache.get_or_compute("k" * 64, "train", compute, meta={})
    assert calls == [1] and cache.misses == ["train"], "the damaged entry must be recomputed, not served"
    assert "rebuilding" in caplog.text
    assert torch.equal(loaded[0], features)
    assert cache.load("k" * 64) is not None, "the rebuilt entry must be valid"
    assert not list((tmp_path / "cache").glob("*.tmp")), "no temporary file may be left behind"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (["data.augment=standard"], "data.augment=standard"),
        (["strategy.train_bn=true"], "no stage stays frozen"),
        (["strategy=full"], "no stage stays frozen"),
        (["data.feature_cache=false"], "data.feature_cache=false"),
        (["strategy=finetune", "data.feature_cache_max_gb=0.0001"], "data.feature_cache_max_gb"),
    ],
    ids=["augmented", "train_bn", "full", "switched_off", "over_budget"],
)
def test_cache_stays_off_where_it_would_not_be_exact_or_not_fit(tmp_path, overrides, reason, caplog) -> None:
    datamodule, module, trainer = _build(tmp_path, *overrides)
    with caplog.at_level("INFO", logger="transfer_lightning.cache.setup"):
        report = use_feature_cache(datamodule, module, trainer)
    assert f"Feature cache {report.reason}" in caplog.messages  # the log says why
    assert not report.enabled and reason in report.reason
    assert report.datamodule is datamodule and module.input_stage == 0
    assert report.summary() == {
        "enabled": False, "reason": report.reason, "stage": 0, "dir": None, "hits": [], "misses": [], "seconds": 0.0
    }  # fmt: skip
    assert report.fingerprints == {}, "decided from the settings alone: no image is read to say no"
    assert not (tmp_path / "data" / "feature_cache").exists()


@pytest.mark.parametrize("strategy", ["feature_extract", "finetune"])
def test_training_on_cached_features_gives_the_same_logits_as_the_live_frozen_backbone(tmp_path, strategy) -> None:
    trained, head_before = {}, {}
    for mode in ("live", "cached"):
        datamodule, module, _ = _build(tmp_path / mode, f"strategy={strategy}", "trainer.max_epochs=2", seed=7)
        trainer = L.Trainer(
            accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        )  # fmt: skip
        data = datamodule
        head_before[mode] = module.net.fc.weight.detach().clone()
        if mode == "cached":
            report = use_feature_cache(datamodule, module, trainer)
            assert report.enabled and module.input_stage == (5 if strategy == "feature_extract" else 4)
            data = report.datamodule
        L.seed_everything(123, verbose=False)  # the same shuffling order for both
        trainer.fit(module, datamodule=data)
        module.input_stage = 0  # the whole model, on images, as a checkpoint is used
        trained[mode] = module.eval()

    images = datamodule.preprocessor(datamodule.splits.test.images)
    with torch.no_grad():
        live, cached = trained["live"](images), trained["cached"](images)
    assert torch.allclose(live, cached, atol=1e-4, rtol=1e-4), (live - cached).abs().max()
    for mode, model in trained.items():
        assert not torch.allclose(model.net.fc.weight, head_before[mode], atol=1e-4), f"the {mode} head did not train"


def test_cli_run_with_cache_records_misses_and_its_checkpoint_tests_the_same_live(tiny_run_args, tmp_path) -> None:
    result = run_cli(*tiny_run_args, *SMALL, "trainer.max_epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "run_summary.json").read_text())
    assert summary["feature_cache"]["enabled"] and summary["feature_cache"]["stage"] == 5
    assert summary["feature_cache"]["misses"] == ["train", "val", "test"] and summary["feature_cache"]["hits"] == []
    assert Path(summary["feature_cache"]["dir"]) == tmp_path / "data" / "feature_cache"
    assert len(list((tmp_path / "data" / "feature_cache").glob("*.pt"))) == 3
    assert "Feature cache miss: train" in result.stderr + result.stdout

    # the best checkpoint is a normal full model: tested live on images it gives the same result
    model = load_classifier(summary["best_ckpt"])
    assert model.input_stage == 0
    datamodule, _, _ = _build(tmp_path)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    live = trainer.test(model, datamodule=datamodule, verbose=False)[0]["test/acc"]
    assert live == pytest.approx(summary["test_acc"], abs=1e-6)


def test_without_a_cache_folder_the_cache_is_written_under_the_working_directory(tmp_path, monkeypatch) -> None:
    datamodule, module, trainer = _build(tmp_path)
    datamodule.feature_cache_dir = None  # a data module built in Python, without data.feature_cache_dir
    (tmp_path / "run").mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path / "run")
    report = use_feature_cache(datamodule, module, trainer)
    assert report.directory == str(tmp_path / "run" / "data" / "feature_cache")
    assert len(list((tmp_path / "run" / "data" / "feature_cache").glob("*.pt"))) == 3


def test_a_cache_miss_leaves_the_global_random_state_as_a_hit_does(tmp_path) -> None:
    """The feature pass draws no random number from the global generator, so the training that follows
    shuffles and augments the same whether the features were computed or loaded."""
    datamodule, module, trainer = _build(tmp_path)
    torch.manual_seed(7)
    assert use_feature_cache(datamodule, module, trainer).misses == ["train", "val", "test"]
    after_miss = torch.get_rng_state()
    torch.manual_seed(7)
    assert use_feature_cache(datamodule, module, trainer).hits == ["train", "val", "test"]
    assert torch.equal(torch.get_rng_state(), after_miss)


def test_the_feature_pass_reports_each_split_and_says_what_would_make_it_faster(tmp_path, monkeypatch, caplog) -> None:
    from transfer_lightning.utils import progress

    monkeypatch.setattr(progress, "LONG_PHASE_S", 0.0)  # every phase counts as long: it is announced
    monkeypatch.setattr(progress, "_PROBE_S", 0.0)
    monkeypatch.setattr(progress, "live_bar_allowed", lambda: False)  # plain lines, as in a log file
    datamodule, module, trainer = _build(tmp_path, "data.batch_size=4")  # a rate is measured from the 2nd batch
    with caplog.at_level("INFO", logger=progress.log.name):
        use_feature_cache(datamodule, module, trainer)
    for split, size in (("train", 32), ("val", 16), ("test", 16)):
        assert f"First feature pass ({split} split, 32 px): 0/{size} images (0%)" in caplog.messages
        announced = [m for m in caplog.messages if m.startswith(f"First feature pass ({split} split, 32 px), ")]
        assert len(announced) == 1 and announced[0].endswith(
            " on this CPU; later epochs and every sweep job reuse it (data.feature_cache); a GPU or a smaller "
            "data.image_size is faster"
        ), announced


def test_cache_is_off_when_a_split_is_not_an_in_memory_tensor_or_devices_are_many(tmp_path) -> None:
    from types import SimpleNamespace

    from transfer_lightning.cache.setup import FeatureCacheReport

    datamodule, module, trainer = _build(tmp_path)
    report = use_feature_cache(datamodule, module, SimpleNamespace(world_size=2))
    assert (report.enabled, report.reason, report.fingerprints) == (
        False, "off: multi-device runs compute the frozen stages live", {}
    )  # fmt: skip
    datamodule.splits.val = [datamodule.splits.val[i] for i in range(len(datamodule.splits.val))]  # a plain list
    report = use_feature_cache(datamodule, module, trainer)
    assert not report.enabled and report.reason == (
        "off: the val split is not an in-memory image tensor, so it cannot be fingerprinted"
    )
    assert report.fingerprints == datamodule.split_fingerprints() and report.fingerprints["val"] is None
    assert not (tmp_path / "data" / "feature_cache").exists()
    assert FeatureCacheReport(datamodule, False, "off", seconds=1.23456).summary()["seconds"] == 1.23


def test_the_prediction_grid_on_cached_features_shows_what_it_shows_live_and_reads_only_those_images(
    tmp_path, monkeypatch
) -> None:
    """On cached features the grid picks its examples from the logits and reads the test images of those
    alone (reading and resizing every test image cost a cache-hit job ~1 s per 1,000 test images)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from transfer_lightning.callbacks import PredictionGridImage, prediction_grid

    datamodule, module, _ = _build(tmp_path)
    shown, reads = {}, []
    draw = prediction_grid.prediction_grid_figure
    monkeypatch.setattr(prediction_grid, "prediction_grid_figure",
                        lambda examples, *args: shown.setdefault(mode, examples) and draw(examples, *args))  # fmt: skip
    test_split = type(datamodule.splits.test)
    read = test_split.__getitem__
    monkeypatch.setattr(test_split, "__getitem__", lambda split, index: reads.append(index) or read(split, index))
    for mode in ("live", "cached"):
        trainer = L.Trainer(accelerator="cpu", logger=TensorBoardLogger(tmp_path / mode), enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[PredictionGridImage(size=4)])  # fmt: skip
        data = datamodule
        if mode == "cached":
            data = use_feature_cache(datamodule, module, trainer).datamodule
            assert module.input_stage == 5
            reads.clear()
        trainer.test(module, datamodule=data, verbose=False)
    assert len(datamodule.splits.test) == 16 and len(reads) == 4  # the grid's four images, not the split
    live, cached = shown["live"], shown["cached"]
    assert torch.equal(live.targets, cached.targets) and torch.equal(live.preds, cached.preds)
    assert torch.allclose(live.images, cached.images, atol=1e-5)
