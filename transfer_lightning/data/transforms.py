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
AUGMENTATIONS = ("none", "standard")


class BatchPreprocessor(nn.Module):
    """uint8 ``(B, 3, H, W)`` -> float ``(B, 3, image_size, image_size)``, ImageNet-normalised.

    ``augment="standard"`` (training only): random crop (padding of 1/8 of the side, as for
    CIFAR) + horizontal flip per image, and optional colour jitter of strength ``color_jitter``.
    """

    def __init__(
        self,
        image_size: int,
        augment: str = "none",
        color_jitter: float = 0.0,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.augment = augment
        self.color_jitter = color_jitter
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, train: bool = False) -> torch.Tensor:
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        if train and self.augment == "standard":
            x = random_crop_and_flip(x)
            if self.color_jitter > 0:
                x = jitter_colors(x, self.color_jitter)
        x = resize(x, self.image_size)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Back to [0, 1] pixels for display (the inverse of the normalisation)."""
        return (x * self.std.to(x.device) + self.mean.to(x.device)).clamp(0, 1)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of a float batch to ``size`` x ``size`` (antialiased when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    shrinking = x.shape[-1] > size or x.shape[-2] > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)


def random_crop_and_flip(x: torch.Tensor) -> torch.Tensor:
    batch, _, height, width = x.shape
    pad = max(1, height // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    offsets = torch.randint(0, 2 * pad + 1, (batch, 2))
    crops = [
        padded[i, :, top : top + height, left : left + width]
        for i, (top, left) in enumerate(offsets.tolist())
    ]
    x = torch.stack(crops)
    flip = torch.rand(batch, device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def jitter_colors(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Per-image random brightness, contrast and saturation in [1 - strength, 1 + strength]."""
    batch = x.shape[0]

    def factors() -> torch.Tensor:
        return torch.empty(batch, 1, 1, 1, device=x.device).uniform_(1 - strength, 1 + strength)

    x = x * factors()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factors() + mean
    gray = x.mean(dim=1, keepdim=True)
    x = (x - gray) * factors() + gray
    return x.clamp(0, 1)
