"""Runs and jobs that share files: a run folder each, even when started in the same second; caches
filled by two processes at the same moment stay whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch

from tests.conftest import ROOT, TINY
from transfer_lightning.cache.store import FeatureCache
from transfer_lightning.data.image_cache import DiskCache
from transfer_lightning.run.preflight import claim_new_run_folder

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def test_a_taken_run_folder_is_never_given_again(tmp_path) -> None:
    proposed = str(tmp_path / "outputs" / "12-00-00")
    first = claim_new_run_folder(proposed)
    assert claim_new_run_folder(proposed) == first == proposed  # the same process asks again
    os.rmdir(first)
    (tmp_path / "outputs" / "12-00-00").mkdir()  # another run took it meanwhile
    from transfer_lightning.run import preflight

    preflight._claimed.clear()
    assert claim_new_run_folder(proposed) == proposed + "-2"


def test_two_runs_started_at_once_get_a_folder_each(tmp_path) -> None:
    # the default folder with a fixed name instead of the time: the two runs collide whatever the timing
    same_name = "hydra.run.dir='${tl.run_dir:${resume},${ckpt_path},outputs/same}'"
    command = [sys.executable, "-m", "transfer_lightning", *TINY, "test=false", same_name, f"paths.data_dir={tmp_path}"]
    processes = [
        subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    folders = sorted(path.name for path in (tmp_path / "outputs").iterdir())
    assert folders == ["same", "same-2"]
    for name in folders:
        run = tmp_path / "outputs" / name
        assert json.loads((run / "run_summary.json").read_text())["status"] == "completed"
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
        assert (run / "train.log").read_text().count("Parameters:") == 1  # one run's log, not two interleaved


def test_two_processes_filling_the_same_caches_at_once_leave_one_whole_entry_each(tmp_path) -> None:
    go = tmp_path / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.concurrent_cache_writer", str(tmp_path), str(go), str(value)],
            cwd=ROOT,
            env=ENV,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for value in (1, 2)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{value}").exists() for value in (1, 2)):  # both imported torch, wait for the go
        assert all(process.poll() is None for process in processes), "a writer ended before the go"
        assert time.monotonic() < deadline, "the writers were not ready after 120 s"
        time.sleep(0.05)
    go.touch()
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    (image_entry,) = (tmp_path / "image_cache").iterdir()  # one entry, no temporary files left
    (feature_entry,) = (tmp_path / "feature_cache").iterdir()
    files = sorted((tmp_path / "images").iterdir())
    images = DiskCache(tmp_path / "image_cache", tmp_path / "images", image_size=16).load(files)
    assert images is not None and images.images.unique().tolist() in ([1], [2])
    features, labels = FeatureCache(tmp_path / "feature_cache").load("f" * 16)
    assert features.unique().tolist() in ([1.0], [2.0]) and torch.equal(labels, torch.tensor([0, 1]))
    assert feature_entry.name == "f" * 16 + ".pt" and image_entry.suffix == ".pt"
