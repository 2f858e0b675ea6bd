"""Tiny generated images for tests and smoke runs; chosen explicitly with ``data=synthetic``."""

from __future__ import annotations

import torch

from transfer_lightning.data.base import ClassificationDataModule, Splits, TensorImageDataset, natively_stored
from transfer_lightning.data.contract import Preprocessing


class SyntheticDataModule(ClassificationDataModule):
    """Random uint8 images whose class is learnable: each class has its own mean colour.

    Never used as a fallback for missing data: only when the config says ``data=synthetic``.
    """

    def __init__(
        self,
        num_classes: int = 4,
        train_size: int = 64,
        val_size: int = 32,
        test_size: int = 32,
        native_size: int = 32,
        seed: int = 0,
        **common,
    ) -> None:
        self.native_size = native_size
        super().__init__(**common)
        self.num_classes_requested = num_classes
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.seed = seed

    def declare_contract(self, preprocessing: Preprocessing, resize_size: int | None) -> Preprocessing:
        return natively_stored(preprocessing, resize_size, self.native_size, "data=synthetic")

    def load_splits(self) -> Splits:
        generator = torch.Generator().manual_seed(self.seed)
        colours = torch.rand(self.num_classes_requested, 3, 1, 1, generator=generator)
        datasets = {}
        for split, size in self.sizes.items():
            labels = torch.arange(size) % self.num_classes_requested
            noise = torch.rand(size, 3, self.native_size, self.native_size, generator=generator)
            images = (0.6 * colours[labels] + 0.4 * noise).mul(255).round().to(torch.uint8)
            datasets[split] = TensorImageDataset(images, labels)
        return Splits(
            train=datasets["train"],
            val=datasets["val"],
            test=datasets["test"],
            class_names=[f"class_{i}" for i in range(self.num_classes_requested)],
            notes={"layout": "synthetic"},
        )
