"""``logger=csv``: ``<run folder>/csv/metrics.csv`` with one row per epoch, read as it is by pandas.

Lightning's ``CSVLogger`` writes one row per logging call: the learning rates at the epoch's start,
the val metrics, then the train metrics of the same epoch, each on its own row with the other
columns empty. Here each epoch is one row (``epoch``, ``step``, ``train/*``, ``val/*``, the
learning rates ``lr-*``), and the test's metrics (``test/*``) are one last row. Per-step values
(``train/loss_step``) are left out: TensorBoard has them. A resumed run keeps the earlier epochs'
rows (Lightning's writer would delete the file) and updates the epoch it continues.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment

from transfer_lightning.utils.files import atomic_write_text


class EpochMetricsWriter:
    """Keeps the rows of ``metrics.csv`` (one per epoch, then the test) and writes the whole file on save."""

    NAME_METRICS_FILE = "metrics.csv"
    NAME_HPARAMS_FILE = "hparams.yaml"

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.metrics: list[dict[str, Any]] = []  # Lightning's CSVLogger counts calls by its length
        self.hparams: dict[str, Any] = {}
        self.epochs: dict[int, dict[str, Any]] = {}
        self.test: dict[str, Any] = {}
        self.pending: dict[str, Any] = {}  # logged before their epoch's first row (learning rates at its start)
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        for row in _read_rows(Path(log_dir) / self.NAME_METRICS_FILE):  # a resumed run's rows so far
            self._add(row)

    def log_hparams(self, params: dict[str, Any]) -> None:
        self.hparams.update(params)
        save_hparams_to_yaml(str(Path(self.log_dir) / self.NAME_HPARAMS_FILE), self.hparams)

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        values = {key: _number(value) for key, value in metrics.items() if not key.endswith("_step")}
        self.metrics.append(values)
        if "epoch" not in values:
            self.pending.update(values)
            return
        self._add({**self.pending, **values, "step": step})
        self.pending = {}

    def save(self) -> None:
        rows = [self.epochs[epoch] for epoch in sorted(self.epochs)] + ([self.test] if self.test else [])
        if not rows:
            return
        columns = sorted(set().union(*rows), key=lambda key: (key not in ("epoch", "step"), key))
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(Path(self.log_dir) / self.NAME_METRICS_FILE, text.getvalue())

    def _add(self, row: dict[str, Any]) -> None:
        row = {key: value for key, value in row.items() if value not in (None, "")}
        if any(key.startswith("test/") for key in row):
            self.test = row  # the last test's metrics (a resumed run tests again)
        elif "epoch" in row:
            epoch = int(float(row["epoch"]))
            self.epochs.setdefault(epoch, {}).update({**row, "epoch": epoch})


class EpochCSVLogger(CSVLogger):
    """Lightning's ``CSVLogger`` writing one row per epoch (see the module docstring): its writer, the
    ``experiment``, is an ``EpochMetricsWriter`` (kept where ``CSVLogger`` keeps its own, so that
    ``finalize`` saves it)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> EpochMetricsWriter:
        if self._experiment is None:
            self._experiment = EpochMetricsWriter(self.log_dir)
        return self._experiment


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _number(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
