"""Print the backbone table of docs/backbones.md from the code: stages, trainable parameters per preset, preprocessing.

``python scripts/backbone_table.py`` builds every torchvision model (and a few timm ones) on the
meta device (no memory, no weights), applies each preset's ``FreezeStages`` and counts what trains.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transfer_lightning.models import Backbone, backbone_class, build_backbone  # noqa: E402
from transfer_lightning.models.families import TORCHVISION_FAMILIES  # noqa: E402
from transfer_lightning.models.timm_backbone import TimmBackbone  # noqa: E402
from transfer_lightning.strategies import FreezeStages  # noqa: E402

TIMM_EXAMPLES = ("resnet50", "convnext_tiny", "vit_base_patch16_224")
CLASSES = 10
NORMS = {
    nn.modules.batchnorm._BatchNorm: "BatchNorm: frozen stages stay in eval mode (running statistics kept)",
    nn.LayerNorm: "LayerNorm: frozen by requires_grad alone (no running statistics)",
    nn.GroupNorm: "GroupNorm: frozen by requires_grad alone (no running statistics)",
}


def build(model: dict) -> Backbone:
    try:
        with torch.device("meta"):
            return build_backbone(model, CLASSES)
    except NotImplementedError:  # RegNet computes its widths from tensors while building
        return build_backbone(model, CLASSES)


def trainable(backbone: Backbone, frozen: int | str) -> int:
    FreezeStages(frozen_stages=frozen, stage_names=backbone.stage_names).apply(backbone)
    return sum(p.numel() for p in backbone.model.parameters() if p.requires_grad)


def norm_note(backbone: Backbone) -> str:
    layers = [layer for stage in backbone.stage_names for layer in backbone.norm_layers(stage)]
    found = [note for kind, note in NORMS.items() if any(isinstance(layer, kind) for layer in layers)]
    return "; ".join(found) or "no norm layers"


def row(model: dict, label: str) -> str:
    backbone = build({**model, "weights": None})
    counts = [trainable(backbone, frozen) for frozen in ("all", "all_but_last", 0)]
    pre = backbone_class(model).default_preprocessing(model["name"], model["weights"])
    stages = ", ".join(f"`{name}`" for name in backbone.stage_names)
    preprocessing = f"{pre.image_size} (resize {pre.resize_size}, {pre.interpolation}), mean {_short(pre.mean)}"
    return f"| {label} | {stages} | {counts[0]:,} | {counts[1]:,} | {counts[2]:,} | {preprocessing} | {norm_note(backbone)} |"


def _short(values: tuple[float, ...]) -> str:
    return "/".join(f"{v:g}" for v in values)


def main() -> None:
    print("| model | stages (from the input) | feature_extract | finetune | full | default input | norm layers |")
    print("| --- | --- | ---: | ---: | ---: | --- | --- |")
    for family in TORCHVISION_FAMILIES:
        for name in family.names:
            print(row({"name": name, "weights": "DEFAULT"}, f"`model={name}`"))
    for name in TIMM_EXAMPLES:
        model = {
            "backbone": f"{TimmBackbone.__module__}.{TimmBackbone.__name__}",
            "name": name,
            "weights": "pretrained",
        }
        print(row(model, f"`model=timm model.name={name}`"))


if __name__ == "__main__":
    main()
