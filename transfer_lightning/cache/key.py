"""Cache keys: a hash of everything the frozen stages' output depends on.

The key changes when any input changes, so a stale entry is never looked up: the model name,
the frozen stages' weights (their content, so a torchvision name, a file and a seeded random
init are all identified exactly), how many stages are frozen, the image size and
normalisation, the split's images and labels (their content), the split's name, the numeric
setting (device type, precision, torch version) and the code that maps stages and
preprocesses images (the source of the backbone's family module, ``models/backbone.py`` and
``data/transforms.py``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any

import torch
from torch.utils.data import Dataset

from transfer_lightning.data import transforms
from transfer_lightning.models import Backbone, backbone

FORMAT_VERSION = 1  # bump when the file layout of a cache entry changes


def tensor_fingerprint(*tensors: torch.Tensor) -> str:
    """sha256 of the tensors' dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for tensor in tensors:
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{data.dtype}{tuple(data.shape)}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def data_fingerprint(dataset: Dataset) -> str | None:
    """The content hash of an in-memory split (its uint8 images and labels).

    ``None`` for datasets that cannot be fingerprinted cheaply (not in memory and without a
    ``fingerprint()`` method): those are never cached.
    """
    if hasattr(dataset, "fingerprint"):
        return dataset.fingerprint()
    images, labels = getattr(dataset, "images", None), getattr(dataset, "labels", None)
    if torch.is_tensor(images) and torch.is_tensor(labels):
        return tensor_fingerprint(images, labels)
    return None


def frozen_weights_fingerprint(network: Backbone, num_stages: int) -> str:
    """Content hash of the parameters and buffers of the first ``num_stages`` stages."""
    return tensor_fingerprint(*network.frozen_state(num_stages))


def code_version(network: Backbone) -> str:
    """Hash of the code that defines the stages and the preprocessing (any edit = new keys)."""
    family = inspect.getmodule(type(network))
    source = inspect.getsource(family) + inspect.getsource(backbone) + inspect.getsource(transforms)
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def cache_key(network: Backbone, **inputs: Any) -> str:
    """sha256 of the JSON of ``inputs`` plus the format and ``network``'s code versions (sorted keys)."""
    payload = {"format": FORMAT_VERSION, "code": code_version(network), "torch": torch.__version__, **inputs}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
