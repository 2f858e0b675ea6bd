"""The preprocessing contract a checkpoint records (``image_size``, ``mean``, ``std``), as a module."""

from __future__ import annotations

from typing import Any

from transfer_lightning.data.transforms import BatchPreprocessor


def preprocessor_for(preprocessing: dict[str, Any]) -> BatchPreprocessor:
    """The inference-time preprocessing a contract describes (no augmentation)."""
    return BatchPreprocessor(
        int(preprocessing["image_size"]),
        augment="none",
        mean=tuple(preprocessing["mean"]),
        std=tuple(preprocessing["std"]),
    )
