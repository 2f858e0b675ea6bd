"""Batched, on-device image preprocessing: uint8 batches in, normalised float batches out.

Per-image PIL transforms on the main process are what starves a GPU (and a CPU) in the common
tutorial loop; here one ``F.interpolate`` call resizes the whole batch on the device it trains on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_CROPS = ("pad", "random_resized")


class BatchPreprocessor(nn.Module):
    """uint8 ``(B, 3, H, W)`` -> float ``(B, 3, image_size, image_size)``, ImageNet-normalised.

    ``augment="standard"`` (training only): random crop (padding of 1/8 of the side, as for
    CIFAR) + horizontal flip per image, and optional colour jitter of strength ``color_jitter``.
    ``train_crop="random_resized"`` swaps the padded crop for a random resized crop (as
    torchvision's ``RandomResizedCrop``, scale 0.08..1, aspect 3/4..4/3) + flip, output directly
    at ``image_size``: for photos, where a padded crop barely changes the view.
    """

    def __init__(
        self,
        image_size: int,
        augment: str = "none",
        color_jitter: float = 0.0,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        train_crop: str = "pad",
        interpolation: str = "bilinear",
    ) -> None:
        super().__init__()
        if train_crop not in TRAIN_CROPS:
            raise ValueError(f"train_crop={train_crop!r}; allowed: {', '.join(TRAIN_CROPS)}")
        self.image_size = image_size
        self.augment = augment
        self.train_crop = train_crop
        self.color_jitter = color_jitter
        self.interpolation = interpolation
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, train: bool = False) -> torch.Tensor:
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        if train and self.augment == "standard":
            if self.train_crop == "random_resized":
                x = random_resized_crop_and_flip(x, self.image_size)
            else:
                x = random_crop_and_flip(x)
            if self.color_jitter > 0:
                x = jitter_colors(x, self.color_jitter)
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


def random_resized_crop_and_flip(
    x: torch.Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Per image: a random box (area ``scale`` of the image, aspect ``ratio``), resized to
    ``size`` x ``size``, flipped half the time; the whole batch in one ``grid_sample`` call.

    Where torchvision redraws a box that does not fit, the box is clipped to the image instead.
    Bilinear without antialiasing: the boxes are at most the image, so from images stored at
    ``size`` this only ever enlarges.
    """
    batch = x.shape[0]
    options = {"device": x.device, "dtype": x.dtype}
    area = torch.empty(batch, **options).uniform_(*scale)
    aspect = torch.empty(batch, **options).uniform_(math.log(ratio[0]), math.log(ratio[1])).exp()
    width = (area * aspect).sqrt().clamp(max=1.0)  # fractions of the image's width and height
    height = (area / aspect).sqrt().clamp(max=1.0)
    centre_x = (torch.rand(batch, **options) * 2 - 1) * (1 - width)  # in grid units, -1..1
    centre_y = (torch.rand(batch, **options) * 2 - 1) * (1 - height)
    flip = torch.where(torch.rand(batch, **options) < 0.5, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3, **options)
    theta[:, 0, 0] = width * flip
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = centre_y
    grid = F.affine_grid(theta, [batch, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


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
