"""Every file the project writes (checkpoints, summaries, reports, caches) is written atomically, and a
file ``torch.load`` refused gets its reason in words.

Lightning's own local save (``_atomic_save``) goes through an fsspec transaction that writes to a
file in the *system* temp folder and then ``shutil.move``s it: when that folder is on another
file system (a tmpfs ``/tmp``, a cluster's scratch disk) the move is a copy into the destination,
so a kill during it leaves a truncated ``last.ckpt``; nothing is fsync'ed either. Here the bytes go
to a temporary file next to the target, are flushed to disk, and ``os.replace`` swaps them in: a
reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import secrets
import socket
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

TEMP_MARKER = ".partial-"
_HOST = socket.gethostname().replace("-", "_")  # no "-": the pid after it is found by splitting at "-"


def atomic_write(path: Path, write: Callable[[BinaryIO], Any], wait_for_disk: bool = True) -> Path:
    """Write ``path`` through ``write(handle)`` so that a crash at any moment leaves the previous file
    intact and concurrent writers never meet: a temporary file of a unique name in the same folder,
    fsync, ``os.replace``. The one helper for every file that another process may read or write too
    (checkpoints, caches, summaries); the last writer's complete file wins.

    ``wait_for_disk=False`` (the checkpoints written while training): the file is in place at once, and its
    fsync runs on a background thread instead of holding up training; a killed process still leaves the
    whole file (the kernel has its bytes), only a power cut within those milliseconds could lose it.
    ``finish_disk_writes`` waits for them (the checkpoint IO's teardown, and the process's exit).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(path)
    temporary = _temporary_name(path)
    try:
        # created exclusively (never another writer's file), readable by all like any data file
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            if wait_for_disk:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if wait_for_disk:
        _fsync_folder(path.parent)
    else:
        _sync_in_background(path)
    return path


def finish_disk_writes() -> None:
    """Wait until every file written with ``wait_for_disk=False`` is on disk (its fsync and its folder's)."""
    while _pending_syncs:
        _pending_syncs.pop(0).result()


_pending_syncs: list[Future] = []


def _sync_in_background(path: Path) -> None:
    _pending_syncs.append(_sync_thread().submit(_fsync_file, path))


@functools.cache
def _sync_thread() -> ThreadPoolExecutor:
    """The one thread that syncs, made on first use; the process's exit waits for what it has left."""
    atexit.register(finish_disk_writes)
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="transfer-lightning-fsync")


def _fsync_file(path: Path) -> None:
    """fsync ``path`` as it is now (a newer file of that name, written since, is synced too) and its folder."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # removed since (an older top-k checkpoint): nothing of it to keep
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    _fsync_folder(path.parent)


def file_stamp(path: Path) -> tuple[int, ...]:
    """What changes when a file does: its size, its times (ctime too, which no copy can set back) and its inode
    (an atomic write is a new one). ``(-1,)`` for a file that cannot be found. The key of a result kept while
    the file it was read from is unchanged."""
    try:
        found = Path(path).stat()
    except OSError:
        return (-1,)
    return (found.st_size, found.st_mtime_ns, found.st_ctime_ns, found.st_ino)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """``path`` holds ``data``, written atomically (see ``atomic_write``)."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> Path:
    """``path`` holds ``text`` (UTF-8), written atomically (see ``atomic_write``)."""
    return atomic_write_bytes(path, text.encode())  # str.encode's default: UTF-8


def atomic_save_figure(figure: Any, path: Path, **options: Any) -> Path:
    """A matplotlib ``figure``, or a ``Picture`` of ``analysis/figures.py``, saved as a PNG to ``path`` atomically
    (see ``atomic_write``): a report or plot is there whole or not at all. ``options`` go to matplotlib's
    ``figure.savefig`` (``dpi``, ``bbox_inches``)."""
    if hasattr(figure, "savefig"):
        return atomic_write(path, lambda handle: figure.savefig(handle, format="png", **options))
    return atomic_write(path, lambda handle: figure.image.save(handle, format="png"))


def atomic_torch_save(obj: Any, path: Path, wait_for_disk: bool = True) -> Path:
    """``torch.save`` to ``path`` atomically (see ``atomic_write``, also for ``wait_for_disk``)."""
    import torch  # here, not at the top: the command line's first-second checks import this module

    return atomic_write(path, lambda handle: torch.save(obj, handle), wait_for_disk)


def atomic_hard_link(source: Path, path: Path) -> bool:
    """Make ``path`` a second name of the file ``source`` (no bytes copied), atomically like
    ``atomic_torch_save``. Returns False where the file system has no hard links; nothing changed then.

    Safe with the atomic saves above: a later save of either name replaces that name only.
    """
    _remove_stale_partials(path)
    temporary = _temporary_name(path)
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
    from lightning.fabric.utilities.cloud_io import get_filesystem

    return type(get_filesystem(str(path))).__name__ == "LocalFileSystem"


def _temporary_name(path: Path) -> Path:
    """``.partial-<host>-<pid>-<random>-<name>``: unique across threads, processes and machines."""
    return path.with_name(f"{TEMP_MARKER}{_HOST}-{os.getpid()}-{secrets.token_hex(4)}-{path.name}")


def _remove_stale_partials(path: Path) -> None:
    """Temporary files of a process of this machine that died mid-write are garbage: remove them.

    Only those of dead processes: another process may be writing its own temporary file right now.
    """
    prefix = f"{TEMP_MARKER}{_HOST}-"
    for stale in path.parent.glob(f"{prefix}*-{path.name}"):
        pid = stale.name[len(prefix) :].partition("-")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            stale.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
