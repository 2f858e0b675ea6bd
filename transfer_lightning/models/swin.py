"""Swin Transformer: ``stem`` (patch embedding), ``stage1`` .. ``stage4`` (patch merging + blocks); head ``head``."""

from __future__ import annotations

from torch import nn

from transfer_lightning.models.torchvision_backbone import TorchvisionBackbone


class SwinTransformer(TorchvisionBackbone):
    """torchvision's Swin (LayerNorm: frozen by ``requires_grad`` alone); blocks are Swin blocks."""

    family = "swin"
    names = ("swin_t",)
    head_path = "head"

    def stage_layout(self) -> dict[str, list[nn.Module]]:
        m, features = self.model, self.model.features
        return {
            "stem": [features[0]],
            "stage1": [features[1]],
            "stage2": [features[2], features[3]],
            "stage3": [features[4], features[5]],
            "stage4": [features[6], features[7], m.norm, m.permute, m.avgpool, m.flatten],
        }

    def stage_blocks(self, stage: str) -> list[list[nn.Module]]:
        return [self._layout["stem"]] if stage == "stem" else super().stage_blocks(stage)
