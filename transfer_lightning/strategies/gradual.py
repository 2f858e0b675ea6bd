"""Gradual unfreezing: the head alone first, then one more stage from the top at each milestone."""

from __future__ import annotations

from typing import Any

from transfer_lightning.strategies.base import RESNET_STAGE_NAMES, FreezingStrategy
from transfer_lightning.utils.errors import UserError


class GradualUnfreeze(FreezingStrategy):
    """Train the head alone for ``head_epochs``, then unfreeze one stage from the top every
    ``unfreeze_every`` epochs (0 = all at once), down to ``min_frozen_stages``.

    ``milestones`` (a non-decreasing list of epochs, one per stage from the top down) replaces
    ``head_epochs``/``unfreeze_every``: ``[1, 3]`` on a ResNet trains layer4 from epoch 1 and
    layer3 from epoch 3, so it needs ``min_frozen_stages=3``; its length must be
    ``N - min_frozen_stages`` (N = the backbone's stage count).

    Every stage that will train is in the optimizer from the start with learning rate 0 until
    its epoch (DDP-safe, scheduler-safe; see ``FreezingStrategy``). A newly unfrozen stage gets
    ``lr_decay ** depth`` of the head's rate, ramped in linearly over ``unfreeze_warmup_epochs``.
    The schedule (stage -> first epoch) is saved in checkpoints; resuming with other ``strategy.*``
    settings is refused (docs/reliability.md), so a resumed run follows the same schedule.

    Example::

        GradualUnfreeze(head_epochs=1, unfreeze_every=2, lr_decay=0.5)
        # epoch 0: head; 1-2: + layer4 (lr/2); 3-4: + layer3 (lr/4); ... 9+: everything
    """

    def __init__(
        self,
        head_epochs: int = 1,
        unfreeze_every: int = 1,
        milestones: list[int] | None = None,
        min_frozen_stages: int = 0,
        unfreeze_warmup_epochs: int = 0,
        lr_decay: float | None = None,
        train_bn: bool = False,
        unfrozen_bn: str = "train",
        lr_decay_unit: str = "stage",
        stage_names: tuple[str, ...] | list[str] = RESNET_STAGE_NAMES,
    ) -> None:
        count = len(stage_names)
        if not _is_int(min_frozen_stages) or not 0 <= min_frozen_stages < count:
            raise UserError(
                f"strategy.min_frozen_stages={min_frozen_stages!r} is out of range for this backbone's {count} "
                f"stages; allowed: 0..{count - 1}"
            )
        super().__init__(
            frozen_stages=min_frozen_stages,
            train_bn=train_bn,
            lr_decay=lr_decay,
            unfrozen_bn=unfrozen_bn,
            lr_decay_unit=lr_decay_unit,
            stage_names=stage_names,
        )
        self.unfreeze_warmup_epochs = unfreeze_warmup_epochs
        stages = list(reversed(self.optimized_stage_names()))  # the top stage first
        epochs = _unfreeze_epochs(head_epochs, unfreeze_every, milestones, stages)
        self.unfreeze_epochs: dict[str, int] = dict(zip(stages, epochs, strict=True))

    def frozen_stages_at(self, epoch: int) -> int:
        return self.num_stages - sum(1 for start in self.unfreeze_epochs.values() if start <= epoch)

    def lr_gate(self, stage: str, epoch: int) -> float:
        start = self.unfreeze_epochs.get(stage)
        if start is None or epoch < start:
            return 0.0
        return min(1.0, (epoch - start + 1) / (self.unfreeze_warmup_epochs + 1))

    def state_dict(self) -> dict[str, Any]:
        return {"unfreeze_epochs": dict(self.unfreeze_epochs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("unfreeze_epochs")
        if saved is None:
            return
        if saved != self.unfreeze_epochs:  # resume.check_checkpoint_fits refuses this earlier, by config
            raise UserError(
                f"the checkpoint's unfreezing schedule {saved} differs from this run's {self.unfreeze_epochs}: a "
                "resumed run keeps its strategy, so resume with the run's own strategy.* settings or start a new run"
            )

    def describe(self) -> str:
        steps = ", ".join(f"{stage} from epoch {start}" for stage, start in self.unfreeze_epochs.items())
        frozen = f"; never trained: {', '.join(self.stage_names[: self.frozen_stages])}" if self.frozen_stages else ""
        warmup = f" (warm-up {self.unfreeze_warmup_epochs} epochs)" if self.unfreeze_warmup_epochs else ""
        return f"{type(self).__name__}: head from epoch 0, {steps}{warmup}{frozen}{self._describe_rates()}"


def _unfreeze_epochs(
    head_epochs: int, unfreeze_every: int, milestones: list[int] | None, stages: list[str]
) -> list[int]:
    """The first training epoch of each of ``stages`` (top first)."""
    count = len(stages)
    if milestones is not None:  # the schema checked the values; their number depends on the backbone
        milestones = list(milestones)
        if len(milestones) != count:
            raise UserError(
                f"strategy.milestones={milestones!r} is not allowed; give {count} non-decreasing epochs >= 0 "
                f"(one per stage from the top down: {', '.join(stages)})"
            )
        return milestones
    return [head_epochs + index * unfreeze_every for index in range(count)]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
