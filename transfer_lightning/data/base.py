"""The shared LightningDataModule: splits of uint8 images, loaders, on-device preprocessing."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from transfer_lightning.data.transforms import (
    AUGMENTATIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchPreprocessor,
)
from transfer_lightning.errors import UserError

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
    ``BatchPreprocessor`` resizes, augments (training only) and normalises each batch after it
    reached the device, in ``on_after_batch_transfer``.
    """

    in_memory = True  # in-memory datasets need no worker processes

    def __init__(
        self,
        image_size: int = 224,
        augment: str = "none",
        color_jitter: float = 0.0,
        batch_size: int = 32,
        num_workers: int | str = "auto",
        test_each_epoch: bool = False,
        feature_cache: str | bool = "auto",
        feature_cache_dir: str | None = None,
        feature_cache_max_gb: float = 4.0,
        train_crop: str = "pad",
    ) -> None:
        super().__init__()
        if augment not in AUGMENTATIONS:
            raise UserError(f"data.augment={augment!r} is not supported; allowed: {', '.join(AUGMENTATIONS)}")
        self.image_size = image_size
        self.augment = augment
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.test_each_epoch = test_each_epoch
        # read by transfer_lightning.cache (train.py), which serves frozen features when exact
        self.feature_cache = feature_cache
        self.feature_cache_dir = feature_cache_dir
        self.feature_cache_max_gb = feature_cache_max_gb
        self.preprocessor = BatchPreprocessor(image_size, augment, color_jitter, train_crop=train_crop)
        self.normalization = (IMAGENET_MEAN, IMAGENET_STD)
        self.splits: Splits | None = None

    # -- to implement ------------------------------------------------------------------------
    def load_splits(self) -> Splits:
        raise NotImplementedError

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

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._splits().train, shuffle=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        val = self._loader(self._splits().val, shuffle=False)
        if self.test_each_epoch:  # the book evaluates the test set after every epoch
            return [val, self._loader(self._splits().test, shuffle=False)]
        return val

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._splits().test, shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        training = self.trainer is not None and self.trainer.training
        # channels_last: the layout the network's weights use (see transfer_lightning/speed.py)
        return self.preprocessor(images, train=training).contiguous(memory_format=torch.channels_last), labels

    # -- shared helpers ----------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        return self._splits().class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The contract a checkpoint records to rebuild inputs: size and normalisation."""
        mean, std = self.normalization
        return {"image_size": self.image_size, "mean": list(mean), "std": list(std)}

    def use_normalization(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        """Normalise with ``mean``/``std`` (e.g. a starting checkpoint's) instead of ImageNet's."""
        self.normalization = (tuple(mean), tuple(std))
        self.preprocessor.mean.copy_(torch.tensor(mean).view(1, 3, 1, 1))
        self.preprocessor.std.copy_(torch.tensor(std).view(1, 3, 1, 1))

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
            shuffle=shuffle,
            sampler=sampler,
            num_workers=workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=workers > 0,
        )


def seeded_split(num_items: int, second_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A stable, seeded random split of ``range(num_items)`` into two index tensors."""
    if not 0 < second_size < num_items:
        raise UserError(f"cannot hold out {second_size} of {num_items} images for validation")
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))
    return order[: num_items - second_size], order[num_items - second_size :]
