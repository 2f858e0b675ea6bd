"""The interface every freezing strategy implements, with the helpers they share.

Strategies see a network only through the ``Backbone`` interface (``transfer_lightning.models``):
its ordered stage names, the parameters and norm layers of each stage, and its head.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.optim import Optimizer

from transfer_lightning.config.schemas import ALL_BUT_LAST, ALL_STAGES
from transfer_lightning.models import Backbone
from transfer_lightning.utils.errors import UserError

BN_MODES = ("train", "eval")
RESNET_STAGE_NAMES = ("stem", "layer1", "layer2", "layer3", "layer4")


class FreezingStrategy:
    """Decides which of a backbone's stages are frozen and how the optimizer sees the rest.

    ``stage_names`` are the backbone's stages from the input (the classifier passes them;
    ResNet's five when not given). ``frozen_stages`` is 0..N, or ``all`` (only the head
    trains) / ``all_but_last`` (the last stage and the head train), the same on every backbone.

    Frozen means frozen: ``requires_grad=False``, not handed to the optimizer, and the whole stage
    kept in eval mode, so BatchNorm statistics do not move and dropout / stochastic depth do not
    apply (``train_bn=True`` opts into training the BatchNorm layers of frozen stages: affine
    parameters and running stats).
    ``unfrozen_bn="eval"`` keeps the BatchNorm layers of *training* stages in eval mode too
    (pretrained statistics, affine parameters still train): the choice for small batches.

    Learning rates: the head gets ``lr``; with ``lr_decay`` each stage below it gets
    ``lr_decay`` times the stage above (layer4 ``lr * d``, layer3 ``lr * d**2`` ... stem
    ``lr * d**5``); ``lr_decay_unit="block"`` decays per block instead (layer-wise decay, the
    ViT recipe: every transformer block ``d`` times the one above). Every group carries its ratio to the head as ``lr_scale``, and
    ``update_learning_rates`` re-derives each group's rate from the head's, so the ratios hold
    under any schedule that sets the head's rate.

    Schedules (``GradualUnfreeze``) override ``frozen_stages_at(epoch)``: the stages between
    ``frozen_stages`` and ``frozen_stages_at(epoch)`` are *waiting* — in the optimizer from the
    start (so DDP and schedulers see a fixed set of parameters), with learning rate 0, in eval
    mode and their gradients dropped before every optimizer step. ``lr_gate`` may ramp
    a stage's rate in after it starts training. Stateful strategies implement
    ``state_dict``/``load_state_dict`` so resume restores them.

    Example::

        backbone = build_backbone({"name": "resnet18", "weights": None}, num_classes=10)
        strategy = FreezeStages(frozen_stages=4, lr_decay=0.5, stage_names=backbone.stage_names)
        strategy.apply(backbone)   # layer4 (lr/2) + head train
        optimizer = torch.optim.SGD(strategy.param_groups(backbone, lr=1e-3), momentum=0.9)
    """

    def __init__(
        self,
        frozen_stages: int | str = 0,
        train_bn: bool = False,
        lr_decay: float | None = None,
        unfrozen_bn: str = "train",
        lr_decay_unit: str = "stage",
        stage_names: tuple[str, ...] | list[str] = RESNET_STAGE_NAMES,
    ) -> None:
        self.stage_names = tuple(stage_names)
        self.num_stages = len(self.stage_names)
        frozen_stages = {ALL_STAGES: self.num_stages, ALL_BUT_LAST: self.num_stages - 1}.get(
            frozen_stages, frozen_stages
        )
        if not _is_int(frozen_stages) or not 0 <= frozen_stages <= self.num_stages:
            raise UserError(
                f"strategy.frozen_stages={frozen_stages!r} is out of range for this backbone's {self.num_stages} "
                f"stages ({', '.join(self.stage_names)}); allowed: 0..{self.num_stages}, all or all_but_last "
                f"(0 = train everything, {self.num_stages} = all = only the head trains)"
            )
        # each setting's own range is its schema's (config/schemas.py); here only what spans the backbone
        self.lr_decay_unit = lr_decay_unit
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

    def param_groups(self, backbone: Backbone, lr: float) -> list[dict[str, Any]]:
        """Named optimizer parameter groups, head first, with their rate for epoch 0.

        Every stage that trains in *some* epoch has a group from the start (with
        ``lr_decay_unit="block"`` one group per block, named ``<stage>.<block>``); ``lr_scale`` is
        its ratio to the head's rate (``lr_decay ** depth``, depth 1 = the top stage or block).
        """
        groups = [{"name": "head", "params": backbone.stage_parameters("head"), "lr": lr, "lr_scale": 1.0}]
        depth = 0
        for stage in reversed(self.optimized_stage_names()):
            units = backbone.block_parameters(stage) if self.lr_decay_unit == "block" else []
            named = [(f"{stage}.{i}", params) for i, params in enumerate(units)] if len(units) > 1 else []
            for name, params in reversed(named or [(stage, backbone.stage_parameters(stage))]):
                depth += 1
                scale = self.lr_decay**depth if self.lr_decay is not None else 1.0
                rate = lr * scale * self.lr_gate(stage, 0)
                groups.append({"name": name, "stage": stage, "params": params, "lr": rate, "lr_scale": scale})
        frozen_bn = self._frozen_bn_parameters(backbone) if self.train_bn else []
        if frozen_bn:
            groups.append({"name": "frozen_bn", "params": frozen_bn, "lr": lr, "lr_scale": 1.0})
        return groups

    def on_train_epoch_start(self, backbone: Backbone, epoch: int, optimizer: Any = None) -> None:
        """Called at the start of every training epoch; schedules may change the model here."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (nothing for a fixed strategy)."""

    # -- shared behaviour -------------------------------------------------------------------
    def frozen_stage_names(self, epoch: int = 0) -> tuple[str, ...]:
        return self.stage_names[: self.frozen_stages_at(epoch)]

    def trainable_stage_names(self, epoch: int = 0) -> tuple[str, ...]:
        return self.stage_names[self.frozen_stages_at(epoch) :]

    def optimized_stage_names(self) -> tuple[str, ...]:
        """Stages in the optimizer (``requires_grad=True``) for the whole run, trained now or later."""
        return self.stage_names[self.frozen_stages :]

    def stages_never_trained(self, epochs: int | None) -> tuple[str, ...]:
        """Stages in the optimizer whose schedule starts only after a run of ``epochs`` epochs (top first).

        ``None`` (no epoch limit): none. They hold still for the whole run, like frozen ones.
        """
        if epochs is None:
            return ()
        trained = {stage for epoch in range(epochs) for stage in self.trainable_stage_names(epoch)}
        return tuple(stage for stage in reversed(self.optimized_stage_names()) if stage not in trained)

    def schedule_warning(self, epochs: int | None) -> str | None:
        """One sentence when the schedule does not fit a run of ``epochs`` epochs, else None."""
        never = self.stages_never_trained(epochs)
        if not never:
            return None
        return (
            f"trainer.max_epochs={epochs} ends before the schedule reaches {', '.join(never)}: they never train in "
            "this run (raise trainer.max_epochs, or unfreeze earlier: strategy.milestones / head_epochs / "
            "unfreeze_every); the parameter counts are those that train"
        )

    def waiting_stage_names(self, epoch: int) -> tuple[str, ...]:
        """Stages in the optimizer that do not train yet in ``epoch``."""
        return tuple(s for s in self.optimized_stage_names() if s not in self.trainable_stage_names(epoch))

    def apply(self, backbone: Backbone, epoch: int = 0) -> None:
        """Set ``requires_grad`` of every parameter and the stages' train/eval modes for ``epoch``.

        ``requires_grad`` does not change during a run (DDP registers a fixed set of parameters
        with gradients); a waiting stage is held still by ``lr_gate`` and ``on_before_optimizer_step``.
        LayerNorm / GroupNorm have no running statistics: ``requires_grad`` alone freezes them.
        """
        if backbone.stage_names != self.stage_names:
            raise ValueError(f"strategy built for stages {self.stage_names}, backbone has {backbone.stage_names}")
        optimized = set(self.optimized_stage_names())
        for stage in self.stage_names:
            for parameter in backbone.stage_parameters(stage):
                parameter.requires_grad_(stage in optimized)
        for parameter in backbone.stage_parameters("head"):
            parameter.requires_grad_(True)
        if self.train_bn:
            for parameter in self._frozen_bn_parameters(backbone):
                parameter.requires_grad_(True)
        self.set_train_modes(backbone, epoch)

    def set_train_modes(self, backbone: Backbone, epoch: int = 0) -> None:
        """Train/eval mode per stage for ``epoch`` (call after ``model.train()``; eval mode is left alone).

        Stages that do not train (frozen or waiting) run in eval mode as a whole: dropout,
        stochastic depth and BatchNorm alike, so their output is a fixed function of the image,
        the same live as from the feature cache; ``train_bn=True`` puts only their BatchNorm layers
        back in train mode. Stages that train run in train mode, their BatchNorm layers as
        ``unfrozen_bn`` says (``"eval"``: pretrained statistics).
        """
        if not backbone.model.training:
            return
        training = set(self.trainable_stage_names(epoch))
        for stage in self.stage_names:
            trains = stage in training
            for module in backbone.stage_modules(stage):
                module.train(trains)
            bn_trains = self.unfrozen_bn == "train" if trains else self.train_bn
            for layer in _batchnorm_layers(backbone, stage):
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
            gate = self.lr_gate(group["stage"], epoch) if group.get("stage") in self.stage_names else 1.0
            group["lr"] = head["lr"] * group["lr_scale"] * gate

    def on_before_optimizer_step(self, backbone: Backbone, epoch: int) -> None:
        """Drop the gradients of waiting stages so the optimizer leaves them untouched.

        Their learning rate is 0 already; without a gradient the optimizer also skips their
        momentum / Adam moments and weight decay, so a stage starts with fresh optimizer state
        when it unfreezes. Gradient clipping (after this hook) ignores them too.
        """
        for stage in self.waiting_stage_names(epoch):
            for parameter in backbone.stage_parameters(stage):
                parameter.grad = None

    def _frozen_bn_parameters(self, backbone: Backbone) -> list[nn.Parameter]:
        """BatchNorm affine parameters of the stages never in the optimizer (for ``train_bn``)."""
        return [
            parameter
            for stage in self.stage_names[: self.frozen_stages]
            for layer in _batchnorm_layers(backbone, stage)
            for parameter in layer.parameters(recurse=False)
        ]

    def describe(self) -> str:
        stages = ", ".join(self.trainable_stage_names(0))
        trains = f"trainable stages: {stages} + head" if stages else "only the head trains"
        extras = " (+ BatchNorm of frozen stages)" if self.train_bn else ""
        return (
            f"{type(self).__name__}: {self.frozen_stages} of {self.num_stages} stages frozen; "
            f"{trains}{extras}{self._describe_rates()}"
        )

    def _describe_rates(self) -> str:
        notes = []
        if self.lr_decay is not None and self.optimized_stage_names() and self.lr_decay_unit == "block":
            notes.append(f"lr_decay {self.lr_decay:g} per block: each block x{self.lr_decay:g} of the one above")
        elif self.lr_decay is not None and self.optimized_stage_names():
            scales = ", ".join(
                f"{stage} x{self.lr_decay**depth:.3g}"
                for depth, stage in enumerate(reversed(self.optimized_stage_names()), start=1)
            )
            notes.append(f"lr_decay {self.lr_decay:g}: {scales} of the head's rate")
        if self.unfrozen_bn == "eval":
            notes.append("BatchNorm of training stages in eval mode")
        return "; " + "; ".join(notes) if notes else ""


def _batchnorm_layers(backbone: Backbone, stage: str) -> list[nn.modules.batchnorm._BatchNorm]:
    return [layer for layer in backbone.norm_layers(stage) if isinstance(layer, nn.modules.batchnorm._BatchNorm)]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
