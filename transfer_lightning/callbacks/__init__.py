"""Lightning callbacks of this framework (one family per file), configured in conf/callbacks/."""

from transfer_lightning.callbacks.device import DeviceReport, resolve_precision
from transfer_lightning.callbacks.per_class_accuracy import PerClassAccuracy

__all__ = ["DeviceReport", "PerClassAccuracy", "resolve_precision"]
