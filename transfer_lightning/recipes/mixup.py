"""Mixup and CutMix of training batches with timm's ``Mixup``, on the device: soft targets out.

timm's ``Mixup`` pairs image ``i`` with image ``B - 1 - i`` and so needs an even batch; an odd
batch (the last of an epoch) mixes all but its last image, which keeps its own label. It would
also smooth the mixed targets; here it is built with ``label_smoothing=0`` and the loss smooths
every target once, mixed or not (``recipes/loss.py``): the same targets as timm's, smoothed once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.data.mixup import Mixup, one_hot


@dataclass(frozen=True)
class MixupSettings:
    """The ``data.mixup_*`` / ``data.cutmix_alpha`` keys (``config/schemas.py`` documents each)."""

    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0
    switch_prob: float = 0.5
    mode: str = "batch"

    @property
    def active(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def describe(self) -> str:
        parts = [f"mixup alpha {self.mixup_alpha:g}"] if self.mixup_alpha > 0 else []
        parts += [f"CutMix alpha {self.cutmix_alpha:g}"] if self.cutmix_alpha > 0 else []
        return f"{' + '.join(parts)} (p {self.prob:g}, switch {self.switch_prob:g}, per {self.mode})"


class BatchMixer:
    """``(images, labels)`` -> ``(mixed images, targets (B, num_classes))``, where each target row holds the
    classes' shares in that image (their largest is its dominant label)."""

    def __init__(self, settings: MixupSettings, num_classes: int) -> None:
        self.settings = settings
        self.num_classes = num_classes
        self.mixup = Mixup(
            mixup_alpha=settings.mixup_alpha,
            cutmix_alpha=settings.cutmix_alpha,
            prob=settings.prob,
            switch_prob=settings.switch_prob,
            mode=settings.mode,
            label_smoothing=0.0,  # the loss smooths once (recipes/loss.py)
            num_classes=num_classes,
        )

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(images) % 2 == 0:
            return self.mixup(images, labels)
        if len(images) == 1:
            return images, one_hot(labels, self.num_classes)
        mixed, targets = self.mixup(images[:-1], labels[:-1])
        return torch.cat([mixed, images[-1:]]), torch.cat([targets, one_hot(labels[-1:], self.num_classes)])
