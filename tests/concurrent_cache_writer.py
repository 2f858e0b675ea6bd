"""One of two processes that fill the same image cache and feature cache at the same moment
(tests/test_concurrency.py): ``python -m tests.concurrent_cache_writer <folder> <go-file> <value>``.

Says it is ready (``<folder>/ready-<value>``), waits for ``<go-file>``, then writes both entries ``ROUNDS`` times and checks that what it reads back
is a whole entry (its own or the other process's)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from transfer_lightning.cache.store import FeatureCache
from transfer_lightning.data.image_cache import CachedImages, DiskCache

ROUNDS = 20
KEY = "f" * 16


def image_files(folder: Path) -> list[Path]:
    root = folder / "images"
    root.mkdir(exist_ok=True)
    for name in ("a.png", "b.png"):
        if not (root / name).exists():
            (root / name).write_bytes(b"not decoded here")
    return sorted(root.iterdir())


def main(folder: Path, go: Path, value: int) -> None:
    files = image_files(folder)
    images = DiskCache(folder / "image_cache", folder / "images", image_size=16)
    features = FeatureCache(folder / "feature_cache")
    (folder / f"ready-{value}").touch()
    while not go.exists():
        time.sleep(0.005)
    for _ in range(ROUNDS):
        images.save(files, CachedImages(torch.full((2, 3, 16, 16), value, dtype=torch.uint8), files, []))
        features.save(KEY, torch.full((2, 8), float(value)), torch.tensor([0, 1]), meta={"writer": value})
        loaded = images.load(files)
        assert loaded is not None and loaded.images.unique().numel() == 1, "a mixed image cache entry"
        entry = features.load(KEY)
        assert entry is not None and entry[0].unique().numel() == 1, "a mixed feature cache entry"


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
