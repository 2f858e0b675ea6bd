"""Every run's per-image test results (``test_predictions.npz``): written by the final test pass, in the split's
order, read back as data."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from transfer_lightning.callbacks.test_predictions import in_split_order
from transfer_lightning.run.test_predictions import TEST_PREDICTIONS_FILE, read_test_predictions, write_test_predictions


def test_a_run_writes_each_test_image_label_and_prediction_in_split_order(trained_run: Path) -> None:
    results = read_test_predictions(trained_run)
    summary = json.loads((trained_run / "run_summary.json").read_text())
    assert results is not None
    assert np.array_equal(results.labels, np.arange(32) % 4)  # data=synthetic's test split: labels 0,1,2,3,0,...
    assert results.accuracy == summary["test_acc"]  # the same test pass as run_summary.json's


def test_ddp_shares_are_put_back_in_the_split_order() -> None:
    """Process r of 3 tested items r, r + 3, ... (``each_item_once_per_run``): 8 items, shares of 3, 3 and 2."""
    items = torch.arange(8)
    shares = [torch.stack([items[rank::3], 10 + items[rank::3]]) for rank in range(3)]

    def all_gather(tensor: torch.Tensor) -> torch.Tensor:  # what every process receives, as Lightning's all_gather
        if tensor.dim() == 0:
            return torch.tensor([share.shape[1] for share in shares])
        padded = [torch.nn.functional.pad(share, (0, tensor.shape[1] - share.shape[1]), value=-1) for share in shares]
        return torch.stack(padded)

    trainer = SimpleNamespace(world_size=3, strategy=SimpleNamespace(all_gather=all_gather))
    ordered = in_split_order(trainer, shares[0])
    assert ordered.tolist() == [items.tolist(), (10 + items).tolist()]


def test_a_damaged_or_foreign_file_reads_as_no_results(tmp_path: Path) -> None:
    write_test_predictions(tmp_path, np.array([0, 1, 2]), np.array([0, 2, 2]))
    assert read_test_predictions(tmp_path).accuracy == 2 / 3
    (tmp_path / TEST_PREDICTIONS_FILE).write_bytes(b"not a zip file")
    assert read_test_predictions(tmp_path) is None
    np.savez(tmp_path / TEST_PREDICTIONS_FILE, labels=np.array([0, 1]), predictions=np.array([0.5, 1.0]))
    assert read_test_predictions(tmp_path) is None  # predictions must be classes
    np.savez(tmp_path / TEST_PREDICTIONS_FILE, labels=np.array([0, 1]), predictions=np.array([0, 1, 2]))
    assert read_test_predictions(tmp_path) is None
    assert read_test_predictions(tmp_path / "missing") is None
