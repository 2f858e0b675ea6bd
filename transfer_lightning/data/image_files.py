"""Loose image files for prediction: find them, decode them, preprocess them as a checkpoint wants."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from transfer_lightning.data.folder_reader import IMAGE_EXTENSIONS
from transfer_lightning.data.transforms import BatchPreprocessor
from transfer_lightning.errors import UserError, first_line


def list_image_files(inputs: str | list[str]) -> list[Path]:
    """The files named by ``inputs``: image files as given, folders searched recursively by extension."""
    files: list[Path] = []
    for entry in [inputs] if isinstance(inputs, (str, Path)) else list(inputs):
        path = Path(str(entry)).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise UserError(
                    f"no images found in folder {path} (looked for {', '.join(IMAGE_EXTENSIONS)}, also in subfolders)"
                )
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"inputs={entry} does not exist; give an image file or a folder of images")
    return files


def read_image(path: Path) -> torch.Tensor:
    """The image at ``path`` as a uint8 RGB tensor ``(3, H, W)``; raises for an unreadable file."""
    with Image.open(path) as image:
        return pil_to_tensor(image.convert("RGB"))


def unreadable_reason(path: Path) -> str:
    """Why ``read_image`` fails on ``path`` (called again in the main process for the message)."""
    try:
        read_image(path)
    except Exception as error:  # noqa: BLE001 - any failure is reported, none is fatal
        return first_line(error)
    return "unreadable"


class ImageFileDataset(Dataset):
    """Decodes and preprocesses one file per item, yielding ``(image, key)``.

    ``key`` is the item's index, or ``-1 - index`` when the file cannot be read: a bad file must
    not stop a batch (the image is then zeros and its prediction is discarded).
    """

    def __init__(self, files: list[Path], preprocessor: BatchPreprocessor) -> None:
        self.files = files
        self.preprocessor = preprocessor

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            pixels = read_image(self.files[index])
        except Exception:  # noqa: BLE001 - reported by the caller via unreadable_reason
            size = self.preprocessor.image_size
            return torch.zeros(3, size, size), -1 - index
        return self.preprocessor(pixels.unsqueeze(0))[0], index
