"""Phone- and web-style image files for the decode-parity tests: EXIF-rotated, transparent,
16-bit, grayscale, CMYK, palette, and non-square, each with visible structure (a bright corner)
so that a missing rotation, a squash instead of a crop or a dropped alpha changes the pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112


def _pattern(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(40, 200, (height, width, 3), dtype=np.uint8)
    pixels[: height // 3, : width // 3] = (250, 30, 30)  # top-left corner: shows rotation and crop
    return pixels


def _exif_jpeg(path: Path, orientation: int, seed: int) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    Image.fromarray(_pattern(48, 30, seed)).save(path, quality=95, exif=exif)


def _rgba_png(path: Path, seed: int) -> None:
    rgba = np.dstack([_pattern(40, 40, seed), np.full((40, 40), 255, dtype=np.uint8)])
    rgba[20:, :, 3] = 0  # lower half transparent: composited on white, not on the hidden colour
    rgba[20:, :, :3] = (0, 0, 0)
    Image.fromarray(rgba, mode="RGBA").save(path)


def _png16(path: Path, seed: int) -> None:
    values = np.random.default_rng(seed).integers(0, 65535, (36, 44), dtype=np.uint16)
    values[:10, :10] = 60000
    Image.fromarray(values).save(path)  # mode I;16


def write_contract_images(folder: Path, seed: int = 0) -> dict[str, Path]:
    """The files the contract must decode alike everywhere, by name."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "exif6": folder / "exif6.jpg",
        "exif8": folder / "exif8.jpg",
        "rgba": folder / "rgba.png",
        "png16": folder / "png16.png",
        "gray": folder / "gray.jpg",
        "cmyk": folder / "cmyk.jpg",
        "palette": folder / "palette.gif",
        "wide_4_3": folder / "wide_4_3.png",
        "tall_1_3": folder / "tall_1_3.jpg",
    }
    _exif_jpeg(files["exif6"], 6, seed)
    _exif_jpeg(files["exif8"], 8, seed + 1)
    _rgba_png(files["rgba"], seed + 2)
    _png16(files["png16"], seed + 3)
    Image.fromarray(_pattern(40, 36, seed + 4)).convert("L").save(files["gray"], quality=95)
    Image.fromarray(_pattern(38, 42, seed + 5)).convert("CMYK").save(files["cmyk"], quality=95)
    Image.fromarray(_pattern(40, 40, seed + 6)).convert("P", palette=Image.Palette.ADAPTIVE).save(files["palette"])
    Image.fromarray(_pattern(64, 48, seed + 7)).save(files["wide_4_3"])
    Image.fromarray(_pattern(20, 60, seed + 8)).save(files["tall_1_3"], quality=95)
    return files


def write_colour_folder(root: Path, per_class: int, size: tuple[int, int] = (24, 18), seed: int = 0) -> list[str]:
    """``root/<class>/*.png``: two classes told apart by colour (red vs blue), photos of ``size``."""
    rng = np.random.default_rng(seed)
    classes = {"blue": (30, 60, 220), "red": (220, 40, 30)}
    for name, colour in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            noise = rng.integers(0, 60, (size[1], size[0], 3))
            pixels = np.clip(np.array(colour) * 0.8 + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{name}_{index:02d}.png")
    return sorted(classes)
