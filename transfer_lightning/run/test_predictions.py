"""A run's per-image test results, ``<run>/test_predictions.npz``: the label and the predicted class of each
test image, in the test split's order (written by ``callbacks/test_predictions.py`` at the final test).

An accuracy alone cannot say whether two models differ by more than chance on the same images: the
confidence intervals and the paired test of ``select`` and of a sweep over seeds
(``selection/significance.py``) resample these per-image results. Someone else's run folder may hold
anything: the file is read as data (NumPy arrays, no pickles), and a damaged one reads as absent.
Nothing here imports torch.
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transfer_lightning.utils.files import atomic_write_bytes

log = logging.getLogger(__name__)

TEST_PREDICTIONS_FILE = "test_predictions.npz"


@dataclass(frozen=True)
class ImageResults:
    """The labels and predicted classes of a run's test images, in the split's order."""

    labels: np.ndarray
    predictions: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        return self.labels == self.predictions

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


def write_test_predictions(run_dir: Path, labels: np.ndarray, predictions: np.ndarray) -> Path:
    """``<run_dir>/test_predictions.npz`` (``labels``, ``predictions``: integer arrays), written atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, labels=np.asarray(labels, dtype=np.int64), predictions=np.asarray(predictions, dtype=np.int64))
    return atomic_write_bytes(Path(run_dir) / TEST_PREDICTIONS_FILE, buffer.getvalue())


def read_test_predictions(run_dir: Path) -> ImageResults | None:
    """A run folder's per-image test results; None when the file is absent or is not two equal-length integer
    arrays (a damaged file is data, never an error)."""
    path = Path(run_dir) / TEST_PREDICTIONS_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            labels, predictions = arrays["labels"], arrays["predictions"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        log.warning("%s cannot be read (%s): the run counts as without per-image test results", path, error)
        return None
    sound = (
        labels.ndim == predictions.ndim == 1
        and len(labels) == len(predictions) > 0
        and np.issubdtype(labels.dtype, np.integer)
        and np.issubdtype(predictions.dtype, np.integer)
    )
    return ImageResults(labels, predictions) if sound else None
