"""MobileNetV3 large: ``stem``, ``stage1`` .. ``stage5`` by output resolution; head ``classifier.3``."""

from __future__ import annotations

from torch import nn

from transfer_lightning.models.torchvision_backbone import TorchvisionBackbone

# features indices per stage: blocks at one resolution (16, 24, 40, 80/112, 160 channels)
_STAGES = {"stem": (0, 1), "stage1": (1, 2), "stage2": (2, 4), "stage3": (4, 7), "stage4": (7, 13), "stage5": (13, 17)}


class MobileNetV3(TorchvisionBackbone):
    """torchvision's MobileNetV3 large (BatchNorm). The pretrained 1280-d layer of the classifier
    belongs to the last stage; the head is the final ``nn.Linear`` (run with its dropout)."""

    family = "mobilenet"
    names = ("mobilenet_v3_large",)
    head_path = "classifier.3"

    def stage_layout(self) -> dict[str, list[nn.Module]]:
        features, classifier = self.model.features, self.model.classifier
        stages: dict[str, list[nn.Module]] = {name: list(features[a:b]) for name, (a, b) in _STAGES.items()}
        stages["stage5"] += [self.model.avgpool, nn.Flatten(1), classifier[0], classifier[1], classifier[2]]
        return stages

    def stage_blocks(self, stage: str) -> list[list[nn.Module]]:
        modules = self._layout[stage]
        return [[module] for module in modules[:-5]] + [modules[-5:]] if stage == "stage5" else [[m] for m in modules]
