"""Find the broken files of an image folder before training starts, in parallel.

A broken file (zero bytes, truncated, text saved as ``.jpg``) must never stop a run at epoch 3,
so every file is decoded once up front: either by ``quick_check`` (JPEGs decoded at 1/8 scale,
which still reads every byte, so truncation shows) or by the caller's own decode, when it decodes
everything anyway to fill a cache.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from transfer_lightning.data.decode import to_rgb
from transfer_lightning.utils.errors import first_line
from transfer_lightning.utils.progress import PhaseProgress


@dataclass(frozen=True)
class BadFile:
    """A file that cannot be used as an image, and why."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"


@dataclass
class ScanResult:
    """Per-file results of a scan (``None`` where a file is bad), the bad files and the speed."""

    results: list[Any]
    bad: list[BadFile]
    seconds: float

    @property
    def images_per_s(self) -> float:
        return len(self.results) / self.seconds if self.seconds > 0 else float("inf")


def quick_check(path: Path) -> None:
    """Raise if ``path`` is not a decodable image; cheap for big JPEGs (decoded at 1/8 scale)."""
    if path.stat().st_size == 0:
        raise ValueError("empty file, 0 bytes")
    with Image.open(path) as image:
        image.draft(None, (1, 1))  # JPEG only: the smallest DCT scale that still reads all data
        image.load()
        to_rgb(image)


def scan_files(
    paths: Sequence[Path],
    decode: Callable[[Path], Any] = quick_check,
    description: str = "Checking images",
    faster: str = "",
) -> ScanResult:
    """``decode`` every path on a thread pool (PIL releases the GIL while decoding).

    Whatever ``decode`` raises marks that file bad; nothing is raised. Progress is shown as
    ``description`` (``faster``: what makes it faster, for a scan that will take long).
    """

    def attempt(path: Path) -> tuple[Any, str | None]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PIL's palette/EXIF chatter, once per file
                return decode(path), None
        except Exception as error:  # noqa: BLE001 - whatever breaks a file, the report is the same
            if isinstance(error, OSError) and path.stat().st_size == 0:
                return None, "empty file, 0 bytes"
            return None, _reason(error)

    start = time.perf_counter()
    attempts = []
    with PhaseProgress(description, len(paths), faster=faster) as progress:
        with ThreadPoolExecutor(max_workers=scan_threads()) as pool:
            for result in pool.map(attempt, paths):
                attempts.append(result)
                progress.advance()
    seconds = time.perf_counter() - start
    bad = [BadFile(path, reason) for path, (_, reason) in zip(paths, attempts, strict=True) if reason]
    return ScanResult([result for result, _ in attempts], bad, seconds)


def scan_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _reason(error: Exception) -> str:
    if isinstance(error, Image.UnidentifiedImageError):
        return "not an image: its contents do not match its extension"
    return first_line(error, 200)
