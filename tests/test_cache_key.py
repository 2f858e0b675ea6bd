"""The feature-cache key's pieces, alone: cheap enough to be the mutation-testing subset of ``cache/key.py``."""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch.utils.data import Dataset, TensorDataset
from torchvision.models import resnet18

from transfer_lightning.cache import key
from transfer_lightning.cache.key import (
    cache_key,
    code_version,
    data_fingerprint,
    frozen_weights_fingerprint,
    tensor_fingerprint,
)
from transfer_lightning.data.base import TensorImageDataset


def test_tensor_fingerprint_tells_apart_values_dtypes_shapes_and_order() -> None:
    values = torch.arange(12, dtype=torch.int32)
    base = tensor_fingerprint(values)
    assert base == tensor_fingerprint(values.clone()), "equal content, equal fingerprint"
    assert len(base) == 64 and int(base, 16) >= 0  # a sha256 hex digest
    changed = values.clone()
    changed[5] += 1
    assert tensor_fingerprint(changed) != base
    assert tensor_fingerprint(values.view(torch.float32)) != base, "same bytes, other dtype"
    assert tensor_fingerprint(values.reshape(3, 4)) != base, "same bytes, other shape"
    assert tensor_fingerprint(values.reshape(4, 3).t()) == tensor_fingerprint(values.reshape(4, 3).t().contiguous())
    a, b = torch.zeros(2), torch.ones(2)
    assert tensor_fingerprint(a, b) != tensor_fingerprint(b, a) != tensor_fingerprint(a)
    assert tensor_fingerprint(torch.empty(0)) != tensor_fingerprint(torch.empty(0, 3)), "empty tensors hash their shape"


class _Named(Dataset):
    def fingerprint(self) -> str:
        return "from-the-dataset"


def test_data_fingerprint_hashes_in_memory_images_and_labels_and_refuses_the_rest() -> None:
    images, labels = torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.arange(4)
    dataset = TensorImageDataset(images, labels)
    assert data_fingerprint(dataset) == tensor_fingerprint(images, labels)
    assert data_fingerprint(TensorImageDataset(images, labels.flip(0))) != data_fingerprint(dataset)
    assert data_fingerprint(_Named()) == "from-the-dataset"
    assert data_fingerprint(TensorDataset(images, labels)) is None, "not fingerprintable: never cached"
    half_in_memory = TensorImageDataset(images, labels)
    half_in_memory.labels = labels.tolist()
    assert data_fingerprint(half_in_memory) is None, "images and labels must both be tensors"


def test_frozen_weights_fingerprint_covers_exactly_the_first_n_stages() -> None:
    torch.manual_seed(0)
    model = resnet18(num_classes=4)
    by_depth = [frozen_weights_fingerprint(model, n) for n in range(6)]
    assert len(set(by_depth)) == 6
    with torch.no_grad():
        model.layer2[0].bn1.running_var[0] += 1.0  # a buffer of stage 3 (layer2)
    after = [frozen_weights_fingerprint(model, n) for n in range(6)]
    assert after[:3] == by_depth[:3] and all(a != b for a, b in zip(after[3:], by_depth[3:], strict=True))


def test_cache_key_depends_on_every_input_the_format_torch_and_the_code(monkeypatch) -> None:
    inputs = {"model": "resnet18", "stage": 5, "split": "train"}
    base = cache_key(**inputs)
    assert base == cache_key(**dict(reversed(inputs.items()))), "key order does not matter"
    assert len(base) == 64
    assert cache_key(**{**inputs, "stage": 4}) != base
    assert cache_key(**inputs, extra=None) != base
    monkeypatch.setattr(key, "FORMAT_VERSION", key.FORMAT_VERSION + 1)
    assert cache_key(**inputs) != base
    monkeypatch.undo()
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert cache_key(**inputs) != base
    monkeypatch.undo()
    monkeypatch.setattr(key, "code_version", lambda: "edited")
    assert cache_key(**inputs) != base
    # values JSON cannot write (a path) are hashed by their text
    assert cache_key(**inputs, root=Path("a")) == cache_key(**inputs, root="a") != cache_key(**inputs, root=Path("b"))


def test_code_version_changes_when_the_stage_or_preprocessing_source_changes(monkeypatch) -> None:
    base = code_version()
    assert base == code_version() and len(base) == 16
    real = inspect.getsource
    for edited in (key.resnet, key.transforms):
        monkeypatch.setattr(inspect, "getsource", lambda obj, edited=edited: real(obj) + ("#" if obj is edited else ""))
        assert code_version() != base, edited.__name__
    monkeypatch.setattr(inspect, "getsource", lambda obj: real(obj) if obj is key.resnet else "")
    assert code_version() != base, "the preprocessing source is part of the version"
