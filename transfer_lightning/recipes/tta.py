"""Test-time augmentation (``tta=flip`` of evaluate, predict and export): the mean of the logits of each
image and of its horizontal mirror."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

TTA_WORDS = {
    "none": "none",
    "flip": "the mean of the logits of the image and of its horizontal mirror",
}


def logits_with_tta(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, tta: str) -> torch.Tensor:
    """``model(images)``, or with ``tta="flip"`` the mean of it and of ``model`` on the mirrored images."""
    if tta == "none":
        return model(images)
    if tta == "flip":
        return (model(images) + model(images.flip(-1))) / 2
    raise ValueError(f"unknown test-time augmentation {tta!r}")


class FlipTTA(nn.Module):
    """``network`` with ``tta=flip`` built in: what an exported file runs when TTA is part of its contract."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return logits_with_tta(self.network, images, "flip")
