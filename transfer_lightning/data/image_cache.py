"""Decoded images kept between runs: one uint8 tensor file per (file list, image size).

The key covers every listed file's relative path, size and modification time, the image size and
the decoder's version (``data/decode.py``'s source, Pillow, torchvision), so adding, replacing or
touching one photo, or changing the decoder, builds a new cache; the bad files found while
building are stored too, so a cache hit skips the scan. The tensor is memory-mapped on load: a
set larger than RAM is paged in from disk as batches need it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from transfer_lightning.utils.files import atomic_torch_save
from transfer_lightning.data.decode import decoder_version
from transfer_lightning.data.scan import BadFile

log = logging.getLogger(__name__)

_FORMAT_VERSION = 1  # bump when the stored file's layout changes (the decoder is keyed by its own version)


@dataclass
class CachedImages:
    """Images of the good files, in listing order, and the bad files that were left out."""

    images: torch.Tensor
    good: list[Path]
    bad: list[BadFile]


class DiskCache:
    """``<folder>/<root name>-<hash of root>-<size>px-<hash of listing>.pt``, one file per listing."""

    def __init__(self, folder: Path, root: Path, image_size: int, decode: str = "") -> None:
        self.folder = folder
        self.root = root  # the files were listed under root as given: paths relative to it
        self.image_size = image_size
        self.decode = decode  # the rest of the decode step (resize size, interpolation)
        resolved = root.resolve()
        root_tag = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
        self.prefix = f"{_safe(resolved.name)}-{root_tag}-{image_size}px-"

    def path_for(self, files: list[Path]) -> Path:
        identity = f"v{_FORMAT_VERSION} {self.image_size} {self.decode} {decoder_version()}\n"
        digest = hashlib.sha256(identity.encode())
        for path in files:
            stat = path.stat()
            digest.update(f"{self._relative(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return self.folder / f"{self.prefix}{digest.hexdigest()[:16]}.pt"

    def load(self, files: list[Path]) -> CachedImages | None:
        path = self.path_for(files)
        if not path.is_file():
            return None
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
            log.warning("Disk cache %s is unreadable (%s); rebuilding it", path, error)
            return None
        log.info("Disk cache hit: %s (%d images)", path, len(stored["good"]))
        return CachedImages(
            images=stored["images"],
            good=[self.root / relative for relative in stored["good"]],
            bad=[BadFile(self.root / relative, reason) for relative, reason in stored["bad"]],
        )

    def save(self, files: list[Path], cached: CachedImages) -> Path:
        """Write atomically and remove older caches of the same root and size (now stale)."""
        path = self.path_for(files)
        self.folder.mkdir(parents=True, exist_ok=True)
        stored = {
            "images": cached.images,
            "good": [self._relative(p) for p in cached.good],
            "bad": [[self._relative(bad.path), bad.reason] for bad in cached.bad],
        }
        atomic_torch_save(stored, path)  # a job of the same sweep may be writing the same entry now
        for stale in self.folder.glob(f"{self.prefix}*.pt"):
            if stale != path:
                stale.unlink(missing_ok=True)
        log.info("Disk cache written: %s (%.1f MB)", path, path.stat().st_size / 1e6)
        return path

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "root"


def available_memory_bytes() -> int | None:
    """Memory the OS can hand out now (Linux ``MemAvailable``), else the physical total, else None."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
