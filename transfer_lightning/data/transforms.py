"""Batched, on-device image preprocessing: uint8 batches in, normalised float batches out.

Per-image PIL transforms on the main process are what starves a GPU (and a CPU) in the common
tutorial loop; here one ``F.interpolate`` call resizes the whole batch on the device it trains on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BatchPreprocessor(nn.Module):
    """uint8 ``(B, 3, H, W)`` -> float ``(B, 3, image_size, image_size)``, normalised with ``mean`` / ``std``.

    In training, ``augmentation`` (``recipes/augment.py``: ``data.augment``, kornia, every image its own
    draw) runs first, on the images at their stored size in [0, 1]; then one resize of the whole batch
    and the normalisation. Without it (and always outside training) the step is deterministic: what
    ``evaluate``, ``predict``, the export contract and the feature cache compute.
    """

    def __init__(
        self,
        image_size: int,
        augmentation: nn.Module | None = None,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        interpolation: str = "bilinear",
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.augmentation = augmentation
        self.interpolation = interpolation
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, train: bool = False) -> torch.Tensor:
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        if train and self.augmentation is not None:
            x = self.augmentation(x)
        x = resize(x, self.image_size, self.interpolation)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Back to [0, 1] pixels for display (the inverse of the normalisation)."""
        return (x * self.std.to(x.device) + self.mean.to(x.device)).clamp(0, 1)


def resize(x: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """Resize a float batch to ``size`` x ``size`` (``mode`` bilinear | bicubic, antialiased when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    shrinking = x.shape[-1] > size or x.shape[-2] > size
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=shrinking)
