"""ConvNeXt: ``stem``, ``stage1`` .. ``stage4`` (each with the downsampling before it); head ``classifier.2``."""

from __future__ import annotations

from torch import nn

from transfer_lightning.models.torchvision_backbone import TorchvisionBackbone


class ConvNeXt(TorchvisionBackbone):
    """torchvision's ConvNeXt (LayerNorm: frozen by ``requires_grad`` alone, no running statistics).

    The classifier's LayerNorm is pretrained, so it belongs to the last stage; only the new
    ``nn.Linear`` is the head.
    """

    family = "convnext"
    names = ("convnext_tiny", "convnext_small")
    head_path = "classifier.2"

    def stage_layout(self) -> dict[str, list[nn.Module]]:
        features, classifier = self.model.features, self.model.classifier
        return {
            "stem": [features[0]],
            "stage1": [features[1]],
            "stage2": [features[2], features[3]],
            "stage3": [features[4], features[5]],
            "stage4": [features[6], features[7], self.model.avgpool, classifier[0], classifier[1]],
        }
