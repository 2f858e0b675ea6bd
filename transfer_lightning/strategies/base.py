"""The interface every freezing strategy implements, with the helpers they share."""

from __future__ import annotations

from typing import Any

from torch import nn

from transfer_lightning.errors import UserError
from transfer_lightning.models import STAGE_NAMES, stage_modules, stage_parameters

NUM_STAGES = len(STAGE_NAMES)


class FreezingStrategy:
    """Decides which of a ResNet's five stages are frozen and how the optimizer sees the rest.

    Frozen means frozen: ``requires_grad=False``, not handed to the optimizer, and BatchNorm
    layers kept in eval mode so their running statistics do not move (``train_bn=True`` opts
    into training the BatchNorm layers of frozen stages: affine parameters and running stats).

    Subclasses override ``frozen_stages_at(epoch)`` for schedules that change over time and may
    override ``param_groups`` (e.g. discriminative learning rates) and ``on_train_epoch_start``.
    Stateful strategies implement ``state_dict``/``load_state_dict`` so resume restores them.

    Example::

        strategy = FreezeStages(frozen_stages=4)   # layer4 + head train
        strategy.apply(model)
        optimizer = torch.optim.SGD(strategy.param_groups(model, lr=1e-3), momentum=0.9)
    """

    def __init__(self, frozen_stages: int = 0, train_bn: bool = False) -> None:
        if not isinstance(frozen_stages, int) or not 0 <= frozen_stages <= NUM_STAGES:
            raise UserError(
                f"strategy.frozen_stages={frozen_stages!r} is out of range; allowed: 0..{NUM_STAGES} "
                "(0 = train everything, 5 = only the head trains)"
            )
        self.frozen_stages = frozen_stages
        self.train_bn = bool(train_bn)

    # -- what subclasses may override -------------------------------------------------------
    def frozen_stages_at(self, epoch: int) -> int:
        """How many stages, counted from the input, are frozen during ``epoch``."""
        return self.frozen_stages

    def frozen_stages_throughout(self) -> int:
        """Stages frozen (weights *and* BatchNorm statistics) in every epoch of the run.

        Their output is a pure function of the input image, which is what makes caching it
        exact. Schedules that unfreeze over time return their minimum.
        """
        return 0 if self.train_bn else self.frozen_stages

    def param_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]:
        """Named optimizer parameter groups of the trainable stages, head first."""
        groups = [{"name": "head", "params": stage_parameters(model, "head"), "lr": lr}]
        for stage in reversed(self.trainable_stage_names(0)):
            groups.append({"name": stage, "params": stage_parameters(model, stage), "lr": lr})
        frozen_bn = self._frozen_bn_parameters(model, 0) if self.train_bn else []
        if frozen_bn:
            groups.append({"name": "frozen_bn", "params": frozen_bn, "lr": lr})
        return groups

    def on_train_epoch_start(self, model: nn.Module, epoch: int, optimizer: Any = None) -> None:
        """Called at the start of every training epoch; schedules change the model here."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (nothing for a fixed strategy)."""

    # -- shared behaviour -------------------------------------------------------------------
    def frozen_stage_names(self, epoch: int = 0) -> tuple[str, ...]:
        return STAGE_NAMES[: self.frozen_stages_at(epoch)]

    def trainable_stage_names(self, epoch: int = 0) -> tuple[str, ...]:
        return STAGE_NAMES[self.frozen_stages_at(epoch) :]

    def apply(self, model: nn.Module, epoch: int = 0) -> None:
        """Set ``requires_grad`` of every parameter and the BatchNorm modes for ``epoch``."""
        frozen = set(self.frozen_stage_names(epoch))
        for stage in STAGE_NAMES:
            for parameter in stage_parameters(model, stage):
                parameter.requires_grad_(stage not in frozen)
        for parameter in stage_parameters(model, "head"):
            parameter.requires_grad_(True)
        if self.train_bn:
            for parameter in self._frozen_bn_parameters(model, epoch):
                parameter.requires_grad_(True)
        self.set_batchnorm_modes(model, epoch)

    def set_batchnorm_modes(self, model: nn.Module, epoch: int = 0) -> None:
        """Put BatchNorm layers of frozen stages in eval mode (call after ``model.train()``)."""
        if self.train_bn or not model.training:
            return
        for stage in self.frozen_stage_names(epoch):
            for module in stage_modules(model, stage):
                for layer in module.modules():
                    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                        layer.eval()

    def _frozen_bn_parameters(self, model: nn.Module, epoch: int) -> list[nn.Parameter]:
        return [
            parameter
            for stage in self.frozen_stage_names(epoch)
            for module in stage_modules(model, stage)
            for layer in module.modules()
            if isinstance(layer, nn.modules.batchnorm._BatchNorm)
            for parameter in layer.parameters(recurse=False)
        ]

    def describe(self) -> str:
        trainable = ", ".join(self.trainable_stage_names(0)) or "none"
        return (
            f"{type(self).__name__}: {self.frozen_stages} of {NUM_STAGES} stages frozen; "
            f"trainable stages: {trainable} + head{' (+ BatchNorm of frozen stages)' if self.train_bn else ''}"
        )
