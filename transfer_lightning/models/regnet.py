"""RegNet: ``stem``, then the stages of torchvision's ``trunk_output`` (``block1`` .. ``block4``); head ``fc``."""

from __future__ import annotations

from torch import nn

from transfer_lightning.models.torchvision_backbone import TorchvisionBackbone


class RegNet(TorchvisionBackbone):
    """torchvision's RegNetY models (BatchNorm)."""

    family = "regnet"
    names = ("regnet_y_400mf", "regnet_y_1_6gf")
    head_path = "fc"

    def stage_layout(self) -> dict[str, list[nn.Module]]:
        m = self.model
        stages: dict[str, list[nn.Module]] = {"stem": [m.stem]}
        stages.update({name: [stage] for name, stage in m.trunk_output.named_children()})  # block1 .. block4
        stages[next(reversed(stages))] += [m.avgpool, nn.Flatten(1)]
        return stages

    def stage_blocks(self, stage: str) -> list[list[nn.Module]]:
        if stage == "stem":
            return [self._layout["stem"]]
        stage_module = self._layout[stage][0]
        blocks = [[block] for block in stage_module.children()]
        blocks[-1].extend(self._layout[stage][1:])
        return blocks
