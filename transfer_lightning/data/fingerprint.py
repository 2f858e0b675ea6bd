"""A split's identity: a content hash of which images it serves, in which order, with which labels.

The feature cache keys on it and ``run_summary.json`` records it (``data.split_fingerprints``),
so two runs whose splits differ (another ``data.split_seed``, another ``val_fraction``) never
share cached features and can be told apart afterwards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils.data import Dataset

_ROWS_PER_CHUNK = 512  # rows gathered at a time: a split of a memory-mapped set is never copied whole


def tensor_fingerprint(*tensors: torch.Tensor) -> str:
    """sha256 of the tensors' dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for tensor in tensors:
        _update(digest, tensor)
    return digest.hexdigest()


def rows_fingerprint(images: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor) -> str:
    """The fingerprint of ``images[positions]`` with ``labels``, equal to ``tensor_fingerprint`` of
    that gathered tensor and the labels, computed a chunk of rows at a time."""
    digest = hashlib.sha256()
    digest.update(f"{images.dtype}{(len(positions), *images.shape[1:])}".encode())
    for start in range(0, len(positions), _ROWS_PER_CHUNK):
        rows = images[positions[start : start + _ROWS_PER_CHUNK]].contiguous()
        digest.update(rows.reshape(-1).view(torch.uint8).numpy().tobytes() if rows.numel() else b"")
    _update(digest, labels)
    return digest.hexdigest()


def text_fingerprint(lines: Iterable[str]) -> str:
    """sha256 of ``lines`` (for splits identified by their files rather than decoded pixels)."""
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    return digest.hexdigest()


def split_fingerprint(dataset: Dataset) -> str | None:
    """The identity of one split: its own ``fingerprint()``, or the hash of its in-memory
    ``images`` and ``labels``; ``None`` when it has neither (such a split is never cached)."""
    if hasattr(dataset, "fingerprint"):
        return dataset.fingerprint()
    images, labels = getattr(dataset, "images", None), getattr(dataset, "labels", None)
    if torch.is_tensor(images) and torch.is_tensor(labels):
        return tensor_fingerprint(images, labels)
    return None


def _update(digest: Any, tensor: torch.Tensor) -> None:
    data = tensor.detach().cpu().contiguous()
    digest.update(f"{data.dtype}{tuple(data.shape)}".encode())
    digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
