"""Decode a small-image class-folder split (``SPLIT/<class>/*.jpg``) into one uint8 tensor."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from transfer_lightning.data.decode import decode_for
from transfer_lightning.data.listing import ImageListing, class_folders, list_images, skipped_summary
from transfer_lightning.data.scan import BadFile, apply_bad_file_policy, decode_into_tensor
from transfer_lightning.utils.errors import UserError

if TYPE_CHECKING:
    from transfer_lightning.data.base import TensorImageDataset
    from transfer_lightning.data.contract import Preprocessing

log = logging.getLogger(__name__)


def is_class_folder_root(root: Path) -> bool:
    """True for ``ROOT/train/<class>/...`` (the class-folder layout of a split data set)."""
    train = root / "train"
    return train.is_dir() and bool(class_folders(train))


@dataclass
class FolderSplit:
    """A decoded split: its images and labels, the sorted class names, the bad files left out."""

    dataset: TensorImageDataset
    class_names: list[str]
    bad: list[BadFile]


def decode_folder_split(
    split_dir: Path,
    contract: Preprocessing,
    class_names: list[str] | None = None,
    faster: str = "",
    on_bad_file: str = "skip",
) -> FolderSplit:
    """All images of ``split_dir``, listed by the one lister (``data/listing.py``) and decoded.

    Every image goes through the contract's decode step (``data/decode.py``: upright RGB, shorter
    side to ``resize_size``, centre crop); broken files follow ``on_bad_file`` (``data/scan.py``).
    With ``class_names`` given, the folders must be exactly those classes. ``faster`` says what
    makes a decode that will take long faster (shown with its progress).
    """
    from transfer_lightning.data.base import TensorImageDataset

    if not split_dir.is_dir():
        raise UserError(f"{split_dir} does not exist; a class-folder copy needs train/ and test/ folders")
    found = class_folders(split_dir)
    if class_names is not None and found != class_names:
        missing = sorted(set(class_names) - set(found))
        extra = sorted(set(found) - set(class_names))
        raise UserError(
            f"the class folders of {split_dir} differ from train/ (missing: {missing or 'none'}, "
            f"extra: {extra or 'none'}); every split needs the same class folders"
        )
    listing, label_of = ImageListing(), {}
    for label, name in enumerate(found):
        listed = list_images(split_dir / name)
        listing.extend(listed)
        label_of.update(dict.fromkeys(listed.images, label))
    if listing.skipped:
        log.info("%s under %s", skipped_summary(listing.skipped), split_dir)
    if not listing.images:
        raise UserError(f"no images found under {split_dir}/<class>/")
    decoded = decode_into_tensor(
        listing.images,
        lambda path: decode_for(path, contract),
        contract.decoded_size,
        f"Decoding {split_dir}",
        faster,
        decode_key=("decode_for", contract.resize_size, contract.interpolation),
    )
    apply_bad_file_policy(decoded.scan.bad, on_bad_file)
    labels = torch.tensor([label_of[path] for path in decoded.good], dtype=torch.long)
    return FolderSplit(TensorImageDataset(decoded.images, labels), found, decoded.scan.bad)
