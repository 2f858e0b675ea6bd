"""A callback that records the training labels each process saw, for tests run through the CLI.

Use as ``+callbacks.record_labels._target_=tests.record_labels.RecordTrainingLabels``: each rank
writes ``training_labels_rank<N>.json`` (a list of labels) into the run folder when fit ends.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback


class RecordTrainingLabels(Callback):
    def __init__(self) -> None:
        self.labels: list[int] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.labels.extend(batch[1].tolist())

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = Path(trainer.default_root_dir) / f"training_labels_rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.labels))
