"""Lightning callbacks of this framework (one family per file), configured in conf/callbacks/."""

from transfer_lightning.callbacks.confusion_matrix import ConfusionMatrixImage
from transfer_lightning.callbacks.device import DeviceReport, resolve_precision
from transfer_lightning.callbacks.per_class_accuracy import PerClassAccuracy
from transfer_lightning.callbacks.prediction_grid import PredictionGridImage
from transfer_lightning.callbacks.progress_bar import ImagesProgressBar
from transfer_lightning.callbacks.run_checkpoint import RunCheckpoint

__all__ = [
    "ConfusionMatrixImage",
    "DeviceReport",
    "ImagesProgressBar",
    "PerClassAccuracy",
    "PredictionGridImage",
    "RunCheckpoint",
    "resolve_precision",
]
