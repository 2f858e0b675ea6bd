"""Checkpoints are written atomically and read with ``weights_only=True``.

Lightning's own local save (``_atomic_save``) goes through an fsspec transaction that writes to a
file in the *system* temp folder and then ``shutil.move``s it: when that folder is on another
file system (a tmpfs ``/tmp``, a cluster's scratch disk) the move is a copy into the destination,
so a kill during it leaves a truncated ``last.ckpt``; nothing is fsync'ed either. Here the bytes go
to a temporary file next to the target, are flushed to disk, and ``os.replace`` swaps them in: a
reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from transfer_lightning.errors import UserError

log = logging.getLogger(__name__)

TEMP_MARKER = ".partial-"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with an atomic local save and a loader that never unpickles code."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if not is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, Path(path))

    def load_checkpoint(self, path: str | Path, map_location: Any = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint_safely(path, map_location=map_location or "cpu")


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` so that a crash at any moment leaves the previous file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(path)
    temporary = path.with_name(f"{TEMP_MARKER}{os.getpid()}-{path.name}")
    try:
        with open(temporary, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def atomic_hard_link(source: Path, path: Path) -> bool:
    """Make ``path`` a second name of the file ``source`` (no bytes copied), atomically like
    ``atomic_torch_save``. Returns False where the file system has no hard links; nothing changed then.

    Safe with the atomic saves above: a later save of either name replaces that name only.
    """
    _remove_stale_partials(path)
    temporary = path.with_name(f"{TEMP_MARKER}{os.getpid()}-{path.name}")
    try:
        os.link(source, temporary)
    except OSError:
        return False
    try:
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # left behind when ``path`` already was this file (POSIX rename)
    _fsync_folder(path.parent)
    return True


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


def unreadable_file_reason(error: BaseException) -> str:
    """What is wrong with a file ``torch.load(weights_only=True)`` refused, said about the file.

    torch's own message is mostly advice to load with ``weights_only=False`` (which could run code
    from the file); the user needs to know whether the file is cut off, foreign or holds objects.
    """
    text = str(error)
    refused_class = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", text)
    if refused_class:
        return (
            f"it holds a pickled {refused_class.group(1)} object, which only unpickling with code execution could "
            "rebuild (refused, not executed); use a file written by this project, or re-save a trusted one as plain "
            "tensors and containers"
        )
    if isinstance(error, EOFError) or "zip archive" in text or "central directory" in text:
        return "the file is truncated or damaged (an interrupted write or an incomplete copy); use an intact copy"
    return (
        "the file is not a PyTorch checkpoint (torch.load found no data it writes in it); check the path names a "
        ".ckpt / .pth file"
    )


def is_local(path: str | Path) -> bool:
    return type(get_filesystem(str(path))).__name__ == "LocalFileSystem"


def _remove_stale_partials(path: Path) -> None:
    """Temporary files of a process killed mid-write are garbage: remove them before they pile up."""
    for stale in path.parent.glob(f"{TEMP_MARKER}*-{path.name}"):
        stale.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    # the rename itself lives in the folder's entry table: sync it so it survives a power cut
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
