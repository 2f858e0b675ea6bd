"""LP-FT: a linear probe of the head on the frozen features, then everything fine-tuned at a small rate."""

from __future__ import annotations

from typing import Any

from transfer_lightning.models import Backbone
from transfer_lightning.strategies.freeze_stages import FreezeStages


class LinearProbeFinetune(FreezeStages):
    """LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
    Out-of-Distribution"): fine-tuning from a random head distorts the pretrained features while the head
    is still wrong; fitting the head first, as a linear probe on the frozen features, then fine-tuning
    everything at a small rate keeps them.

    The probe runs before training (``recipes/linear_probe.py``): the head alone, fitted to convergence
    (L-BFGS, at most ``probe_max_iter`` iterations, L2 penalty ``probe_weight_decay``) on the whole
    backbone's output for the training images, taken from the feature cache. Then the stages from
    ``frozen_stages`` (0: all) and the head train at ``optimizer.lr x finetune_lr_scale`` (each group
    keeps its ``lr_decay`` ratio).

    Example::

        LinearProbeFinetune(probe_max_iter=500, finetune_lr_scale=0.1, stage_names=backbone.stage_names)
    """

    def __init__(
        self,
        probe_max_iter: int = 500,
        probe_weight_decay: float = 1e-4,
        finetune_lr_scale: float = 0.1,
        frozen_stages: int | str = 0,
        **common: Any,
    ) -> None:
        super().__init__(frozen_stages=frozen_stages, **common)
        self.probe_max_iter = probe_max_iter
        self.probe_weight_decay = probe_weight_decay
        self.finetune_lr_scale = finetune_lr_scale

    def param_groups(self, backbone: Backbone, lr: float) -> list[dict[str, Any]]:
        return super().param_groups(backbone, lr * self.finetune_lr_scale)

    def describe(self) -> str:
        probe = f"first a linear probe of the head (L-BFGS, up to {self.probe_max_iter} iterations), then " if (
            self.probe_max_iter) else ""  # fmt: skip
        return (
            f"{super().describe()}; {probe}every group at x{self.finetune_lr_scale:g} of its rate (finetune_lr_scale)"
        )
