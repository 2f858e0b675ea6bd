"""Backbones: pretrained networks cut into named stages with a new head (see ``backbone.py``)."""

from transfer_lightning.models.backbone import Backbone, backbone_class, build_backbone

__all__ = ["Backbone", "backbone_class", "build_backbone"]
