"""Loose image files for prediction: find them with the lister training uses (``data/listing.py``),
then decode and preprocess them by the checkpoint's contract, with the very decoder the training
data went through (``data/decode.py``)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import Dataset

from transfer_lightning.data.contract import Preprocessing, preprocessor_for
from transfer_lightning.data.decode import decode_for, unreadable_reason
from transfer_lightning.data.listing import IMAGE_EXTENSIONS, ImageListing, list_images, skipped_summary
from transfer_lightning.utils.errors import UserError

log = logging.getLogger(__name__)


def list_image_files(inputs: str | list[str]) -> list[Path]:
    """The files named by ``inputs``: files as given, folders listed as training lists them
    (recursively, by extension; hidden and system files skipped and counted in one log line)."""
    listing = ImageListing()
    for entry in [inputs] if isinstance(inputs, (str, Path)) else list(inputs):
        path = Path(str(entry)).expanduser()
        if path.is_dir():
            found = list_images(path)
            if not found.images:
                raise UserError(
                    f"no images found in folder {path} (looked for {', '.join(IMAGE_EXTENSIONS)}, also in subfolders)"
                )
            listing.extend(found)
        elif path.is_file():
            listing.images.append(path)  # named by the user: tried, and listed with its error if it fails
        else:
            raise UserError(f"inputs={entry} does not exist; give an image file or a folder of images")
    if listing.skipped:
        log.info("%s in inputs=%s", skipped_summary(listing.skipped), inputs)
    return listing.images


def reason_file_fails(path: Path, contract: Preprocessing) -> str:
    """Why decoding ``path`` fails, in training's words (decoded again in the main process for the message)."""
    try:
        decode_for(path, contract)
    except Exception as error:  # noqa: BLE001 - any failure is reported, none is fatal
        return unreadable_reason(path, error)
    return "unreadable"


class ImageFileDataset(Dataset):
    """Decodes and preprocesses one file per item by ``contract``, yielding ``(image, key)``.

    ``key`` is the item's index, or ``-1 - index`` when the file cannot be read: a bad file must
    not stop a batch (the image is then zeros and its prediction is discarded).
    """

    def __init__(self, files: list[Path], contract: Preprocessing) -> None:
        self.files = files
        self.contract = contract
        self.preprocessor = preprocessor_for(contract)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            pixels = decode_for(self.files[index], self.contract)
        except Exception:  # noqa: BLE001 - reported by the caller via reason_file_fails
            size = self.contract.image_size
            return torch.zeros(3, size, size), -1 - index
        return self.preprocessor(pixels.unsqueeze(0))[0], index
