"""On-disk feature cache: one file per key, checksummed, written atomically."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from transfer_lightning.cache.key import tensor_fingerprint
from transfer_lightning.utils.files import atomic_torch_save

log = logging.getLogger(__name__)

Features = tuple[torch.Tensor, torch.Tensor]  # (features, labels)


class FeatureCache:
    """Features and labels of one split under one key, in ``directory/<key>.pt``.

    A file is trusted only if it loads (``weights_only``), names the key it was asked for and
    its checksum matches its tensors; anything else is reported, deleted and recomputed. Files
    are written to a temporary name and moved into place, so a crash or a parallel job of the
    same sweep never leaves a half-written entry. ``hits`` and ``misses`` name what was
    served from disk and what had to be computed.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()
        self.hits: list[str] = []
        self.misses: list[str] = []

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.pt"

    def load(self, key: str) -> Features | None:
        """The entry of ``key``, or ``None`` when absent or corrupted (a corrupted file is removed)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            features, labels = entry["features"], entry["labels"]
            valid = entry.get("key") == key and entry.get("checksum") == tensor_fingerprint(features, labels)
        except Exception as error:  # noqa: BLE001 - any unreadable file is treated the same way
            log.warning("Feature cache: %s cannot be read (%s); rebuilding it", path.name, type(error).__name__)
            path.unlink(missing_ok=True)
            return None
        if not valid:
            log.warning("Feature cache: %s fails its checksum; rebuilding it", path.name)
            path.unlink(missing_ok=True)
            return None
        return features, labels

    def save(self, key: str, features: torch.Tensor, labels: torch.Tensor, meta: dict[str, Any]) -> Path:
        """Write the entry of ``key`` atomically (a uniquely named temporary file + ``os.replace``)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        entry = {
            "key": key,
            "features": features.contiguous(),
            "labels": labels,
            "checksum": tensor_fingerprint(features, labels),
            "meta": meta,
        }
        return atomic_torch_save(entry, self.path(key))

    def get_or_compute(self, key: str, name: str, compute: Callable[[], Features], meta: dict[str, Any]) -> Features:
        """Load ``key`` (a hit) or ``compute()`` and store it (a miss); ``name`` labels the log line."""
        cached = self.load(key)
        if cached is not None:
            self.hits.append(name)
            log.info("Feature cache hit: %s (%s)", name, self.path(key))
            return cached
        self.misses.append(name)
        log.info("Feature cache miss: %s; computing it", name)
        features, labels = compute()
        path = self.save(key, features, labels, meta)
        log.info("Feature cache: stored %s (%.1f MB) at %s", name, path.stat().st_size / 2**20, path)
        return features, labels
