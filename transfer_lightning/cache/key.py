"""Cache keys: a hash of everything the frozen stages' output depends on.

The key changes when any input changes, so a stale entry is never looked up: the model name,
the frozen stages' weights (their content, so a torchvision name, a file and a seeded random
init are all identified exactly), how many stages are frozen, the image size and
normalisation, the split's identity (``data/fingerprint.py``: which images, in which order,
with which labels), the split's name, the numeric setting (device type, precision, torch
version) and the code that maps stages and preprocesses images (the source of the backbone's
family module, ``models/backbone.py`` and the decoder, contract and transforms of ``data/``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any

import torch

from transfer_lightning.data import contract, decode, transforms
from transfer_lightning.data.fingerprint import split_fingerprint, tensor_fingerprint
from transfer_lightning.models import Backbone, backbone

FORMAT_VERSION = 1  # bump when the file layout of a cache entry changes


data_fingerprint = split_fingerprint  # the cache's name for a split's identity (data/fingerprint.py)


def frozen_weights_fingerprint(network: Backbone, num_stages: int) -> str:
    """Content hash of the parameters and buffers of the first ``num_stages`` stages."""
    return tensor_fingerprint(*network.frozen_state(num_stages))


def code_version(network: Backbone) -> str:
    """Hash of the code that defines the stages and the preprocessing (any edit = new keys)."""
    family = inspect.getmodule(type(network))
    source = "".join(inspect.getsource(code) for code in (family, backbone, transforms, contract, decode))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def cache_key(network: Backbone, **inputs: Any) -> str:
    """sha256 of the JSON of the format, ``network``'s code version, torch's version and ``inputs`` (sorted keys)."""
    payload = [FORMAT_VERSION, code_version(network), torch.__version__, inputs]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
