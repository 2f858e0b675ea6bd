"""The callbacks every run gets, whatever ``callbacks=`` selects: they protect the run, not shape it."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

from transfer_lightning.callbacks.graceful_stop import GracefulInterrupt
from transfer_lightning.callbacks.nan_guard import NonFiniteLossGuard
from transfer_lightning.callbacks.rng_state import RNGStateCheckpoint


def safety_callbacks() -> list[Callback]:
    """A resumable random stream, the stop at a NaN loss, and a clean Ctrl-C."""
    return [RNGStateCheckpoint(), NonFiniteLossGuard(), GracefulInterrupt()]
