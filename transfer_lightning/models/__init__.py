"""Backbones: torchvision ResNets with a new classification head, and their weights."""

from transfer_lightning.models.resnet import (
    ARCHITECTURES,
    STAGE_NAMES,
    build_resnet,
    forward_from,
    frozen_features,
    stage_modules,
    stage_parameters,
)

__all__ = [
    "ARCHITECTURES",
    "STAGE_NAMES",
    "build_resnet",
    "forward_from",
    "frozen_features",
    "stage_modules",
    "stage_parameters",
]
