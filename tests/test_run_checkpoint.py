"""RunCheckpoint: last.ckpt is always the latest epoch; it costs no second write when best.ckpt
was written at the same step, and it is a file of its own once the best epoch is behind."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transfer_lightning.callbacks import RunCheckpoint
from transfer_lightning.run.checkpoint import AtomicCheckpointIO
from transfer_lightning.utils import files

VAL_ACC_PER_EPOCH = [0.5, 0.7, 0.6]  # improves, improves, falls back: best is epoch 1, last is epoch 2


class ScriptedAccuracy(L.LightningModule):
    """A linear model whose ``val/acc`` follows ``VAL_ACC_PER_EPOCH``."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.layer(x), y)

    def validation_step(self, batch, batch_idx) -> None:
        self.log("val/acc", VAL_ACC_PER_EPOCH[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


class CountedWrites(AtomicCheckpointIO):
    """The project's checkpoint writer, counting the full writes per file name."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        super().save_checkpoint(checkpoint, path, storage_options)
        self.writes.append(Path(path).name)


class LastCheckpointSeen(L.Callback):
    """The global step ``last.ckpt`` holds at the start of every training batch (None before the first)."""

    def __init__(self, checkpoints: Path) -> None:
        self.last = checkpoints / "last.ckpt"
        self.seen: list[int | None] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(_load(self.last)["global_step"] if self.last.exists() else None)


def _fit(folder: Path, epochs: int, writer: AtomicCheckpointIO | None = None, **checkpoint_options) -> Path:
    data = TensorDataset(torch.randn(8, 4), torch.randint(0, 2, (8,)))
    checkpoints = folder / "checkpoints"
    callback = RunCheckpoint(
        dirpath=checkpoints, filename="best", monitor="val/acc", mode="max", save_top_k=1, save_last=True,
        enable_version_counter=False, **checkpoint_options,
    )  # fmt: skip
    seen = LastCheckpointSeen(checkpoints)
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", callbacks=[callback, seen],
        plugins=[writer or AtomicCheckpointIO()], logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=folder,
    )  # fmt: skip
    trainer.fit(ScriptedAccuracy(), DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    folder.joinpath("seen.txt").write_text(repr(seen.seen))
    return checkpoints


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _epoch(path: Path) -> int:
    return _load(path)["epoch"]


def test_last_is_a_second_name_of_best_while_it_improves_and_its_own_file_after(tmp_path) -> None:
    checkpoints = _fit(tmp_path / "two", epochs=2)  # both epochs improve
    best, last = checkpoints / "best.ckpt", checkpoints / "last.ckpt"
    assert _epoch(last) == _epoch(best) == 1
    assert os.path.samefile(best, last), "last.ckpt was written a second time instead of linked"

    checkpoints = _fit(tmp_path / "three", epochs=3)  # epoch 2 does not improve
    best, last = checkpoints / "best.ckpt", checkpoints / "last.ckpt"
    assert (_epoch(best), _epoch(last)) == (1, 2)
    assert not os.path.samefile(best, last)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]  # no partial files left


def test_every_epoch_writes_one_full_checkpoint_best_while_it_improves_else_last(tmp_path) -> None:
    writer = CountedWrites()
    _fit(tmp_path, epochs=3, writer=writer)
    assert writer.writes == ["best.ckpt", "best.ckpt", "last.ckpt"]  # epoch 2 does not improve


def test_every_n_train_steps_refreshes_last_mid_epoch_and_the_epoch_end_after_validation(tmp_path) -> None:
    checkpoints = _fit(tmp_path, epochs=3, every_n_train_steps=1)  # 2 batches an epoch
    # at each batch start: the step written after the batch before (the epoch's last batch waits for
    # the epoch's end, after validation, so that last.ckpt holds the epoch's validation too)
    assert (tmp_path / "seen.txt").read_text() == repr([None, 1, 2, 3, 4, 5])
    assert (_epoch(checkpoints / "last.ckpt"), _load(checkpoints / "last.ckpt")["global_step"]) == (2, 6)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_without_hard_links_last_is_written_in_full(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(source, target) -> None:
        raise OSError("this file system has no hard links")

    monkeypatch.setattr(files.os, "link", no_links)
    checkpoints = _fit(tmp_path, epochs=2)
    best, last = checkpoints / "best.ckpt", checkpoints / "last.ckpt"
    assert _epoch(last) == _epoch(best) == 1
    assert not os.path.samefile(best, last)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_linking_a_name_that_already_is_the_file_leaves_no_partial_file(tmp_path) -> None:
    best, last = tmp_path / "best.ckpt", tmp_path / "last.ckpt"
    best.write_bytes(b"state")
    assert files.atomic_hard_link(best, last)
    assert files.atomic_hard_link(best, last)  # POSIX rename between two names of one file is a no-op
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert os.path.samefile(best, last)
