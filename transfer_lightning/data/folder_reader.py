"""Decode a small-image class-folder split (``SPLIT/<class>/*.jpg``) into one uint8 tensor."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from transfer_lightning.data.decode import decode_for
from transfer_lightning.utils.errors import UserError
from transfer_lightning.utils.progress import PhaseProgress

if TYPE_CHECKING:
    from transfer_lightning.data.contract import Preprocessing

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def is_class_folder_root(root: Path) -> bool:
    """True for ``ROOT/train/<class>/...`` (the class-folder layout of a split data set)."""
    train = root / "train"
    return train.is_dir() and any(child.is_dir() for child in train.iterdir())


def list_class_folders(split_dir: Path) -> list[str]:
    return sorted(child.name for child in split_dir.iterdir() if child.is_dir())


def decode_folder_split(
    split_dir: Path, contract: Preprocessing, class_names: list[str] | None = None, faster: str = ""
):
    """All images of ``split_dir`` as a ``TensorImageDataset`` plus the sorted class names.

    Every image goes through the contract's decode step (``data/decode.py``: upright RGB, shorter
    side to ``resize_size``, centre crop). With ``class_names`` given, the folders must be exactly
    those classes. ``faster`` says what makes a decode that will take long faster (shown with its
    progress).
    """
    from transfer_lightning.data.base import TensorImageDataset

    if not split_dir.is_dir():
        raise UserError(f"{split_dir} does not exist; a class-folder copy needs train/ and test/ folders")
    found = list_class_folders(split_dir)
    if class_names is not None and found != class_names:
        missing = sorted(set(class_names) - set(found))
        extra = sorted(set(found) - set(class_names))
        raise UserError(
            f"the class folders of {split_dir} differ from train/ (missing: {missing or 'none'}, "
            f"extra: {extra or 'none'}); every split needs the same class folders"
        )
    files, labels = [], []
    for label, name in enumerate(found):
        for path in sorted((split_dir / name).iterdir()):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(path)
                labels.append(label)
    if not files:
        raise UserError(f"no images found under {split_dir}/<class>/")
    decoded = []
    with PhaseProgress(f"Decoding {split_dir}", len(files), faster=faster) as progress:
        with ThreadPoolExecutor(max_workers=4) as pool:
            for image in pool.map(lambda p: _decode(p, contract), files):
                decoded.append(image)
                progress.advance()
    images = torch.stack(decoded)
    return TensorImageDataset(images, torch.tensor(labels, dtype=torch.long)), found


def _decode(path: Path, contract: Preprocessing) -> torch.Tensor:
    try:
        return decode_for(path, contract)
    except Exception as error:  # noqa: BLE001 - any unreadable image gets the same report
        raise UserError(f"cannot read image {path} ({error}); remove or replace the file") from error
