"""The training loss (``loss.*``): cross-entropy with label smoothing and class weights, on labels or on
mixup's soft targets (timm's ``SoftTargetCrossEntropy``).

Label smoothing is applied here and only here: to a label as torch's ``cross_entropy`` does, and to
a soft target row ``t`` as ``(1 - s) t + s / C``, which is exactly what timm's ``Mixup`` would have
produced with ``label_smoothing=s`` (its mixup is built without smoothing: ``recipes/mixup.py``).
``loss.class_weights=balanced`` weights each class by ``n / (C n_c)`` from the training split
(sklearn's "balanced": a class half as frequent counts twice as much).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from timm.loss import SoftTargetCrossEntropy
from torch import nn

# what a checkpoint written before loss.* existed trained with
PLAIN_CROSS_ENTROPY = {"label_smoothing": 0.0, "class_weights": "none"}


class ClassificationLoss(nn.Module):
    """Cross-entropy of ``logits`` against labels ``(B,)`` or soft targets ``(B, C)``.

    ``class_weights``: one weight per class (``balanced_class_weights``), or None. Kept as a buffer that
    is not saved: it is a function of the training split, recomputed by the run that trains.
    """

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.soft_target = SoftTargetCrossEntropy()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.ndim == 1:
            return F.cross_entropy(logits, targets, weight=self.class_weights, label_smoothing=self.label_smoothing)
        smoothed = targets * (1 - self.label_smoothing) + self.label_smoothing / self.num_classes
        if self.class_weights is None:
            return self.soft_target(logits, smoothed)
        return F.cross_entropy(logits, smoothed, weight=self.class_weights)

    def describe(self) -> str:
        parts = [f"label smoothing {self.label_smoothing:g}"] if self.label_smoothing else []
        if self.class_weights is not None:
            shown = ", ".join(f"{weight:.3g}" for weight in self.class_weights.tolist()[:10])
            parts.append(f"class weights [{shown}{', ...' if self.num_classes > 10 else ''}] (balanced)")
        return "cross-entropy" + (f" ({'; '.join(parts)})" if parts else "")


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``n / (C n_c)`` for each class ``c`` of the training labels (a class without images gets the weight of
    a class with one: it never occurs in a training batch anyway)."""
    counts = torch.bincount(labels.long().flatten(), minlength=num_classes).double().clamp(min=1)
    return (len(labels) / (num_classes * counts)).float()


def build_loss(
    settings: Mapping[str, Any] | None, num_classes: int, train_labels: torch.Tensor | None
) -> ClassificationLoss:
    """The loss ``settings`` (a ``loss.*`` node or a checkpoint's record) describe; class weights need the
    training labels, which only a training run has (``evaluate``/``predict``/``export`` never train)."""
    settings = {**PLAIN_CROSS_ENTROPY, **(settings or {})}
    weights = None
    if settings["class_weights"] == "balanced" and train_labels is not None:
        weights = balanced_class_weights(train_labels, num_classes)
    return ClassificationLoss(num_classes, settings["label_smoothing"], weights)
