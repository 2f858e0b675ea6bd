"""Hook used by ``train.py``: decide, fill the cache (or load it) and swap the datamodule."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from transfer_lightning.cache.datamodule import CachedFeatureDataModule
from transfer_lightning.cache.key import cache_key, data_fingerprint, frozen_weights_fingerprint
from transfer_lightning.cache.plan import cache_plan
from transfer_lightning.cache.store import FeatureCache, Features
from transfer_lightning.models.backbone import eval_mode
from transfer_lightning.utils.progress import PhaseProgress

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DEFAULT_DIRECTORY = "data/feature_cache"
_FASTER = "later epochs and every sweep job reuse it (data.feature_cache); a GPU or a smaller data.image_size is faster"
_MULTI_DEVICE = "off: multi-device runs compute the frozen stages live"
_NOT_IN_MEMORY = "off: the {} split is not an in-memory image tensor, so it cannot be fingerprinted"


@dataclass
class FeatureCacheReport:
    """What the cache did for one run: the datamodule to train on, and hits/misses for the summary."""

    datamodule: L.LightningDataModule
    enabled: bool
    reason: str
    stage: int = 0
    directory: str | None = None
    hits: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)
    seconds: float = 0.0
    fingerprints: dict[str, str | None] = field(default_factory=dict)  # per split, when computed

    def summary(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "reason": self.reason,
            "stage": self.stage,
            "dir": self.directory,
            "hits": self.hits,
            "misses": self.misses,
            "seconds": round(self.seconds, 2),
        }


def use_feature_cache(datamodule: Any, module: Any, trainer: L.Trainer) -> FeatureCacheReport:
    """Serve the frozen stages' output from the cache where that is exact; else keep ``datamodule``.

    On success ``module.input_stage`` is set so the module runs only the trainable stages, and the
    returned report's ``datamodule`` serves features. Settings come from the datamodule's
    ``feature_cache`` (auto | false), ``feature_cache_dir`` and ``feature_cache_max_gb``.
    """
    splits = {name: getattr(datamodule.splits, name) for name in SPLITS}
    fingerprints: dict[str, str | None] = {}
    reason = _MULTI_DEVICE if trainer.world_size > 1 else None
    if reason is None:  # decided from the settings alone, before any image is read
        plan = cache_plan(
            setting=datamodule.feature_cache,
            frozen_stages=module.strategy.frozen_stages_throughout(),
            augment=datamodule.augment,
            network=module.backbone,
            image_size=datamodule.image_size,
            num_images=sum(len(dataset) for dataset in splits.values()),
            max_gb=datamodule.feature_cache_max_gb,
            mixup=datamodule.mixup.active,
        )
        reason = None if plan.stage else plan.reason
    if reason is None:
        fingerprints = {name: data_fingerprint(dataset) for name, dataset in splits.items()}
        reason = next((_NOT_IN_MEMORY.format(name) for name, fp in fingerprints.items() if fp is None), None)
    if reason is not None:
        log.info("Feature cache %s", reason)
        return FeatureCacheReport(datamodule, enabled=False, reason=reason, fingerprints=fingerprints)

    started = time.perf_counter()
    cache = feature_cache_of(datamodule)
    features = stored_features(cache, datamodule, module, trainer, plan.stage, splits, fingerprints)
    module.input_stage = plan.stage
    report = FeatureCacheReport(
        CachedFeatureDataModule(datamodule, features),
        enabled=True,
        reason=plan.reason,
        stage=plan.stage,
        directory=str(cache.directory),
        hits=cache.hits,
        misses=cache.misses,
        seconds=time.perf_counter() - started,
        fingerprints=fingerprints,
    )
    log.info(
        "Feature cache on (stage %d, %s): hits %s, misses %s, %.1fs (data.feature_cache)",
        plan.stage,
        cache.directory,
        report.hits or "none",
        report.misses or "none",
        report.seconds,
    )
    return report


def feature_cache_of(datamodule: Any) -> FeatureCache:
    """The cache in ``data.feature_cache_dir``, made absolute: a relative folder would follow the working
    directory, possibly into a data root."""
    return FeatureCache(Path(datamodule.feature_cache_dir or DEFAULT_DIRECTORY).expanduser().absolute())


def stored_features(
    cache: FeatureCache,
    datamodule: Any,
    module: Any,
    trainer: L.Trainer,
    stage: int,
    splits: dict[str, Dataset],
    fingerprints: dict[str, str | None],
) -> dict[str, Features]:
    """The first ``stage`` stages' output for each of ``splits`` (identified by ``fingerprints``), read from
    ``cache`` under its key, or computed and stored there."""
    device = trainer.strategy.root_device
    common = {
        "model": module.backbone.name,
        "frozen_weights": frozen_weights_fingerprint(module.backbone, stage),
        "stage": stage,
        "image_size": datamodule.image_size,
        "preprocessing": datamodule.preprocessing,  # the whole contract (Preprocessing.to_dict())
        "device": device.type,
        "precision": str(trainer.precision),
    }
    features: dict[str, Features] = {}
    for name, dataset in splits.items():
        inputs = {**common, "split": name, "data": fingerprints[name]}
        features[name] = cache.get_or_compute(
            cache_key(module.backbone, **inputs),
            name,
            lambda dataset=dataset, name=name: _compute(module, datamodule, dataset, stage, trainer, name),
            meta={**inputs, "weights_lineage": module.weights_lineage},
        )
    return features


def frozen_output(
    datamodule: Any, module: Any, trainer: L.Trainer, stage: int, names: tuple[str, ...]
) -> tuple[dict[str, Features], str]:
    """The first ``stage`` stages' output for the splits ``names`` (the linear probe's features), and how it
    was had: from the cache where the settings allow it (hits and misses), else computed for this run."""
    splits = {name: getattr(datamodule.splits, name) for name in names}
    off = datamodule.feature_cache is False or str(datamodule.feature_cache).lower() == "false"
    fingerprints = {} if off else {name: data_fingerprint(dataset) for name, dataset in splits.items()}
    if off or None in fingerprints.values() or trainer.world_size > 1:
        why = "data.feature_cache=false" if off else "multi-device run" if trainer.world_size > 1 else "not in memory"
        computed = {
            name: _compute(module, datamodule, dataset, stage, trainer, name) for name, dataset in splits.items()
        }
        return computed, f"computed for this run, not cached ({why})"
    cache = feature_cache_of(datamodule)
    features = stored_features(cache, datamodule, module, trainer, stage, splits, fingerprints)
    return features, f"feature cache hits {cache.hits or 'none'}, misses {cache.misses or 'none'} ({cache.directory})"


def _compute(module: Any, datamodule: Any, dataset: Dataset, stage: int, trainer: L.Trainer, split: str) -> Features:
    """The first ``stage`` stages' output for every image of ``dataset``, in order, as float32 on the CPU.

    Same preprocessing (``train=False``: no augmentation), device and precision context as the live
    steps, so the cached values equal what the frozen stages would compute during training.
    """
    device = trainer.strategy.root_device
    net = module.net.to(device)
    preprocessor = datamodule.preprocessor.to(device)
    # In order (no shuffle). Its own generator: creating a loader iterator draws a seed, and drawing
    # it from the global RNG would make a cache miss shuffle the training data differently from a hit.
    loader = DataLoader(
        dataset, batch_size=datamodule.batch_size, pin_memory=device.type == "cuda", generator=torch.Generator()
    )
    outputs, labels = [], []
    progress = PhaseProgress(
        f"First feature pass ({split} split, {datamodule.image_size} px)",
        len(dataset),
        faster=_FASTER,
        where=f"on this {'GPU' if device.type == 'cuda' else device.type.upper()}",
    )
    with progress, eval_mode(net), torch.inference_mode(), trainer.precision_plugin.forward_context():
        for images, targets in loader:
            batch = preprocessor(images.to(device, non_blocking=True), train=False)
            batch = batch.contiguous(memory_format=torch.channels_last)  # as the live batches
            outputs.append(module.backbone.frozen_features(batch, stage).float().cpu())
            labels.append(targets)
            progress.advance(len(targets))
    return torch.cat(outputs), torch.cat(labels)
