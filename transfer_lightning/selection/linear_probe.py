"""The linear probe: multinomial logistic regression on a backbone's frozen, pooled features, fitted the
same way for every candidate so that their accuracies compare (Kornblith et al. 2019, "Do Better
ImageNet Models Transfer Better?", section 3: L-BFGS, an L2 penalty chosen on a validation split).

1. The features are centred with the training split's mean and divided by one number, their root mean
   square (``Scaling``): one grid of penalties then means the same on every backbone, whatever the scale
   of its features. (Not a scale per feature: the head maps back to the raw features, and dividing a
   nearly constant feature by its tiny spread would give it a huge weight there.)
2. For each penalty ``weight_decay`` of the grid, from the largest down (each fit starts from the last
   one's solution), L-BFGS minimises the mean cross-entropy over the training images plus
   ``weight_decay / 2 * ||W||^2`` (the bias is not penalised). This is scikit-learn's
   ``LogisticRegression(C=1 / (weight_decay * n_train))`` objective (checked in the tests).
3. The penalty with the best validation accuracy wins; of several that tie, the largest (the simplest head:
   on a small validation split many penalties tie, and the fine-tune starts from this head).
4. The winning head is mapped back to the raw features, so the network's own ``nn.Linear`` holds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

Split = tuple[torch.Tensor, torch.Tensor]  # features (N, D), labels (N,)


@dataclass
class Fit:
    """One penalty's solution and how it did on the validation split."""

    weight_decay: float
    weight: torch.Tensor
    bias: torch.Tensor
    iterations: int
    val_accuracy: float
    val_loss: float


@dataclass
class LinearProbe:
    """The chosen fit, as a head on the raw features, and the validation accuracy of every penalty."""

    weight: torch.Tensor  # (classes, D) on the raw features
    bias: torch.Tensor
    weight_decay: float
    iterations: int
    val_accuracies: dict[float, float] = field(default_factory=dict)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.weight.T + self.bias

    def correct(self, split: Split) -> torch.Tensor:
        features, labels = split
        return self.logits(features).argmax(dim=1) == labels


@dataclass(frozen=True)
class Scaling:
    """``(x - mean) / scale``: centred per feature, scaled by one number (the centred features' root mean square)."""

    mean: torch.Tensor
    scale: float

    @classmethod
    def of(cls, features: torch.Tensor) -> Scaling:
        mean = features.mean(dim=0)
        scale = float((features - mean).square().mean().sqrt())
        return cls(mean, scale if scale > 1e-12 else 1.0)  # constant features: nothing to scale

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.scale


def fit_logistic_regression(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    weight_decay: float,
    max_iterations: int,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(weight, bias, iterations)`` minimising mean cross-entropy + ``weight_decay / 2 * ||weight||^2``."""
    dimension = features.shape[1]
    weight = torch.zeros(num_classes, dimension, device=features.device, dtype=features.dtype)
    bias = torch.zeros(num_classes, device=features.device, dtype=features.dtype)
    if start is not None:
        weight, bias = start[0].clone(), start[1].clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iterations, history_size=20, line_search_fn="strong_wolfe",
        tolerance_grad=1e-6, tolerance_change=1e-10,
    )  # fmt: skip

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(features @ weight.T + bias, labels) + weight_decay / 2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    iterations = int(optimizer.state[weight].get("n_iter", 0))
    return weight.detach(), bias.detach(), iterations


def fit_linear_probe(
    train: Split,
    val: Split,
    num_classes: int,
    weight_decays: list[float],
    max_iterations: int,
    on_fit: Callable[[Fit], None] | None = None,
) -> LinearProbe:
    """Scale, fit every penalty of ``weight_decays`` (largest first, warm-started), keep the best on val."""
    scale = Scaling.of(train[0])
    train_x, val_x = scale(train[0]), scale(val[0])
    fits: list[Fit] = []
    start = None
    for weight_decay in sorted(weight_decays, reverse=True):
        weight, bias, iterations = fit_logistic_regression(
            train_x, train[1], num_classes, weight_decay, max_iterations, start
        )
        start = (weight, bias)
        with torch.no_grad():
            logits = val_x @ weight.T + bias
            accuracy = float((logits.argmax(dim=1) == val[1]).float().mean())
            loss = float(F.cross_entropy(logits, val[1]))
        fits.append(Fit(weight_decay, weight, bias, iterations, accuracy, loss))
        if on_fit is not None:
            on_fit(fits[-1])
    best = max(fits, key=lambda fit: (fit.val_accuracy, fit.weight_decay))
    # W (x - m) / s + b = (W / s) x + (b - (W / s) m): the same logits from the raw features
    weight = best.weight / scale.scale
    return LinearProbe(
        weight=weight,
        bias=best.bias - weight @ scale.mean,
        weight_decay=best.weight_decay,
        iterations=best.iterations,
        val_accuracies={fit.weight_decay: fit.val_accuracy for fit in fits},
    )
