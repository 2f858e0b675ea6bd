"""Random-number state in the checkpoint, so a resumed run draws the same numbers as an unbroken one.

Lightning checkpoints do not store RNG state: after a resume the next epoch's shuffle order and
augmentations would come from a fresh stream. This callback saves the Python, NumPy, torch CPU and
CUDA generators with every checkpoint and puts them back when Lightning restores the callbacks:
after the model was built (which drew numbers of its own) and before the resumed epoch's data
iterator draws its shuffle seed (the sanity check is skipped on restart and Lightning isolates its
RNG anyway).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


class RNGStateCheckpoint(Callback):
    """Saves the RNG states with each checkpoint and restores them when training resumes.

    Bit-equal continuation holds for end-of-epoch checkpoints (the default); a mid-epoch one
    (``every_n_steps``, Ctrl-C) restarts the epoch's data iterator, so the rest of that epoch sees
    other batches.
    """

    def state_dict(self) -> dict[str, Any]:
        return capture_rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        restore_rng_state(state_dict)


def capture_rng_state() -> dict[str, Any]:
    """Every generator's state as tensors and plain containers (loadable with ``weights_only``)."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(python_state), gauss],
        "numpy": [torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, python_state, gauss = state["python"]
    random.setstate((version, tuple(python_state), gauss))
    keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
