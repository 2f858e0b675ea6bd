"""What every torchvision family shares: built by name, preprocessing from its weights' metadata."""

from __future__ import annotations

import torchvision
from torch import nn

from transfer_lightning.data.contract import Preprocessing
from transfer_lightning.models.backbone import Backbone
from transfer_lightning.models.weights import is_weights_file, torchvision_weights


class TorchvisionBackbone(Backbone):
    """A ``torchvision.models`` architecture; ``model.weights`` is one of its weights names."""

    @classmethod
    def create(cls, name: str) -> nn.Module:
        return torchvision.models.get_model(name, weights=None)

    @classmethod
    def default_preprocessing(cls, name: str, weights: str | None) -> Preprocessing:
        """From the weights' ``transforms()`` (the DEFAULT weights' for a file or random init)."""
        chosen = "DEFAULT" if weights is None or is_weights_file(str(weights)) else str(weights)
        transform = torchvision_weights(name, chosen).transforms()
        return Preprocessing(
            image_size=int(transform.crop_size[0]),
            resize_size=int(transform.resize_size[0]),
            interpolation=transform.interpolation.value,
            mean=tuple(transform.mean),
            std=tuple(transform.std),
        )
