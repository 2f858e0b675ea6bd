"""Weights: torchvision names (from the local cache, offline), local files, and clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torchvision

from transfer_lightning.models import build_backbone
from transfer_lightning.models.weights import expected_weights_path
from transfer_lightning.utils.errors import UserError


class _Payload:
    """An arbitrary class: loading it needs full unpickling, which weights_only refuses."""


def _reference_state(num_classes: int = 1000) -> dict:
    torch.manual_seed(1)
    return torchvision.models.resnet18(num_classes=num_classes).state_dict()


def test_local_state_dict_loads_and_a_head_of_another_size_is_dropped(tmp_path: Path) -> None:
    state = _reference_state(num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    backbone = build_backbone({"name": "resnet18", "weights": str(path)}, 7)
    model, source = backbone.model, backbone.weights_lineage
    assert source == {"source": "file", "path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert torch.equal(model.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])
    assert model.fc.out_features == 7


def test_state_dict_of_another_architecture_names_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(UserError, match=r"unexpected: layer1\.2\."):
        build_backbone({"name": "resnet18", "weights": str(path)}, 10)


def test_file_needing_arbitrary_unpickling_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"model": _Payload()}, path)  # unpickling it would run this module's code
    with pytest.raises(UserError, match=r"holds a pickled \S*_Payload object.*refused, not executed"):
        build_backbone({"name": "resnet18", "weights": str(path)}, 10)


def test_missing_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        build_backbone({"name": "resnet18", "weights": str(tmp_path / "nope.pth")}, 10)


def test_torchvision_weights_name_loads_from_the_torch_hub_cache_offline(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = expected_weights_path("resnet18", "IMAGENET1K_V1")
    assert target.name == "resnet18-f37072fd.pth"
    target.parent.mkdir(parents=True)
    state = _reference_state()
    torch.save(state, target)
    backbone = build_backbone({"name": "resnet18", "weights": "DEFAULT"}, 10)
    model, source = backbone.model, backbone.weights_lineage
    assert source == {"source": "torchvision", "name": "IMAGENET1K_V1"}  # DEFAULT resolved to what it is
    assert torch.equal(model.conv1.weight, state["conv1.weight"])


def test_weights_that_cannot_be_downloaded_name_the_expected_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        import urllib.error

        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(UserError) as error:
        build_backbone({"name": "resnet18", "weights": "IMAGENET1K_V1"}, 10)
    message = str(error.value)
    assert "resnet18-f37072fd.pth" in message and str(tmp_path) in message
    assert "model.weights=null" in message and "model.weights=/path/file.pth" in message


def test_unknown_weights_name_lists_the_allowed_ones() -> None:
    with pytest.raises(UserError, match="use one of DEFAULT, IMAGENET1K_V1, a path") as refused:
        build_backbone({"name": "resnet18", "weights": "IMAGENET1K_V9"}, 10)
    assert str(refused.value).count("DEFAULT") == 1  # DEFAULT is also an enum member: listed once


def test_the_start_check_and_the_model_build_read_the_weights_file_once(tmp_path, monkeypatch) -> None:
    from transfer_lightning.models import weights as weights_module

    state = _reference_state(num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    reads = []
    real_load = torch.load
    monkeypatch.setattr(weights_module.torch, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))

    weights_module.ensure_weights_available("resnet18", str(path))  # what train() does before the data
    backbone = build_backbone({"name": "resnet18", "weights": str(path)}, 10)
    model, _ = backbone.model, backbone.weights_lineage
    assert len(reads) == 1
    assert torch.equal(model.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    build_backbone(
        {"name": "resnet18", "weights": str(path)}, 10
    )  # a second model is not handed the first one's tensors
    assert len(reads) == 2
