"""Vision Transformer: ``embed`` (patches, class token, position embedding), then the encoder
blocks in four equal groups (``blocks0-2`` .. ``blocks9-11`` for vit_b_16); head ``heads.head``."""

from __future__ import annotations

import torch
from torch import nn

from transfer_lightning.models.torchvision_backbone import TorchvisionBackbone

GROUPS = 4


class ClassToken(nn.Module):
    """The class token's output (position 0 of the sequence): what the head sees."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


class VisionTransformer(TorchvisionBackbone):
    """torchvision's ViT (LayerNorm: frozen by ``requires_grad`` alone). Cached features of a
    frozen prefix are the token sequence ``(batch, tokens, width)``.

    ``strategy.lr_decay_unit=block`` decays the learning rate per encoder block (the usual ViT
    fine-tuning recipe) instead of per group of blocks.
    """

    family = "vit"
    names = ("vit_b_16",)
    head_path = "heads.head"

    def stage_layout(self) -> dict[str, list[nn.Module]]:
        encoder = self.model.encoder
        layers = list(encoder.layers)
        size = -(-len(layers) // GROUPS)
        stages: dict[str, list[nn.Module]] = {"embed": [self.model.conv_proj, encoder.dropout]}
        for start in range(0, len(layers), size):
            end = min(start + size, len(layers)) - 1
            stages[f"blocks{start}-{end}" if end > start else f"block{start}"] = layers[start : end + 1]
        stages[next(reversed(stages))] += [encoder.ln, ClassToken()]
        return stages

    def extra_parameters(self, stage: str) -> list[nn.Parameter]:
        return [self.model.class_token, self.model.encoder.pos_embedding] if stage == "embed" else []

    def run_stage(self, stage: str, x: torch.Tensor) -> torch.Tensor:
        if stage != "embed":
            return super().run_stage(stage, x)
        x = self.model._process_input(x)
        x = torch.cat([self.model.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.model.encoder.dropout(x + self.model.encoder.pos_embedding)

    def stage_blocks(self, stage: str) -> list[list[nn.Module]]:
        modules = self._layout[stage]
        if stage == "embed":
            return [modules]
        blocks = [[module] for module in modules if isinstance(module, type(self.model.encoder.layers[0]))]
        blocks[-1] += [module for module in modules if not isinstance(module, type(self.model.encoder.layers[0]))]
        return blocks
