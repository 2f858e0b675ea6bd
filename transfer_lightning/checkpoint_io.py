"""Checkpoints (and every file the project writes: summaries, reports, caches) are written atomically;
checkpoints are read with ``weights_only=True``.

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
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from transfer_lightning.errors import UserError, first_line

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


def atomic_write(path: Path, write: Callable[[BinaryIO], Any], shared: bool = False) -> Path:
    """Call ``write(handle)`` on a temporary file beside ``path``, fsync it, then swap it in: a crash at any
    moment leaves the previous ``path`` (or none), never half a file. The one atomic write of the project.

    ``shared``: other processes may write ``path`` at the same time (a feature cache used by a sweep's
    parallel jobs), so their temporary files are left alone instead of cleared as a dead process's.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not shared:
        _remove_stale_partials(path)
    temporary = path.with_name(f"{TEMP_MARKER}{os.getpid()}-{path.name}")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return path


def atomic_torch_save(obj: Any, path: Path, shared: bool = False) -> Path:
    """``torch.save`` to ``path`` atomically (see ``atomic_write``)."""
    return atomic_write(path, lambda handle: torch.save(obj, handle), shared=shared)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see ``atomic_write``)."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


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
    except pickle.UnpicklingError as error:
        raise UserError(
            f"checkpoint {path} holds objects that only arbitrary unpickling could rebuild ({first_line(error)}); it was "
            "refused, not executed (loading with weights_only=False could run code from the file). Use "
            "checkpoints written by this project, or re-save a trusted file as plain tensors and containers"
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise UserError(f"checkpoint {path} cannot be read ({error}); it is damaged or not a checkpoint") from error


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
