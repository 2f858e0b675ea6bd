"""Checkpoints of this framework: written atomically (``AtomicCheckpointIO``), loaded safely, and the
trained model rebuilt from one alone.

``torch.load(weights_only=True)`` refuses pickled code, and the record a checkpoint carries
(``model_record.py``: the model, classes, preprocessing contract, data) is data: it is checked
against the schemas and its classes against the allowlist (``config/trust.py``) before anything
is imported or built, so a file someone else wrote cannot run code or write a file.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from transfer_lightning.data.contract import preprocessor_for
from transfer_lightning.run.model_record import ModelRecord, checked_record, raw_record
from transfer_lightning.utils.errors import UserError, first_line
from transfer_lightning.utils.files import (
    atomic_torch_save,
    file_stamp,
    finish_disk_writes,
    is_local,
    unreadable_file_reason,
)

if TYPE_CHECKING:
    from transfer_lightning.classifier import TransferClassifier

log = logging.getLogger(__name__)

__all__ = [
    "AtomicCheckpointIO",
    "checkpoint_origin",
    "load_checkpoint_safely",
    "load_classifier",
    "preprocessor_for",
    "read_checkpoint",
    "read_checkpoint_and_record",
]

RUN_CHECKPOINT = Path("checkpoints") / "best.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with an atomic local save and a loader that never unpickles code.

    A save does not wait for its fsync (``utils/files.py`` ``atomic_write``: it runs on a background thread,
    one per epoch was ~20 ms of every epoch's time); ``teardown``, at the end of every fit and test, waits
    for all of them.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if not is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, Path(path), wait_for_disk=False)

    def teardown(self) -> None:
        super().teardown()
        finish_disk_writes()

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint_safely(path, map_location=map_location or "cpu")


def load_checkpoint_safely(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict:
    """Load a checkpoint with ``weights_only=True``; a file that needs arbitrary unpickling is refused.
    ``mmap``: tensors are mapped, not read (a quick look at the record of a large file)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; give the path to a .ckpt file of a run")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:  # noqa: BLE001 - every way a file can fail to load gets its reason
        raise UserError(f"checkpoint {path} cannot be loaded: {unreadable_file_reason(error)}") from error


def checkpoint_origin(path: str | Path) -> str:
    """``best.ckpt (epoch 2, val/acc 0.4583)``: where a checkpoint's weights come from, as it recorded.

    The epoch is the one it was saved at; the score is the checkpoint callback's monitored value at
    that save (absent from a checkpoint no monitoring callback wrote). Tensors are memory-mapped,
    not read; a file is read once while it is unchanged (the test's two figures both name it).
    """
    return _origin(str(Path(path).absolute()), file_stamp(path))


@functools.lru_cache(maxsize=32)
def _origin(path: str, stamp: tuple[int, ...]) -> str:
    """``checkpoint_origin`` of the file ``path`` as it was when it had ``stamp`` (``file_stamp``)."""
    checkpoint = load_checkpoint_safely(path, mmap=True)
    epoch = checkpoint.get("epoch") if isinstance(checkpoint, dict) else None
    parts = [f"epoch {epoch}"] if isinstance(epoch, int) else []
    callbacks = checkpoint.get("callbacks") if isinstance(checkpoint, dict) else None
    for state in (callbacks if isinstance(callbacks, dict) else {}).values():
        score = state.get("current_score") if isinstance(state, dict) else None
        if isinstance(state, dict) and isinstance(state.get("monitor"), str) and _is_number(score):
            parts.append(f"{state['monitor'][:40]} {float(score):.4g}")
            break
    return f"{Path(path).name} ({', '.join(parts)})" if parts else Path(path).name


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) or (
        torch.is_tensor(value) and value.numel() == 1
    )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at ``path`` (a ``.ckpt`` file, or a run folder: its ``checkpoints/best.ckpt``),
    with its record checked (``model_record.read_model_record``); any other file is a ``UserError``."""
    return read_checkpoint_and_record(path)[0]


def read_checkpoint_and_record(path: str | Path) -> tuple[dict[str, Any], ModelRecord]:
    """The checkpoint dict at ``path`` and its checked record (see ``read_checkpoint``)."""
    path = checkpoint_file(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - truncated, foreign or pickled objects: each says why
        raise UserError(f"{path} cannot be loaded as a checkpoint: {unreadable_file_reason(error)}") from error
    if isinstance(checkpoint, dict) and checkpoint and all(torch.is_tensor(v) for v in checkpoint.values()):
        raise UserError(
            f"{path} is a plain state dict, not a transfer_lightning checkpoint; it holds no class names or "
            "preprocessing. Train with it as model.weights=<file> and use the .ckpt that run writes"
        )
    raw, keys = raw_record(checkpoint, path)
    state_dict = checkpoint.get("state_dict")
    if not isinstance(state_dict, dict):
        raise UserError(
            f"{path} is not a transfer_lightning checkpoint (it has no state_dict); it may come from another "
            "framework. Pass a .ckpt written by python -m transfer_lightning"
        )
    if not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state_dict.items()):
        raise UserError(f"{path} is damaged: its state_dict holds values that are not tensors")
    return checkpoint, checked_record(raw, keys, str(path))


def checkpoint_file(path: str | Path, setting: str = "ckpt_path") -> Path:
    """``path`` itself, or the best checkpoint of the run folder ``path`` (said once in the log); ``setting``
    names the key it came from in a refusal (``ckpt_path``, ``model.weights``)."""
    path = Path(path).expanduser()
    if path.is_dir():
        best = path / RUN_CHECKPOINT
        if not best.is_file():
            raise UserError(
                f"{setting}={path} is a folder without {RUN_CHECKPOINT}; give the folder of a run of "
                "python -m transfer_lightning or one of its .ckpt files"
            )
        log.info("Checkpoint: %s (the run folder's best)", best)
        return best
    if not path.is_file():
        raise UserError(
            f"checkpoint {path} does not exist; pass {setting}=<run folder> or <run folder>/checkpoints/best.ckpt"
        )
    return path


def load_classifier(path: str | Path) -> TransferClassifier:
    """The trained ``TransferClassifier`` of a checkpoint (or run folder), on the CPU, in eval mode.

    Rebuilt from the checkpoint's record alone, without its starting weights (the state dict replaces
    them, so nothing is downloaded); its classes only through the allowlist (``config/trust.py``).
    """
    from transfer_lightning.run.builders import build_classifier

    checkpoint, record = read_checkpoint_and_record(path)
    module = build_classifier(record, pretrained=False)
    try:
        module.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as error:
        raise UserError(
            f"the weights in {path} do not fit the {record.model_name} model it describes "
            f"({first_line(error, 200)}); the checkpoint is damaged or was edited"
        ) from error
    module.restore_record(record, checkpoint.get("epoch", 0) if isinstance(checkpoint.get("epoch"), int) else 0)
    return module.eval()
