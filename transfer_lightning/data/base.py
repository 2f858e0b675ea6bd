"""The shared LightningDataModule: splits of uint8 images, loaders, on-device preprocessing."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler

from transfer_lightning.data.contract import Preprocessing, default_preprocessing, resolve_preprocessing
from transfer_lightning.data.fingerprint import split_fingerprint
from transfer_lightning.data.transforms import BatchPreprocessor
from transfer_lightning.recipes.augment import AugmentSettings, TrainAugmentation
from transfer_lightning.recipes.mixup import BatchMixer, MixupSettings
from transfer_lightning.utils.errors import UserError

log = logging.getLogger(__name__)


class TensorImageDataset(Dataset):
    """In-memory uint8 images ``(N, 3, H, W)`` with integer labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def subset(self, indices: torch.Tensor) -> TensorImageDataset:
        return TensorImageDataset(self.images[indices], self.labels[indices])


@dataclass
class Splits:
    """What a concrete data module provides: three datasets and the class names."""

    train: Dataset
    val: Dataset
    test: Dataset
    class_names: list[str]
    notes: dict[str, Any] = field(default_factory=dict)  # recorded in run_summary.json


class ClassificationDataModule(L.LightningDataModule):
    """Base class: subclasses implement ``load_splits`` returning uint8 image datasets.

    Images stay uint8 through the loader (4x less memory and copy than float); the
    ``BatchPreprocessor`` augments (training only: ``augment`` and its strengths, ``recipes/augment.py``),
    resizes and normalises each batch after it reached the device, in ``on_after_batch_transfer``, where
    training batches are then mixed (``mixup_alpha`` / ``cutmix_alpha``: ``recipes/mixup.py``; their
    labels become class shares). ``sampler="balanced"`` draws every class equally often in training.

    ``preprocessing`` is the contract (``data/contract.py``) resolved by the caller from the
    model's defaults and the ``data.*`` keys; without it, those keys are applied over ImageNet's
    defaults. A subclass whose images are not decoded from files at ``image_size`` declares its
    own decode step in ``declare_contract``.
    """

    in_memory = True  # in-memory datasets need no worker processes
    # the splits a command uses: all three for training; evaluate asks for one (``serve_only``), and a data
    # module may then decode that split alone
    needed_splits: tuple[str, ...] = ("train", "val", "test")

    def __init__(
        self,
        image_size: int | None = None,
        resize_size: int | None = None,
        interpolation: str | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        preprocessing: Preprocessing | Mapping[str, Any] | None = None,
        augment: str = "none",
        train_crop: str = "pad",
        crop_scale: tuple[float, float] | list[float] = (0.08, 1.0),
        color_jitter: float = 0.0,
        randaugment_ops: int = 2,
        randaugment_magnitude: int = 9,
        augmix_severity: int = 3,
        augmix_width: int = 3,
        aug_transforms_mult: float = 1.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        mixup_mode: str = "batch",
        sampler: str = "none",
        batch_size: int = 32,
        num_workers: int | str = "auto",
        test_each_epoch: bool = False,
        feature_cache: str | bool = "auto",
        feature_cache_dir: str | None = None,
        feature_cache_max_gb: float = 4.0,
    ) -> None:
        super().__init__()
        if preprocessing is not None and not isinstance(preprocessing, Preprocessing):
            preprocessing = Preprocessing.from_dict(preprocessing)  # hydra.utils.instantiate passes a DictConfig
        if preprocessing is None:
            keys = {"image_size": image_size, "resize_size": resize_size, "interpolation": interpolation}
            preprocessing = resolve_preprocessing({**keys, "mean": mean, "std": std}, default_preprocessing(image_size))
        self.contract = self.declare_contract(preprocessing, resize_size)
        self.image_size = self.contract.image_size
        self.augment = augment
        augmentation = AugmentSettings(
            augment, train_crop, tuple(crop_scale), color_jitter, randaugment_ops, randaugment_magnitude,
            augmix_severity, augmix_width, aug_transforms_mult,
        )  # fmt: skip
        self.mixup = MixupSettings(mixup_alpha, cutmix_alpha, mixup_prob, mixup_switch_prob, mixup_mode)
        self.mixer: BatchMixer | None = None  # built in setup, when the classes are known
        self.sampler = sampler
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.test_each_epoch = test_each_epoch
        # read by transfer_lightning.cache (train.py), which serves frozen features when exact
        self.feature_cache = feature_cache
        self.feature_cache_dir = feature_cache_dir
        self.feature_cache_max_gb = feature_cache_max_gb
        self.preprocessor = BatchPreprocessor(
            self.image_size,
            TrainAugmentation(augmentation, self.contract.decoded_size) if augmentation.active else None,
            mean=self.contract.mean,
            std=self.contract.std,
            interpolation=self.contract.interpolation,
        )
        self.splits: Splits | None = None

    # -- to implement ------------------------------------------------------------------------
    def load_splits(self) -> Splits:
        raise NotImplementedError

    def declare_contract(self, preprocessing: Preprocessing, resize_size: int | None) -> Preprocessing:
        """The contract this module's images really follow (default: decoded from files as given)."""
        return preprocessing

    def serve_only(self, split: str) -> None:
        """Only ``split`` will be served (evaluate): the others may stay empty, undecoded."""
        self.needed_splits = (split,)

    # -- Lightning hooks ---------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            self.splits = self.load_splits()
            sizes = {name: len(getattr(self.splits, name)) for name in ("train", "val", "test")}
            log.info(
                "Data: %s, %d classes, %s images (train/val/test)",
                type(self).__name__,
                len(self.splits.class_names),
                "/".join(str(n) for n in sizes.values()),
            )
            if self.mixup.active:
                self.mixer = BatchMixer(self.mixup, len(self.splits.class_names))

    def describe_training_inputs(self) -> str:
        """What training batches go through before the network, in one line (the log's)."""
        augmentation = self.preprocessor.augmentation
        parts = [f"data.augment={self.augment}" + (f" ({augmentation.describe()})" if augmentation else "")]
        parts += [self.mixup.describe()] if self.mixup.active else []
        parts += ["every class drawn equally often (data.sampler=balanced)"] if self.sampler == "balanced" else []
        return "; ".join(parts)

    def train_dataloader(self) -> DataLoader:
        train = self._splits().train
        return self._loader(train, shuffle=True, sampler=self.train_sampler(train.labels))

    def train_sampler(self, labels: torch.Tensor) -> Sampler | None:
        """``sampler="balanced"``: each image drawn with probability 1 / its class's count, so every class
        equally often (with replacement; an epoch stays as long). Under DDP Lightning wraps it in its
        ``DistributedSamplerWrapper``: each process takes a shard of the weighted draw."""
        if self.sampler != "balanced":
            return None
        counts = torch.bincount(labels, minlength=self.num_classes).double()
        return WeightedRandomSampler((1.0 / counts)[labels], num_samples=len(labels), replacement=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        val = self._loader(self._splits().val, shuffle=False)
        if self.test_each_epoch:  # the book evaluates the test set after every epoch
            return [val, self._loader(self._splits().test, shuffle=False)]
        return val

    def test_dataloader(self) -> DataLoader:
        test = self._splits().test
        return self._loader(test, shuffle=False, sampler=each_item_once_per_run(test))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        images = self.preprocessor(images, train=training)
        if training and self.mixer is not None:
            images, labels = self.mixer(images, labels)  # labels -> class shares (B, C)
        # channels_last: the layout the network's weights use (see transfer_lightning/run/speed.py)
        return images.contiguous(memory_format=torch.channels_last), labels

    # -- shared helpers ----------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return self._splits().class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The contract a checkpoint records to rebuild inputs (``Preprocessing.to_dict()``)."""
        return self.contract.to_dict()

    def split_fingerprints(self) -> dict[str, str | None]:
        """Each split's identity (``data/fingerprint.py``): which images, in which order, with which labels."""
        return {name: split_fingerprint(getattr(self._splits(), name)) for name in ("train", "val", "test")}

    def resolved_num_workers(self) -> int:
        if self.num_workers != "auto":
            return int(self.num_workers)
        if self.in_memory:
            return 0  # indexing a tensor is cheaper than shipping it between processes
        return max(1, min(8, (os.cpu_count() or 2) - 1))

    def _splits(self) -> Splits:
        if self.splits is None:
            self.setup()
        assert self.splits is not None
        return self.splits

    def _loader(self, dataset: Dataset, shuffle: bool, sampler: Sampler | None = None) -> DataLoader:
        workers = self.resolved_num_workers()
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
        )


def each_item_once_per_run(dataset: Dataset) -> Sampler | None:
    """Under DDP, a share of ``dataset`` per process with no item twice (Lightning's own sampler pads
    the last share with repeated items, which the test accuracy would count twice); None otherwise.

    Lightning keeps a ``DistributedSampler`` it finds in a loader (this is one), so shares may differ
    by one item: fine for the test loop, whose metrics are reduced once at the end.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    if torch.distributed.get_world_size() == 1:
        return None
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

    return UnrepeatedDistributedSampler(dataset, shuffle=False)


def natively_stored(preprocessing: Preprocessing, resize_size: int | None, native_size: int, data: str) -> Preprocessing:
    """The contract of images stored at their native ``native_size`` square, resized on the device."""
    if resize_size is not None:
        raise UserError(
            f"data.resize_size={resize_size} does not apply to {data}: its images are stored at their native "
            f"{native_size} px and resized on the device to data.image_size; leave data.resize_size=null"
        )
    return preprocessing.stored_natively(native_size)


def seeded_split(num_items: int, second_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A stable, seeded random split of ``range(num_items)`` into two index tensors."""
    if not 0 < second_size < num_items:
        raise UserError(f"cannot hold out {second_size} of {num_items} images for validation")
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))
    return order[: num_items - second_size], order[num_items - second_size :]
