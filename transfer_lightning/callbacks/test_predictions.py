"""Every run's per-image test results: ``test_step``'s predictions, written to ``<run>/test_predictions.npz``
(``run/test_predictions.py``) by the final test pass (``train.py`` adds this callback to every run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from transfer_lightning.run.test_predictions import write_test_predictions


class WriteTestPredictions(Callback):
    """Collects ``test_step``'s ``preds`` and ``target`` and writes ``test_predictions.npz`` in ``run_dir``.

    Under DDP each process tests an interleaved share of the split (``data/base.py``
    ``each_item_once_per_run``: process r sees items r, r + W, r + 2W, ...); rank 0 gathers the shares
    and writes them back in the split's order.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._labels: list[torch.Tensor] = []
        self._predictions: list[torch.Tensor] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._labels, self._predictions = [], []

    def on_test_batch_end(self, trainer, pl_module, outputs: Any, batch, batch_idx: int, dataloader_idx: int = 0):
        if isinstance(outputs, dict) and "preds" in outputs:
            self._labels.append(outputs["target"].detach())
            self._predictions.append(outputs["preds"].detach())

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._labels:
            return
        pairs = torch.stack([torch.cat(self._labels), torch.cat(self._predictions)]).long()
        if trainer.world_size > 1:
            pairs = in_split_order(trainer, pairs)
        if trainer.is_global_zero:
            write_test_predictions(self.run_dir, pairs[0].cpu().numpy(), pairs[1].cpu().numpy())


def in_split_order(trainer: L.Trainer, pairs: torch.Tensor) -> torch.Tensor:
    """Every process's ``(2, n_r)`` share gathered, and interleaved back into the split's order."""
    world = trainer.world_size
    counts = trainer.strategy.all_gather(torch.tensor(pairs.shape[1], device=pairs.device)).reshape(world).tolist()
    padded = torch.full((2, max(counts)), -1, dtype=pairs.dtype, device=pairs.device)
    padded[:, : pairs.shape[1]] = pairs
    shares = trainer.strategy.all_gather(padded).reshape(world, 2, -1)
    ordered = torch.empty((2, sum(counts)), dtype=pairs.dtype, device=pairs.device)
    for rank, share in enumerate(counts):
        ordered[:, rank::world] = shares[rank, :, :share]
    return ordered
