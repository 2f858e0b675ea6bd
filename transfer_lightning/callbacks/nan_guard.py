"""Stop at the first non-finite loss (on every DDP process), before it reaches the weights, and never
checkpoint NaN weights."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from transfer_lightning.utils.errors import UserError


class TrainingDiverged(UserError):
    """The loss (or the weights) became NaN or infinite; the run stops and keeps its last good checkpoint."""


class NonFiniteLossGuard(Callback):
    """Raises ``TrainingDiverged`` when the training loss is NaN/inf, before ``backward`` and the step.

    Checking before backward means the optimizer never applies that step, so the weights in memory
    and on disk stay the last finite ones. As a second line, a checkpoint whose weights are not
    finite (a finite loss with an infinite gradient) is refused instead of overwriting ``last.ckpt``:
    the weights an optimizer changes and the buffers are checked, not the frozen stages.
    """

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        finite = bool(torch.isfinite(loss.detach()).all())
        # every DDP process takes the same decision (Lightning's all-reduce), so all stop together
        # instead of the others waiting for the diverged one at the next collective
        if not trainer.strategy.reduce_boolean_decision(not finite, all=False):
            return
        where = (
            f"at epoch {trainer.current_epoch} (0-based), batch {trainer.fit_loop.epoch_loop.batch_idx}, "
            f"global step {trainer.global_step}"
        )
        became = f"became {loss.item()}" if not finite else "became non-finite in another process of this run"
        raise TrainingDiverged(
            f"the training loss {became} {where}; the learning rate is probably too high "
            f"({_learning_rates(trainer)}): lower optimizer.lr (e.g. 10x) and start again{_kept(trainer)}"
        )

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # the network's weights and buffers only: metric states (e.g. MaxMetric's -inf start) may be infinite
        changing = _changing_tensor_names(trainer, pl_module)
        broken = [
            name
            for name, value in checkpoint["state_dict"].items()
            if name.startswith("net.") and (changing is None or name in changing) and _non_finite(value)
        ]
        if broken:
            raise TrainingDiverged(
                f"the weights became NaN or infinite at epoch {trainer.current_epoch} (0-based), global step "
                f"{trainer.global_step} (first: {broken[0]}), so no checkpoint was written; the learning rate "
                f"is probably too high ({_learning_rates(trainer)}): lower optimizer.lr{_kept(trainer)}"
            )


def _changing_tensor_names(trainer: L.Trainer, pl_module: L.LightningModule) -> set[str] | None:
    """The state-dict names of what training can change: the parameters an optimizer holds and every buffer
    (BatchNorm statistics). A parameter no optimizer holds (a frozen stage) is the one that was loaded, and
    reading a whole frozen backbone at every save cost more than the rest of an epoch on cached features.
    ``None`` (check everything) when there is no optimizer."""
    optimized = {id(p) for optimizer in trainer.optimizers for group in optimizer.param_groups for p in group["params"]}
    if not optimized:
        return None
    parameters = {name for name, p in pl_module.named_parameters(remove_duplicate=False) if id(p) in optimized}
    return parameters | {name for name, _ in pl_module.named_buffers(remove_duplicate=False)}


def _non_finite(value: Any) -> bool:
    return torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all()


def _learning_rates(trainer: L.Trainer) -> str:
    if not trainer.optimizers:
        return "no optimizer yet"
    rates = sorted({group["lr"] for group in trainer.optimizers[0].param_groups})
    return "lr " + ", ".join(f"{rate:g}" for rate in rates)


def _kept(trainer: L.Trainer) -> str:
    checkpoint = trainer.checkpoint_callback
    last = getattr(checkpoint, "last_model_path", "") if checkpoint else ""
    return f"; the last good checkpoint is kept: {last}" if last else "; no checkpoint had been written yet"
