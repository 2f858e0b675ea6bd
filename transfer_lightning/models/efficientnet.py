"""EfficientNet (b0..b3, v2_s): ``stem``, one stage per MBConv group, the last with the final conv; head ``classifier.1``."""

from __future__ import annotations

from torch import nn

from transfer_lightning.models.torchvision_backbone import TorchvisionBackbone


class EfficientNet(TorchvisionBackbone):
    """torchvision's EfficientNets (BatchNorm). The head runs with its dropout (``classifier``)."""

    family = "efficientnet"
    names = ("efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_v2_s")
    head_path = "classifier.1"
    head_run_path = "classifier"

    def stage_layout(self) -> dict[str, list[nn.Module]]:
        features = self.model.features
        stages: dict[str, list[nn.Module]] = {"stem": [features[0]]}
        last = len(features) - 2  # features[-1] is the final 1x1 conv, run in the last stage
        for index in range(1, last + 1):
            stages[f"stage{index}"] = [features[index]]
        stages[f"stage{last}"] += [features[-1], self.model.avgpool, nn.Flatten(1)]
        return stages
