"""The one place that builds a ResNet and maps its five stages to modules and parameters.

A torchvision ResNet is split into five stages, counted from the input:
``stem`` (conv1 + bn1, with relu and maxpool), ``layer1`` .. ``layer4``. The classification head
is ``fc``, replaced by a new ``nn.Linear`` sized to the data's number of classes.
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from torch import nn

from transfer_lightning.errors import UserError
from transfer_lightning.models.lineage import keeps_head
from transfer_lightning.models.weights import load_weights

ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
STAGE_NAMES = ("stem", "layer1", "layer2", "layer3", "layer4")
_STAGE_ATTRIBUTES = {
    "stem": ("conv1", "bn1", "relu", "maxpool"),
    "layer1": ("layer1",),
    "layer2": ("layer2",),
    "layer3": ("layer3",),
    "layer4": ("layer4",),
}


def build_resnet(
    name: str, num_classes: int, weights: str | None, class_names: list[str] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Build ``name`` with ``weights`` and a fresh ``num_classes``-way head.

    Weights from a run of this framework keep that run's head when ``class_names`` is its very
    class list. Returns the model and the lineage of its weights (``models/lineage.py``).
    """
    if name not in ARCHITECTURES:
        raise UserError(f"model.name={name!r} is not supported; choose one of {', '.join(ARCHITECTURES)}")
    if num_classes < 2:
        raise UserError(f"the data has {num_classes} class(es); a classifier needs at least 2")
    model = torchvision.models.get_model(name, weights=None)
    source = load_weights(model, name, weights)
    if not (source["source"] == "run" and class_names is not None and keeps_head(source, class_names)):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model, source


def stage_modules(model: nn.Module, stage: str) -> list[nn.Module]:
    """The modules making up one stage (``stem``, ``layer1`` .. ``layer4``)."""
    return [getattr(model, attribute) for attribute in _STAGE_ATTRIBUTES[stage]]


def stage_parameters(model: nn.Module, stage: str) -> list[nn.Parameter]:
    """All parameters of one stage, or of the head when ``stage == "head"``."""
    if stage == "head":
        return list(model.fc.parameters())
    return [p for module in stage_modules(model, stage) for p in module.parameters()]


def frozen_features(model: nn.Module, images: torch.Tensor, num_stages: int) -> torch.Tensor:
    """The output of the first ``num_stages`` stages for ``images``.

    With all five stages this is the pooled feature vector (``avgpool`` + flatten, 512-d for
    resnet18) that the head sees; otherwise it is the stage's feature map.
    """
    x = images
    for stage in STAGE_NAMES[:num_stages]:
        for module in stage_modules(model, stage):
            x = module(x)
    if num_stages == len(STAGE_NAMES):
        x = torch.flatten(model.avgpool(x), 1)
    return x


def forward_from(model: nn.Module, features: torch.Tensor, first_stage: int) -> torch.Tensor:
    """Logits from the output of the first ``first_stage`` stages (see ``frozen_features``).

    ``forward_from(model, frozen_features(model, x, k), k)`` equals ``model(x)`` for k in 0..5.
    """
    x = features
    for stage in STAGE_NAMES[first_stage:]:
        for module in stage_modules(model, stage):
            x = module(x)
    if first_stage < len(STAGE_NAMES):
        x = torch.flatten(model.avgpool(x), 1)
    return model.fc(x)
