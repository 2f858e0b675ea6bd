"""Find the broken files of an image folder before training starts, in parallel.

A broken file (zero bytes, truncated, text saved as ``.jpg``) must never stop a run at epoch 3,
so every file is decoded once up front: either by ``quick_check`` (JPEGs decoded at 1/8 scale,
which still reads every byte, so truncation shows) or by the caller's own decode, when it decodes
everything anyway to fill a tensor (``decode_into_tensor``). Every training data module that reads
files then applies the one bad-file policy, ``data.on_bad_file`` (``apply_bad_file_policy``); the
reasons are ``data/decode.py`` ``unreadable_reason``'s, the words predict uses too.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from transfer_lightning.data.decode import to_rgb, unreadable_reason
from transfer_lightning.utils.errors import UserError
from transfer_lightning.utils.files import file_stamp
from transfer_lightning.utils.progress import PhaseProgress

log = logging.getLogger(__name__)

LISTED_BAD_FILES = 50  # in run_summary.json; the log lists them all


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
            return None, unreadable_reason(path, error)

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


@dataclass
class DecodedFiles:
    """The decoded images of the good files (rows in listing order), those files, and the scan."""

    images: torch.Tensor
    good: list[Path]
    scan: ScanResult


def decode_into_tensor(
    files: Sequence[Path],
    decode: Callable[[Path], torch.Tensor],
    size: int,
    description: str,
    faster: str = "",
    decode_key: Hashable = None,
) -> DecodedFiles:
    """Decode every file into one uint8 ``(n, 3, size, size)`` tensor: the scan and the decode in one pass.

    Bad files are left out of the tensor (and listed in ``scan.bad``); ``decode`` must return a
    ``(3, size, size)`` uint8 image. ``decode_key`` names what ``decode`` does (its settings): given, the
    last two decodes of this process are reused while the files (``utils/files.py`` ``file_stamp``) and that
    key are the same: a sweep's jobs in one process decode their train and test images once (the tensors are
    shared, never written to). What is kept for the next job is at most 1 GiB of images (CIFAR-10 at 32 px:
    150 MB); a larger decode is not kept.
    """
    if decode_key is None:
        return _decode_into_tensor(files, decode, size, description, faster)
    key = (decode_key, size, tuple((str(path), *file_stamp(path)) for path in files))
    if key in _recent_decodes:
        _recent_decodes.move_to_end(key)
        return _recent_decodes[key]
    while len(_recent_decodes) >= _RECENT_DECODES:  # released before the next decode, not after it
        _recent_decodes.popitem(last=False)
    decoded = _decode_into_tensor(files, decode, size, description, faster)
    kept = sum(item.images.nbytes for item in _recent_decodes.values())
    if kept + decoded.images.nbytes <= KEPT_DECODE_BYTES:
        _recent_decodes[key] = decoded
    return decoded


_RECENT_DECODES = 2  # a job's splits: train and test folders
KEPT_DECODE_BYTES = 1 << 30  # what a process keeps of its last decodes for its next job
_recent_decodes: OrderedDict[Hashable, DecodedFiles] = OrderedDict()


def _decode_into_tensor(
    files: Sequence[Path], decode: Callable[[Path], torch.Tensor], size: int, description: str, faster: str
) -> DecodedFiles:
    images = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    position = {path: i for i, path in enumerate(files)}
    scan = scan_files(
        files, decode=lambda path: images[position[path]].copy_(decode(path)), description=description, faster=faster
    )
    broken = {item.path for item in scan.bad}
    good = [path for path in files if path not in broken]
    if broken:
        images = images[[i for i, path in enumerate(files) if path not in broken]]
    return DecodedFiles(images, good, scan)


def bad_file_notes(bad: Sequence[BadFile]) -> dict[str, Any]:
    """The bad files as ``run_summary.json`` records them (``data.bad_file_count``, ``data.bad_files``)."""
    return {"bad_file_count": len(bad), "bad_files": [str(item) for item in bad[:LISTED_BAD_FILES]]}


def apply_bad_file_policy(bad: Sequence[BadFile], on_bad_file: str) -> None:
    """``data.on_bad_file``: ``error`` stops before training naming the files, ``skip`` logs them all."""
    if not bad:
        return
    if on_bad_file == "error":
        first = "; ".join(str(item) for item in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise UserError(
            f"{len(bad)} broken image file(s): {first}{more}; remove or replace them, "
            "or set data.on_bad_file=skip to train without them"
        )
    listing = "\n  ".join(str(item) for item in bad)
    log.warning("Skipping %d broken image file(s) (data.on_bad_file=skip):\n  %s", len(bad), listing)
