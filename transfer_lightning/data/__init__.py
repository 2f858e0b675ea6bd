"""LightningDataModules serving uint8 images; resizing, augmentation and normalisation run
batched on the training device (see ``transforms.BatchPreprocessor``)."""

from transfer_lightning.data.base import ClassificationDataModule, Splits
from transfer_lightning.data.cifar10 import CIFAR10DataModule
from transfer_lightning.data.image_folder import ImageFolderDataModule
from transfer_lightning.data.synthetic import SyntheticDataModule

__all__ = ["CIFAR10DataModule", "ClassificationDataModule", "ImageFolderDataModule", "Splits", "SyntheticDataModule"]
