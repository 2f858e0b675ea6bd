"""Device placement: GPU when present (bf16 where supported), else CPU; says which it chose."""

from __future__ import annotations

import logging

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


def resolve_precision(accelerator: str, precision: str | int | None) -> str | int | None:
    """``precision: auto`` -> ``bf16-mixed`` on a CUDA GPU that supports it, else ``32-true``."""
    if precision != "auto":
        return precision
    wants_gpu = str(accelerator) in {"auto", "gpu", "cuda"}
    if wants_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


class DeviceReport(Callback):
    """Logs the device and precision the Trainer runs on (and records them for the summary)."""

    def __init__(self) -> None:
        self.device = "unknown"
        self.precision = "unknown"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        root = trainer.strategy.root_device
        name = torch.cuda.get_device_name(root) if root.type == "cuda" else "CPU"
        self.device = f"{root.type}:{root.index}" if root.index is not None else root.type
        self.device = (
            f"{self.device} ({name}) x{trainer.world_size}" if trainer.world_size > 1 else f"{self.device} ({name})"
        )
        self.precision = str(trainer.precision)
        if stage == "fit":
            log.info("Device: %s, precision %s (trainer.accelerator / trainer.precision)", self.device, self.precision)
