"""Open any image a phone, a scanner or a web scrape produces as an 8-bit RGB picture.

``to_rgb`` is the one place that knows the modes: 16-bit grayscale (PNG, TIFF) is scaled to
8 bits instead of clipped, transparency is laid over white instead of over whatever colour the
transparent pixels hold, palette, CMYK and grayscale are converted. ``decode_for`` adds the
decode step of the preprocessing contract (``data/contract.py``): shorter side to
``resize_size``, then the centre crop. Every data module that reads files, ``predict`` and the
exported contract use this module; there is no other decoder. ``unreadable_reason`` words why a
file does not decode, the same for training's bad-file list and predict's ``error`` column.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import PIL
import torch
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps
from torchvision.transforms import InterpolationMode

from transfer_lightning.utils.errors import first_line

if TYPE_CHECKING:
    from transfer_lightning.data.contract import Preprocessing

_WHITE = (255, 255, 255)


def open_rgb(path: Path, min_side: int | None = None) -> Image.Image:
    """Decode ``path`` upright (EXIF orientation applied) in RGB.

    ``min_side`` lets JPEG decoding skip detail that a later downscale drops anyway (libjpeg's
    DCT scaling by 1/2, 1/4 or 1/8, keeping both sides >= ``min_side``): a 12-megapixel photo
    decodes several times faster.
    """
    with Image.open(path) as image:
        if min_side is not None:
            image.draft(None, (min_side, min_side))
        image.load()
        image = ImageOps.exif_transpose(image)
        return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB (raises ``ValueError`` for a mode PIL cannot convert)."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return _wide_grayscale_to_rgb(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa") or "transparency" in image.info:
        # an alpha channel, or a palette / grayscale / RGB colour marked transparent (PNG tRNS, GIF)
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode == "RGB":
        return image
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...


def _wide_grayscale_to_rgb(image: Image.Image) -> Image.Image:
    # PIL's own convert("RGB") clips 16-bit values at 255: a 16-bit scan comes out white.
    values = np.asarray(image, dtype=np.float64)
    low, peak = float(values.min()), float(values.max())
    if image.mode == "F" or peak > 65535 or low < 0:  # not an unsigned 8- or 16-bit range: stretch it
        scale = 255.0 / (peak - low) if peak > low else 0.0
        values = (values - low) * scale
    elif peak > 255:
        values = values / 257.0  # 65535 -> 255
    return Image.fromarray(np.rint(values).astype(np.uint8)).convert("RGB")  # each range now within 0..255


def decode_for(path: Path, contract: Preprocessing) -> torch.Tensor:
    """The contract's decode step: uint8 ``(3, crop, crop)`` for ``contract.decoded_size`` = crop."""
    return decode_square(path, contract.decoded_size, contract.resize_size, contract.interpolation)


def decode_square(
    path: Path, size: int, resize_size: int | None = None, interpolation: str = "bilinear"
) -> torch.Tensor:
    """uint8 ``(3, size, size)``: shorter side resized to ``resize_size`` (default ``size``), then the
    centre crop, exactly as torchvision's ``Resize(resize_size)`` + ``CenterCrop(size)`` on the picture.

    JPEGs are decoded with ``Image.draft(None, (resize_size, resize_size))`` first (part of the contract).
    """
    resize_size = resize_size or size
    image = open_rgb(path, min_side=resize_size)
    if min(image.size) != resize_size:
        image = TF.resize(image, resize_size, interpolation=InterpolationMode(interpolation))
    square = TF.center_crop(image, [size, size])
    return torch.from_numpy(np.array(square)).permute(2, 0, 1).contiguous()  # RGB: uint8 (height, width, 3)


def unreadable_reason(path: Path, error: Exception) -> str:
    """Why ``path`` is not a usable image, given what decoding it raised: one wording for every command."""
    if path.is_file() and path.stat().st_size == 0:
        return "empty file, 0 bytes"
    if isinstance(error, Image.UnidentifiedImageError):
        return "not an image: its contents do not match its extension"
    return first_line(error, 200)


@functools.cache
def decoder_version() -> str:
    """This decoder's identity: its source, Pillow's and torchvision's versions (resize). A cache of
    decoded images is keyed by it, so an edit here or an upgrade rebuilds the cache instead of serving
    pictures that predict would now decode differently."""
    source = hashlib.sha256(inspect.getsource(sys.modules[__name__]).encode()).hexdigest()[:16]
    return f"{source} pillow={PIL.__version__} torchvision={torchvision.__version__}"
