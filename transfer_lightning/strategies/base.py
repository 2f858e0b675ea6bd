"""The interface every freezing strategy implements, with the helpers they share."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.optim import Optimizer

from transfer_lightning.errors import UserError
from transfer_lightning.models import STAGE_NAMES, stage_modules, stage_parameters

NUM_STAGES = len(STAGE_NAMES)
BN_MODES = ("train", "eval")


class FreezingStrategy:
    """Decides which of a ResNet's five stages are frozen and how the optimizer sees the rest.

    Frozen means frozen: ``requires_grad=False``, not handed to the optimizer, and BatchNorm
    layers kept in eval mode so their running statistics do not move (``train_bn=True`` opts
    into training the BatchNorm layers of frozen stages: affine parameters and running stats).
    ``unfrozen_bn="eval"`` keeps the BatchNorm layers of *training* stages in eval mode too
    (pretrained statistics, affine parameters still train): the choice for small batches.

    Learning rates: the head gets ``lr``; with ``lr_decay`` each stage below it gets
    ``lr_decay`` times the stage above (layer4 ``lr * d``, layer3 ``lr * d**2`` ... stem
    ``lr * d**5``). Every group carries its ratio to the head as ``lr_scale``, and
    ``update_learning_rates`` re-derives each group's rate from the head's, so the ratios hold
    under any schedule that sets the head's rate.

    Schedules (``GradualUnfreeze``) override ``frozen_stages_at(epoch)``: the stages between
    ``frozen_stages`` and ``frozen_stages_at(epoch)`` are *waiting* — in the optimizer from the
    start (so DDP and schedulers see a fixed set of parameters), with learning rate 0, BatchNorm
    in eval mode and their gradients dropped before every optimizer step. ``lr_gate`` may ramp
    a stage's rate in after it starts training. Stateful strategies implement
    ``state_dict``/``load_state_dict`` so resume restores them.

    Example::

        strategy = FreezeStages(frozen_stages=4, lr_decay=0.5)   # layer4 (lr/2) + head train
        strategy.apply(model)
        optimizer = torch.optim.SGD(strategy.param_groups(model, lr=1e-3), momentum=0.9)
    """

    def __init__(
        self, frozen_stages: int = 0, train_bn: bool = False, lr_decay: float | None = None, unfrozen_bn: str = "train"
    ) -> None:
        if not isinstance(frozen_stages, int) or not 0 <= frozen_stages <= NUM_STAGES:
            raise UserError(
                f"strategy.frozen_stages={frozen_stages!r} is out of range; allowed: 0..{NUM_STAGES} "
                "(0 = train everything, 5 = only the head trains)"
            )
        if lr_decay is not None and not (isinstance(lr_decay, (int, float)) and 0 < lr_decay <= 1):
            raise UserError(f"strategy.lr_decay={lr_decay!r} is not allowed; use a number in (0, 1] or null")
        if unfrozen_bn not in BN_MODES:
            raise UserError(f"strategy.unfrozen_bn={unfrozen_bn!r} is not allowed; use train or eval")
        self.frozen_stages = frozen_stages  # frozen for the whole run: never in the optimizer
        self.train_bn = bool(train_bn)
        self.lr_decay = None if lr_decay is None else float(lr_decay)
        self.unfrozen_bn = unfrozen_bn

    # -- what subclasses may override -------------------------------------------------------
    def frozen_stages_at(self, epoch: int) -> int:
        """How many stages, counted from the input, do not train during ``epoch``."""
        return self.frozen_stages

    def lr_gate(self, stage: str, epoch: int) -> float:
        """Multiplier (0..1) on ``stage``'s learning rate in ``epoch``: 0 while it waits, 1 when it trains."""
        return 1.0 if stage in self.trainable_stage_names(epoch) else 0.0

    def frozen_stages_throughout(self) -> int:
        """Stages frozen (weights *and* BatchNorm statistics) in every epoch of the run.

        Their output is a pure function of the input image, which is what makes caching it
        exact. Schedules that unfreeze over time return their minimum.
        """
        return 0 if self.train_bn else self.frozen_stages

    def param_groups(self, model: nn.Module, lr: float) -> list[dict[str, Any]]:
        """Named optimizer parameter groups, head first, with their rate for epoch 0.

        Every stage that trains in *some* epoch has a group from the start; ``lr_scale`` is its
        ratio to the head's rate (``lr_decay ** depth``, depth 1 = layer4 ... 5 = stem).
        """
        groups = [{"name": "head", "params": stage_parameters(model, "head"), "lr": lr, "lr_scale": 1.0}]
        for depth, stage in enumerate(reversed(self.optimized_stage_names()), start=1):
            scale = self.lr_decay**depth if self.lr_decay is not None else 1.0
            rate = lr * scale * self.lr_gate(stage, 0)
            groups.append({"name": stage, "params": stage_parameters(model, stage), "lr": rate, "lr_scale": scale})
        frozen_bn = self._frozen_bn_parameters(model) if self.train_bn else []
        if frozen_bn:
            groups.append({"name": "frozen_bn", "params": frozen_bn, "lr": lr, "lr_scale": 1.0})
        return groups

    def on_train_epoch_start(self, model: nn.Module, epoch: int, optimizer: Any = None) -> None:
        """Called at the start of every training epoch; schedules may change the model here."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (nothing for a fixed strategy)."""

    # -- shared behaviour -------------------------------------------------------------------
    def frozen_stage_names(self, epoch: int = 0) -> tuple[str, ...]:
        return STAGE_NAMES[: self.frozen_stages_at(epoch)]

    def trainable_stage_names(self, epoch: int = 0) -> tuple[str, ...]:
        return STAGE_NAMES[self.frozen_stages_at(epoch) :]

    def optimized_stage_names(self) -> tuple[str, ...]:
        """Stages in the optimizer (``requires_grad=True``) for the whole run, trained now or later."""
        return STAGE_NAMES[self.frozen_stages :]

    def waiting_stage_names(self, epoch: int) -> tuple[str, ...]:
        """Stages in the optimizer that do not train yet in ``epoch``."""
        return tuple(s for s in self.optimized_stage_names() if s not in self.trainable_stage_names(epoch))

    def apply(self, model: nn.Module, epoch: int = 0) -> None:
        """Set ``requires_grad`` of every parameter and the BatchNorm modes for ``epoch``.

        ``requires_grad`` does not change during a run (DDP registers a fixed set of parameters
        with gradients); a waiting stage is held still by ``lr_gate`` and ``on_before_optimizer_step``.
        """
        optimized = set(self.optimized_stage_names())
        for stage in STAGE_NAMES:
            for parameter in stage_parameters(model, stage):
                parameter.requires_grad_(stage in optimized)
        for parameter in stage_parameters(model, "head"):
            parameter.requires_grad_(True)
        if self.train_bn:
            for parameter in self._frozen_bn_parameters(model):
                parameter.requires_grad_(True)
        self.set_batchnorm_modes(model, epoch)

    def set_batchnorm_modes(self, model: nn.Module, epoch: int = 0) -> None:
        """BatchNorm per stage for ``epoch`` (call after ``model.train()``; eval mode is left alone).

        Stages that train: train mode (``unfrozen_bn="train"``) or eval (``"eval"``). Stages that
        do not train (frozen or waiting): eval mode, or train mode with ``train_bn=True``.
        """
        if not model.training:
            return
        training = set(self.trainable_stage_names(epoch))
        for stage in STAGE_NAMES:
            bn_trains = self.unfrozen_bn == "train" if stage in training else self.train_bn
            for layer in _batchnorm_layers(model, stage):
                layer.train(bn_trains)

    def update_learning_rates(self, optimizer: Optimizer, epoch: int) -> None:
        """Set every group's rate to the head's rate x ``lr_scale`` x ``lr_gate(stage, epoch)``.

        The head's rate is whatever the scheduler (or the LR finder) made it; deriving the other
        groups from it keeps their ratios at every step, whatever the scheduler does to them.
        """
        head = next((g for g in optimizer.param_groups if g.get("name") == "head"), None)
        if head is None:
            return
        for group in optimizer.param_groups:
            if "lr_scale" not in group or group is head:
                continue
            gate = self.lr_gate(group["name"], epoch) if group["name"] in STAGE_NAMES else 1.0
            group["lr"] = head["lr"] * group["lr_scale"] * gate

    def on_before_optimizer_step(self, model: nn.Module, epoch: int) -> None:
        """Drop the gradients of waiting stages so the optimizer leaves them untouched.

        Their learning rate is 0 already; without a gradient the optimizer also skips their
        momentum / Adam moments and weight decay, so a stage starts with fresh optimizer state
        when it unfreezes. Gradient clipping (after this hook) ignores them too.
        """
        for stage in self.waiting_stage_names(epoch):
            for parameter in stage_parameters(model, stage):
                parameter.grad = None

    def _frozen_bn_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """BatchNorm affine parameters of the stages never in the optimizer (for ``train_bn``)."""
        return [
            parameter
            for stage in STAGE_NAMES[: self.frozen_stages]
            for layer in _batchnorm_layers(model, stage)
            for parameter in layer.parameters(recurse=False)
        ]

    def describe(self) -> str:
        trainable = ", ".join(self.trainable_stage_names(0)) or "none"
        extras = " (+ BatchNorm of frozen stages)" if self.train_bn else ""
        return (
            f"{type(self).__name__}: {self.frozen_stages} of {NUM_STAGES} stages frozen; "
            f"trainable stages: {trainable} + head{extras}{self._describe_rates()}"
        )

    def _describe_rates(self) -> str:
        notes = []
        if self.lr_decay is not None and self.optimized_stage_names():
            scales = ", ".join(
                f"{stage} x{self.lr_decay**depth:.3g}"
                for depth, stage in enumerate(reversed(self.optimized_stage_names()), start=1)
            )
            notes.append(f"lr_decay {self.lr_decay:g}: {scales} of the head's rate")
        if self.unfrozen_bn == "eval":
            notes.append("BatchNorm of training stages in eval mode")
        return "; " + "; ".join(notes) if notes else ""


def _batchnorm_layers(model: nn.Module, stage: str) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        layer
        for module in stage_modules(model, stage)
        for layer in module.modules()
        if isinstance(layer, nn.modules.batchnorm._BatchNorm)
    ]
