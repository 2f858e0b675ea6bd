"""Checkpoints of this framework: written atomically (``AtomicCheckpointIO``), loaded safely, and the
trained model rebuilt from one alone.

``torch.load(weights_only=True)`` refuses pickled code, and the only config that gets
instantiated on rebuild (the freezing strategy) must name a class of this package, so a file a
user downloaded cannot run code. The checkpoint carries everything needed: the model config,
class names and preprocessing contract live in ``hyper_parameters`` as plain containers.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from transfer_lightning.classifier import TransferClassifier
from transfer_lightning.data.contract import preprocessor_for
from transfer_lightning.utils.errors import UserError, first_line
from transfer_lightning.utils.files import atomic_torch_save, is_local, unreadable_file_reason

log = logging.getLogger(__name__)

__all__ = [
    "AtomicCheckpointIO",
    "checkpoint_origin",
    "load_checkpoint_safely",
    "load_classifier",
    "preprocessor_for",
    "read_checkpoint",
]

REQUIRED_HPARAMS = ("model", "strategy", "class_names", "preprocessing")
_SAFE_TARGET_PREFIX = "transfer_lightning."


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with an atomic local save and a loader that never unpickles code."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if not is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, Path(path))

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint_safely(path, map_location=map_location or "cpu")


def load_checkpoint_safely(path: str | Path, map_location: Any = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; a file that needs arbitrary unpickling is refused."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; give the path to a .ckpt file of a run")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - every way a file can fail to load gets its reason
        raise UserError(f"checkpoint {path} cannot be loaded: {unreadable_file_reason(error)}") from error


def checkpoint_origin(path: str | Path) -> str:
    """``best.ckpt (epoch 2, val/acc 0.4583)``: where a checkpoint's weights come from, as it recorded.

    The epoch is the one it was saved at; the score is the checkpoint callback's monitored value at
    that save (absent from a checkpoint no monitoring callback wrote). Tensors are memory-mapped,
    not read.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    parts = [f"epoch {checkpoint['epoch']}"] if "epoch" in checkpoint else []
    for state in (checkpoint.get("callbacks") or {}).values():
        if isinstance(state, dict) and state.get("monitor") and state.get("current_score") is not None:
            parts.append(f"{state['monitor']} {float(state['current_score']):.4g}")
            break
    return f"{Path(path).name} ({', '.join(parts)})" if parts else Path(path).name


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at ``path``, checked to be one of ours; any other file is a ``UserError``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass ckpt_path=<run folder>/checkpoints/best.ckpt")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - truncated, foreign or pickled objects: each says why
        raise UserError(f"{path} cannot be loaded as a checkpoint: {unreadable_file_reason(error)}") from error
    _check_is_ours(path, checkpoint)
    return checkpoint


def load_classifier(path: str | Path) -> TransferClassifier:
    """The trained ``TransferClassifier`` of a checkpoint, on the CPU, in eval mode.

    Rebuilt from the checkpoint's hyperparameters with ``load_pretrained=False`` (the state dict
    replaces any pretrained weights, so nothing is downloaded).
    """
    checkpoint = read_checkpoint(path)
    accepted = inspect.signature(TransferClassifier.__init__).parameters
    hparams = {key: value for key, value in checkpoint["hyper_parameters"].items() if key in accepted}
    hparams.setdefault("optimizer", {})
    hparams.setdefault("scheduler", None)
    module = TransferClassifier(**{**hparams, "load_pretrained": False})
    try:
        module.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as error:
        raise UserError(
            f"the weights in {path} do not fit the {hparams['model'].get('name')} model it describes "
            f"({first_line(error, 200)}); the checkpoint is damaged or was edited"
        ) from error
    module.on_load_checkpoint(checkpoint)
    return module.eval()


def _check_is_ours(path: Path, checkpoint: Any) -> None:
    if isinstance(checkpoint, dict) and checkpoint and all(torch.is_tensor(v) for v in checkpoint.values()):
        raise UserError(
            f"{path} is a plain state dict, not a transfer_lightning checkpoint; it holds no class names or "
            "preprocessing. Train with it as model.weights=<file> and use the .ckpt that run writes"
        )
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    state_dict = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    missing = [key for key in REQUIRED_HPARAMS if not isinstance(hparams, dict) or key not in hparams]
    if not isinstance(state_dict, dict) or missing:
        what = f"hyper_parameters lack {', '.join(missing)}" if missing else "it has no state_dict"
        raise UserError(
            f"{path} is not a transfer_lightning checkpoint ({what}); it may come from another framework. "
            "Pass a .ckpt written by python -m transfer_lightning"
        )
    for target in _targets(hparams.get("strategy")):
        if not str(target).startswith(_SAFE_TARGET_PREFIX):
            raise UserError(
                f"{path} names strategy class {target!r}, which is not part of transfer_lightning; "
                "refusing to instantiate it (only checkpoints written by this framework are loaded)"
            )


def _targets(node: Any) -> list[Any]:
    """Every ``_target_`` in a nested config (a strategy may hold sub-configs)."""
    if isinstance(node, dict):
        found = [node["_target_"]] if "_target_" in node else []
        return found + [t for value in node.values() for t in _targets(value)]
    if isinstance(node, (list, tuple)):
        return [t for value in node for t in _targets(value)]
    return []
