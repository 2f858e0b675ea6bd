"""Starting from another run's model (a transfer chain), and the record of where weights came from.

``model.weights`` may name a checkpoint of this framework (``<run>/checkpoints/best.ckpt``,
``last.ckpt``) or a run folder (its ``checkpoints/best.ckpt``). Every model records its weights'
origin as a *lineage*, a chain of plain dicts ending at the first weights::

    {"source": "run", "path": ".../best.ckpt", "classes": [...],
     "parent": {"source": "torchvision", "name": "IMAGENET1K_V1"}}

Other links: ``{"source": "random init"}`` and ``{"source": "file", "path": ..., "sha256": ...}``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from transfer_lightning.data.contract import Preprocessing, resolve_preprocessing
from transfer_lightning.utils.errors import UserError

log = logging.getLogger(__name__)

_NET_PREFIX = "net."  # TransferClassifier keeps the torchvision model as ``self.net``
RANDOM_INIT = {"source": "random init"}


def is_random_init(weights: str | None) -> bool:
    """A ``model.weights`` value asking for random init (``null``): each seed builds another network."""
    return weights is None or str(weights).lower() in {"none", "null"}


def is_run_weights(weights: str) -> bool:
    """A ``model.weights`` value naming a checkpoint of this framework or a run folder."""
    return weights.endswith(".ckpt") or Path(weights).expanduser().is_dir()


@dataclass(frozen=True)
class RunWeights:
    """The trained network of an earlier run: its state dict (torchvision keys) and what it was."""

    path: Path
    architecture: str
    class_names: list[str]
    preprocessing: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    parent: dict[str, Any]

    @property
    def lineage(self) -> dict[str, Any]:
        """This run's link of the chain, with the weights it started from as ``parent``."""
        return {"source": "run", "path": str(self.path), "classes": list(self.class_names), "parent": self.parent}


def read_run_weights(weights: str) -> RunWeights:
    """The network, classes and preprocessing of the checkpoint or run folder ``weights``."""
    from transfer_lightning.run.checkpoint import checkpoint_file, read_checkpoint_and_record  # imports models/

    path = checkpoint_file(weights, "model.weights").resolve()
    checkpoint, record = read_checkpoint_and_record(path)
    state_dict = {
        key.removeprefix(_NET_PREFIX): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(_NET_PREFIX)
    }
    return RunWeights(
        path=path,
        architecture=record.model_name,
        class_names=list(record.class_names),
        preprocessing=record.preprocessing.to_dict(),
        state_dict=state_dict,
        parent=record.lineage,
    )


def check_architecture(run: RunWeights, architecture: str) -> None:
    """A run's network fits only the same architecture: anything else is refused in one sentence."""
    if run.architecture != architecture:
        raise UserError(
            f"model.weights={run.path} holds a {run.architecture} but this run builds a {architecture}; "
            f"set model={run.architecture} to continue from it, or choose weights made for {architecture}"
        )


def keeps_head(run: dict[str, Any], class_names: list[str]) -> bool:
    """A run's head (``run`` is its lineage) is kept only for the very same class list, in order."""
    same = list(class_names) == list(run["classes"])
    if same:
        log.info("Head: kept from %s (the same %d classes)", run["path"], len(class_names))
    else:
        log.info("Head: new, %d classes (the starting run had %d other ones)", len(class_names), len(run["classes"]))
    return same


def preprocessing_from_run(run: RunWeights, overrides: dict[str, Any]) -> Preprocessing:
    """The starting run's preprocessing, with the ``data.*`` values the user set (a warning each)."""
    inherited = Preprocessing.from_dict(run.preprocessing)
    resolved = resolve_preprocessing(overrides, inherited)
    log.info(
        "Preprocessing from the starting checkpoint: %d px, mean %s, std %s",
        inherited.image_size,
        list(inherited.mean),
        list(inherited.std),
    )
    for key, value in overrides.items():
        if value is not None and getattr(resolved, key) != getattr(inherited, key):
            log.warning(
                "data.%s=%s overrides the starting checkpoint's %s=%s: the model was trained on other inputs",
                key,
                getattr(resolved, key),
                key,
                getattr(inherited, key),
            )
    return resolved


def file_lineage(path: Path) -> dict[str, Any]:
    """A state dict file, identified by its content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"source": "file", "path": str(path.resolve()), "sha256": digest.hexdigest()}


def torchvision_lineage(name: str) -> dict[str, Any]:
    """torchvision's pretrained weights, by their resolved name (``DEFAULT`` -> ``IMAGENET1K_V1``)."""
    return {"source": "torchvision", "name": name}


def describe_lineage(lineage: dict[str, Any] | None) -> str:
    """One line for logs and reports: ``run .../best.ckpt (3 classes) <- torchvision IMAGENET1K_V1``."""
    links = []
    while lineage:
        source = lineage.get("source")
        if source == "run":
            links.append(f"run {lineage['path']} ({len(lineage.get('classes', []))} classes)")
        elif source == "torchvision":
            links.append(f"torchvision {lineage['name']}")
        elif source == "timm":
            links.append(f"timm {lineage['name']} pretrained")
        elif source == "file":
            links.append(f"file {lineage['path']} (sha256 {str(lineage.get('sha256'))[:12]})")
        else:
            links.append(str(source))
        lineage = lineage.get("parent")
    return " <- ".join(links) or "unrecorded"
