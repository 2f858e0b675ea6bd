"""Pick the images worth looking at while predictions stream by: mistakes first, most confident first."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GridExamples:
    """Images with their predicted class, true class and the confidence of the prediction."""

    images: torch.Tensor  # (N, 3, H, W); or (N,) the images' indices in their split, fetched for the kept few
    preds: torch.Tensor  # (N,)
    targets: torch.Tensor  # (N,)
    confidences: torch.Tensor  # (N,) softmax probability of the predicted class

    @classmethod
    def empty(cls) -> GridExamples:
        return cls(
            torch.empty(0, 3, 1, 1),
            *(torch.empty(0, dtype=dtype) for dtype in (torch.long, torch.long)),
            torch.empty(0),
        )

    def __len__(self) -> int:
        return len(self.targets)

    def take(self, indices: torch.Tensor) -> GridExamples:
        return GridExamples(self.images[indices], self.preds[indices], self.targets[indices], self.confidences[indices])

    def cat(self, other: GridExamples) -> GridExamples:
        if not len(self):
            return other
        return GridExamples(
            torch.cat([self.images, other.images]),
            torch.cat([self.preds, other.preds]),
            torch.cat([self.targets, other.targets]),
            torch.cat([self.confidences, other.confidences]),
        )


class ExampleSelector:
    """Keeps at most ``size`` examples for a prediction grid, in constant memory.

    ``examples()`` returns the misclassified examples with the highest confidence first (the
    mistakes the model is surest of are the most telling), then correct ones to fill the grid,
    spread over the classes: the most confident correct example of each class, then the second
    most confident of each, and so on (not the first correct images in split order, which may all
    be one class).
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self.reset()

    def reset(self) -> None:
        self._wrong = GridExamples.empty()
        self._right = GridExamples.empty()

    def update(self, images: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        probabilities = logits.detach().float().softmax(dim=1)
        confidences, preds = probabilities.max(dim=1)
        images = images.detach().cpu()
        images = images.float() if images.is_floating_point() else images  # indices stay integers
        batch = GridExamples(images, preds.cpu(), targets.detach().cpu(), confidences.cpu())
        wrong = batch.preds != batch.targets
        candidates = self._wrong.cat(batch.take(wrong.nonzero().flatten()))
        order = candidates.confidences.argsort(descending=True, stable=True)[: self.size]
        self._wrong = candidates.take(order)
        right = self._right.cat(batch.take((~wrong).nonzero().flatten()))
        self._right = right.take(_spread_over_classes(right.targets, right.confidences)[: self.size])

    def examples(self) -> GridExamples:
        room = self.size - len(self._wrong)
        return self._wrong.cat(self._right.take(torch.arange(min(room, len(self._right)))))


def _spread_over_classes(classes: torch.Tensor, confidences: torch.Tensor) -> torch.Tensor:
    """Indices ordered by rank within their class (most confident first), then by class."""
    by_confidence = confidences.argsort(descending=True, stable=True)
    ranks = torch.empty_like(by_confidence)
    for label in classes.unique():
        members = by_confidence[classes[by_confidence] == label]
        ranks[members] = torch.arange(len(members))
    if not len(classes):
        return by_confidence
    return (ranks * (int(classes.max()) + 1) + classes).argsort(stable=True)
