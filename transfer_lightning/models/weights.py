"""Weights are data chosen by a string: a torchvision weights name, a local file, a run of this
framework (see ``lineage.py``), or none."""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from transfer_lightning.models.lineage import (
    RANDOM_INIT,
    RunWeights,
    check_architecture,
    file_lineage,
    is_random_init,
    is_run_weights,
    read_run_weights,
    torchvision_lineage,
)
from transfer_lightning.utils.errors import UserError
from transfer_lightning.utils.files import unreadable_file_reason


def is_weights_file(weights: str) -> bool:
    """A weights value naming a file (a path), not a torchvision weights enum member."""
    return weights.endswith((".pth", ".pt", ".bin", ".safetensors")) or os.sep in weights or "/" in weights


def load_weights(
    model: nn.Module, arch: str, weights: str | None, head_prefix: str, resize_head: Callable[[int], None]
) -> dict[str, Any]:
    """Load ``weights`` into ``model`` (whose head still has its original shape).

    ``weights`` is ``None`` (random init), a torchvision weights name such as ``DEFAULT`` or
    ``IMAGENET1K_V1``, a path to a ``.pth`` / ``.safetensors`` state dict, or a checkpoint / run
    folder of this framework (then ``resize_head`` gives the head that run's size first). Keys
    under ``head_prefix`` (the head's state-dict prefix) may have another shape. Returns the
    weights' lineage.
    """
    if is_random_init(weights):
        return dict(RANDOM_INIT)
    weights = str(weights)
    loaded = _checked.pop((arch, weights), None)
    if loaded is None:
        loaded = _fetch(arch, weights)
    if isinstance(loaded, RunWeights):
        resize_head(len(loaded.class_names))
        load_backbone_state(model, loaded.state_dict, f"run checkpoint {loaded.path}", head_prefix)
        return loaded.lineage
    if is_weights_file(weights):
        path = Path(weights).expanduser()
        load_backbone_state(model, loaded, f"file {path}", head_prefix)
        return file_lineage(path)
    load_backbone_state(model, loaded, f"torchvision {arch} {weights}", head_prefix)
    return torchvision_lineage(torchvision_weights(arch, weights).name)


# state dicts (or runs) read by ensure_weights_available, handed to the next load_weights of the
# same (arch, weights) so that a run reads (and hash-checks) its weights file once, not twice
_checked: dict[tuple[str, str], dict | RunWeights] = {}


def ensure_weights_available(arch: str, weights: str | None) -> RunWeights | None:
    """Fail before any data is touched if ``weights`` cannot be had (download, file, or a run
    checkpoint of another architecture). Returns the run a transfer chain starts from, if any."""
    _checked.clear()
    if is_random_init(weights):
        return None
    loaded = _checked[(arch, str(weights))] = _fetch(arch, str(weights))
    return loaded if isinstance(loaded, RunWeights) else None


def _fetch(arch: str, weights: str) -> dict | RunWeights:
    if is_run_weights(weights):
        run = read_run_weights(weights)
        check_architecture(run, arch)
        return run
    return _fetch_state_dict(arch, weights)


def _fetch_state_dict(arch: str, weights: str) -> dict:
    if is_weights_file(weights):
        return read_state_dict_file(Path(weights).expanduser())
    return _download_torchvision_weights(arch, weights)


def torchvision_weights(arch: str, name: str) -> torchvision.models.WeightsEnum:
    """The torchvision weights enum member ``name`` (``DEFAULT``, ``IMAGENET1K_V1`` ...) of ``arch``."""
    enum = torchvision.models.get_model_weights(arch)
    allowed = list(dict.fromkeys(["DEFAULT", *enum.__members__]))  # DEFAULT is also one of the members
    if name not in allowed:
        raise UserError(
            f"model.weights={name!r} is not a weights name of {arch}; use one of "
            f"{', '.join(allowed)}, a path to a .pth state dict, or null for random init"
        )
    return enum.DEFAULT if name == "DEFAULT" else enum[name]


def expected_weights_path(arch: str, name: str) -> Path:
    """Where torchvision looks for (and caches) the weights file of ``arch``/``name``."""
    member = torchvision_weights(arch, name)
    filename = os.path.basename(urlparse(member.url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _download_torchvision_weights(arch: str, name: str) -> dict:
    member = torchvision_weights(arch, name)
    try:
        return member.get_state_dict(progress=False, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        reason = getattr(error, "reason", None) or error
        raise UserError(
            f"could not download the {arch} {name} ImageNet weights ({reason}); put the file "
            f"{expected_weights_path(arch, name)} in place (torchvision's cache, "
            "$TORCH_HOME/hub/checkpoints), or use model.weights=/path/file.pth for a local state "
            "dict, or model.weights=null to train from random init"
        ) from error


def read_state_dict_file(path: Path) -> dict:
    """The state dict in a ``.pth`` (``torch.save``) or ``.safetensors`` file."""
    if not path.is_file():
        raise UserError(f"model.weights file {path} does not exist; give the path to a .pth or .safetensors state dict")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same advice
        raise UserError(
            f"model.weights file {path} cannot be loaded as a state dict: {unreadable_file_reason(error)}"
        ) from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"model.weights file {path} is not a state dict (a mapping of names to tensors)")
    return state


def load_backbone_state(model: nn.Module, state_dict: dict, source: str, head_prefix: str) -> None:
    """Load everything but a head (keys under ``head_prefix``) of another size; any other mismatch names the keys."""
    own = model.state_dict()
    state_dict = {
        key: value
        for key, value in state_dict.items()
        if not (key.startswith(head_prefix) and key in own and own[key].shape != value.shape)
    }
    missing = sorted(k for k in own if k not in state_dict and not k.startswith(head_prefix))
    unexpected = sorted(k for k in state_dict if k not in own)
    mismatched = sorted(k for k in state_dict if k in own and own[k].shape != state_dict[k].shape)
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if keys:
                shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
                parts.append(f"{label}: {shown}")
        raise UserError(
            f"the weights from {source} do not fit this model ({'; '.join(parts)}); "
            "check that model.name matches the architecture the file was saved from"
        )
    if any(tensor.is_meta for tensor in own.values()):  # built without its random init (Backbone.build)
        state_dict = {key: value.to(dtype=own[key].dtype, copy=True) for key, value in state_dict.items()}
        model.load_state_dict(state_dict, strict=False, assign=True)
        return
    model.load_state_dict(state_dict, strict=False)
