"""Atomic writes (utils/files.py): a crash mid-write leaves the previous file whole and no debris, and
a dead writer's leftovers are cleared while a live writer's are kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transfer_lightning.utils import files


def test_a_write_that_fails_leaves_the_previous_file_whole_and_no_partial_file(tmp_path: Path) -> None:
    target = files.atomic_write_text(tmp_path / "summary.json", "old")

    def fail_halfway(handle) -> None:
        handle.write(b"new and half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.atomic_write(target, fail_halfway)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_each_helper_writes_its_content_into_a_new_folder(tmp_path: Path) -> None:
    assert files.atomic_write_bytes(tmp_path / "a" / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert files.atomic_write_text(tmp_path / "c.txt", "héllo").read_bytes() == "héllo".encode()
    saved = files.atomic_torch_save({"w": torch.arange(3)}, tmp_path / "d.pt")
    assert torch.equal(torch.load(saved, weights_only=True)["w"], torch.arange(3))
    mask = os.umask(0)
    os.umask(mask)
    assert (saved.stat().st_mode & 0o777) == 0o644 & ~mask  # readable by all, like any data file


def test_a_dead_writers_partial_file_is_removed_and_a_live_writers_is_kept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = files._HOST
    stale = tmp_path / f"{files.TEMP_MARKER}{host}-{int(dead.stdout)}-0000-last.ckpt"
    live = tmp_path / f"{files.TEMP_MARKER}{host}-{os.getpid()}-0000-last.ckpt"
    other_host = tmp_path / f"{files.TEMP_MARKER}elsewhere-{int(dead.stdout)}-0000-last.ckpt"
    other_name = tmp_path / f"{files.TEMP_MARKER}{host}-{int(dead.stdout)}-0000-best.ckpt"
    for path in (stale, live, other_host, other_name):
        path.write_bytes(b"partial")
    files.atomic_write_text(tmp_path / "last.ckpt", "whole")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["last.ckpt", live.name, other_host.name, other_name.name])


def test_unreadable_files_are_described_by_what_is_wrong_with_them(tmp_path: Path) -> None:
    truncated = tmp_path / "cut.ckpt"
    torch.save({"w": torch.zeros(100)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    reasons = []
    for path in (truncated, text):
        with pytest.raises(Exception) as raised:
            torch.load(path, weights_only=True)
        reasons.append(files.unreadable_file_reason(raised.value))
    assert (
        reasons[0]
        == "the file is truncated or damaged (an interrupted write or an incomplete copy); use an intact copy"
    )
    assert reasons[1] == (
        "the file is not a PyTorch checkpoint (torch.load found no data it writes in it); check the path names a "
        ".ckpt / .pth file"
    )
    assert files.is_local(tmp_path / "x.ckpt") and not files.is_local("memory://bucket/x.ckpt")


def test_every_sign_of_a_cut_off_file_and_a_pickled_object_are_named(tmp_path: Path) -> None:
    damaged = "the file is truncated or damaged (an interrupted write or an incomplete copy); use an intact copy"
    for error in (
        EOFError("Ran out of input"),  # the legacy format, cut off
        RuntimeError("PytorchStreamReader failed reading zip archive"),
        RuntimeError("PytorchStreamReader failed finding central directory"),
    ):
        assert files.unreadable_file_reason(error) == damaged, error
    path = tmp_path / "objects.ckpt"
    torch.save({"epoch": Path("x")}, path)
    with pytest.raises(Exception) as raised:
        torch.load(path, weights_only=True)
    assert files.unreadable_file_reason(raised.value) == (
        "it holds a pickled pathlib.PosixPath object, which only unpickling with code execution could rebuild "
        "(refused, not executed); use a file written by this project, or re-save a trusted one as plain tensors "
        "and containers"
    )


def test_a_write_that_cannot_even_start_raises_its_own_error(tmp_path: Path, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(files.os, "open", refuse)  # no temporary file was created, so none is removed
    with pytest.raises(PermissionError, match="read-only file system"):
        files.atomic_write_text(tmp_path / "summary.json", "new")


def test_a_writer_that_cannot_be_signalled_counts_as_alive_and_checking_never_signals_it(
    tmp_path: Path, monkeypatch
) -> None:
    # hang-up at its default (terminate), whatever this process inherited (nohup ignores it)
    code = (
        "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_DFL); print('ready', flush=True); time.sleep(60)"
    )
    sleeper = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert sleeper.stdout.readline() == "ready\n"
        assert files._process_alive(sleeper.pid)
        with pytest.raises(subprocess.TimeoutExpired):  # still running: a check sends signal 0, which it never sees
            sleeper.wait(timeout=0.5)
    finally:
        sleeper.kill()
        sleeper.wait()
        sleeper.stdout.close()
    assert not files._process_alive(sleeper.pid)

    def other_users_process(pid: int, signal: int) -> None:
        raise PermissionError("operation not permitted")

    monkeypatch.setattr(files.os, "kill", other_users_process)
    assert files._process_alive(1)


def test_a_stale_partial_another_writer_removed_first_is_no_error(tmp_path: Path, monkeypatch) -> None:
    stale = tmp_path / f"{files.TEMP_MARKER}{files._HOST}-999999-0000-last.ckpt"
    stale.write_bytes(b"partial")

    def removed_meanwhile(pid: int) -> bool:
        stale.unlink()  # the other writer's clean-up won the race
        return False

    monkeypatch.setattr(files, "_process_alive", removed_meanwhile)
    files.atomic_write_text(tmp_path / "last.ckpt", "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_checkpoint_save_is_in_place_at_once_and_on_disk_by_the_teardown(tmp_path: Path, monkeypatch) -> None:
    """Checkpoints written while training do not wait for their fsync: it runs on a background thread, and
    the checkpoint IO's teardown (the end of every fit and test) waits until each file and folder is synced."""
    import threading

    from transfer_lightning.run.checkpoint import AtomicCheckpointIO

    released, synced = threading.Event(), []
    real_fsync = os.fsync

    def slow_fsync(descriptor: int) -> None:
        released.wait(10)  # the disk is slow: nothing may wait for it but the teardown
        synced.append((threading.current_thread().name, os.readlink(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    monkeypatch.setattr(files.os, "fsync", slow_fsync)
    checkpoint_io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint_io.save_checkpoint({"epoch": 1}, path)
    assert torch.load(path, weights_only=True) == {"epoch": 1} and synced == []  # whole, and not waited for
    timer = threading.Timer(0.2, released.set)
    timer.start()
    checkpoint_io.teardown()
    assert [name.startswith("transfer-lightning-fsync") for name, _ in synced] == [True, True]
    assert [target for _, target in synced] == [str(path), str(path.parent)]  # the file, then its folder
    files.atomic_write_text(tmp_path / "summary.json", "{}")  # every other file still waits for its fsync
    (file_thread, file), (folder_thread, folder) = synced[2:]
    assert file_thread == folder_thread == threading.current_thread().name
    assert file.endswith("summary.json") and folder == str(tmp_path)  # its temporary file, before the rename
