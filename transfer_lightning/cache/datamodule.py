"""A datamodule serving cached frozen-stage features in place of images."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from transfer_lightning.cache.store import Features
from transfer_lightning.data.base import each_item_once_per_run


class CachedFeatureDataModule(L.LightningDataModule):
    """Serves ``features[split]`` (features, labels) with the loader settings of ``source``.

    Batches are already the frozen stages' output, so the image preprocessing of ``source``
    (resize, normalise) is skipped; class names, the preprocessing contract recorded in
    checkpoints and the split notes are those of ``source``.
    """

    def __init__(self, source: L.LightningDataModule, features: dict[str, Features]) -> None:
        super().__init__()
        self.source = source
        self.features = features
        self.batch_size = source.batch_size

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        if getattr(self.source, "test_each_epoch", False):
            return [self._loader("val", shuffle=False), self._loader("test", shuffle=False)]
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, once_per_run=True)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        features, labels = batch
        if features.dim() == 4:  # a stage's feature map: the layout the live batches have
            features = features.contiguous(memory_format=torch.channels_last)
        return features, labels

    @property
    def class_names(self) -> list[str]:
        return self.source.class_names

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.source.preprocessing

    @property
    def splits(self) -> Any:
        return self.source.splits

    def _loader(self, split: str, shuffle: bool, once_per_run: bool = False) -> DataLoader:
        dataset = TensorDataset(*self.features[split])
        sampler = each_item_once_per_run(dataset) if once_per_run else None
        if split == "train":  # data.sampler=balanced draws the cached rows as it draws the images
            sampler = self.source.train_sampler(self.features[split][1])
        # in memory: indexing a tensor needs no worker processes
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=0,
            pin_memory=torch.cuda.is_available(),
        )
