"""ResNet, ResNeXt and Wide ResNet: ``stem`` (conv1 + bn1 + relu + maxpool), ``layer1`` .. ``layer4``; head ``fc``."""

from __future__ import annotations

from torch import nn

from transfer_lightning.models.torchvision_backbone import TorchvisionBackbone


class ResNet(TorchvisionBackbone):
    """torchvision's ResNets (BatchNorm: frozen stages keep their running statistics in eval mode)."""

    family = "resnet"
    names = (
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "resnext50_32x4d",
        "wide_resnet50_2",
    )
    head_path = "fc"

    def stage_layout(self) -> dict[str, list[nn.Module]]:
        m = self.model
        return {
            "stem": [m.conv1, m.bn1, m.relu, m.maxpool],
            "layer1": [m.layer1],
            "layer2": [m.layer2],
            "layer3": [m.layer3],
            "layer4": [m.layer4, m.avgpool, nn.Flatten(1)],
        }

    def stage_blocks(self, stage: str) -> list[list[nn.Module]]:
        return [self._layout["stem"]] if stage == "stem" else super().stage_blocks(stage)
