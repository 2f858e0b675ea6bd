"""CIFAR-10: torchvision's binary copy (downloaded when online) or a local class-folder copy."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import torch
import torchvision

from transfer_lightning.data.base import (
    ClassificationDataModule,
    Splits,
    TensorImageDataset,
    natively_stored,
    seeded_split,
)
from transfer_lightning.data.contract import Preprocessing
from transfer_lightning.data.folder_reader import decode_folder_split, is_class_folder_root
from transfer_lightning.data.listing import class_folders
from transfer_lightning.data.scan import bad_file_notes
from transfer_lightning.utils.errors import UserError

log = logging.getLogger(__name__)

NATIVE_SIZE = 32
_FOLDER_FASTER = "torchvision's binary copy (cifar-10-batches-py under data.root) loads in seconds, without decoding"
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


class _CIFAR10Files(torchvision.datasets.CIFAR10):
    """torchvision's reader; integrity = the batch files exist (torchvision md5-checks the archive
    when it downloads it; re-checking every batch file on every run only slows the start)."""

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

    def _load_meta(self) -> None:
        path = Path(self.root) / self.base_folder / self.meta["filename"]
        if not path.is_file():
            raise RuntimeError(f"{path} not found")
        with open(path, "rb") as handle:
            self.classes = pickle.load(handle, encoding="latin1")[self.meta["key"]]
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


class CIFAR10DataModule(ClassificationDataModule):
    """CIFAR-10 with a seeded train/val split of the 50k training images and the official test set.

    ``root`` holds either torchvision's layout (``cifar-10-batches-py/``, downloaded there when
    ``download`` is true) or a class-folder copy (``train/<class>/*.jpg``, ``test/<class>/*.jpg``),
    listed like every image folder (``data/listing.py``); its broken files follow ``on_bad_file``.
    """

    def __init__(
        self,
        root: str = "data",
        download: bool = True,
        val_size: int = 5000,
        split_seed: int = 42,
        on_bad_file: str = "skip",
        **common,
    ) -> None:
        super().__init__(**common)
        self.root = Path(root).expanduser()
        self.download = download
        self.val_size = val_size
        self.split_seed = split_seed
        self.on_bad_file = on_bad_file

    def declare_contract(self, preprocessing: Preprocessing, resize_size: int | None) -> Preprocessing:
        return natively_stored(preprocessing, resize_size, NATIVE_SIZE, "CIFAR-10")

    def prepare_data(self) -> None:
        if not is_class_folder_root(self.root):
            self._read_torchvision(train=True, download=self.download)

    def load_splits(self) -> Splits:
        notes = {"data_root": str(self.root)}
        if self.needed_splits == ("test",):  # the official test images alone: val and train are not decoded
            return self._test_only(notes)
        if is_class_folder_root(self.root):
            train = decode_folder_split(self.root / "train", self.contract, None, _FOLDER_FASTER, self.on_bad_file)
            test = decode_folder_split(self.root / "test", self.contract, train.class_names, _FOLDER_FASTER, self.on_bad_file)
            train_full, test_set, class_names = train.dataset, test.dataset, train.class_names
            notes.update(layout="class folders", **bad_file_notes(train.bad + test.bad))
        else:
            train_full, test_set = (self._read_torchvision(train=flag, download=False) for flag in (True, False))
            class_names, notes["layout"] = list(CIFAR10_CLASSES), "torchvision binary"
        train_idx, val_idx = seeded_split(len(train_full), self.val_size, self.split_seed)
        return Splits(
            train=train_full.subset(train_idx),
            val=train_full.subset(val_idx),
            test=test_set,
            class_names=class_names,
            notes=notes,
        )

    def _test_only(self, notes: dict) -> Splits:
        if is_class_folder_root(self.root):
            class_names = class_folders(self.root / "train")  # listed, not decoded: the label order
            test = decode_folder_split(self.root / "test", self.contract, class_names, _FOLDER_FASTER, self.on_bad_file)
            test_set = test.dataset
            notes.update(layout="class folders", **bad_file_notes(test.bad))
        else:
            test_set, class_names = self._read_torchvision(train=False, download=False), list(CIFAR10_CLASSES)
            notes["layout"] = "torchvision binary"
        empty = test_set.subset(torch.zeros(0, dtype=torch.long))
        return Splits(train=empty, val=empty, test=test_set, class_names=class_names, notes=notes)

    def _read_torchvision(self, train: bool, download: bool) -> TensorImageDataset:
        try:
            dataset = _CIFAR10Files(str(self.root), train=train, download=download)
        except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
            raise UserError(self._missing_message("the files are missing")) from error
        except OSError as error:  # URLError and friends: no network
            raise UserError(self._missing_message(f"the download failed: {error}")) from error
        images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2).contiguous()
        return TensorImageDataset(images, torch.tensor(dataset.targets, dtype=torch.long))

    def _missing_message(self, why: str) -> str:
        return (
            f"CIFAR-10 is not available under data.root={self.root} ({why}). torchvision expects "
            f"{self.root / 'cifar-10-batches-py'}/data_batch_1..5 and test_batch; run once with "
            "network access and data.download=true to fetch them, copy cifar-10-python.tar.gz "
            f"(from https://www.cs.toronto.edu/~kriz/cifar.html) into {self.root} and extract it, "
            "or point data.root at a class-folder copy (ROOT/train/<class>/*.jpg, ROOT/test/<class>/*.jpg)."
        )
