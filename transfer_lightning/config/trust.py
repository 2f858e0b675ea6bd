"""What a file someone else wrote may make this program build: one allowlist, checked before any import.

Your own config folder and command line are trusted: they may name any class. A file is data: a
checkpoint's record, a run folder's ``.hydra/*.yaml``, a sweep folder's files, an export's JSON.
From such values, classes are built only when their ``_target_`` is on the allowlist below, at the
key where that kind of class belongs:

- the project's own classes, by the schemas that describe them (``config/schemas.py``): its
  strategies, data modules, callbacks, schedulers, loggers and backbones;
- for optimizers and schedulers, the classes of ``torch.optim`` and ``torch.optim.lr_scheduler``;
- Lightning's ``Trainer``.

A ``_target_`` anywhere else (``hyper_parameters.data.seed = {_target_: ...}``), a class not on the
list, or an interpolation that calls a resolver other than ``hydra``, ``now`` and ``oc.select`` is
refused in one sentence naming the file, the key, the target and why: nothing is imported, built
or written. Recorded values are never handed to a recursive ``instantiate``: nested dictionaries
stay dictionaries.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from transfer_lightning.config.schemas import SCHEMAS
from transfer_lightning.utils.errors import UserError

# The backbone families a recorded ``model.backbone`` may name (conf/model/*.yaml name no others).
BACKBONES = (
    "transfer_lightning.models.resnet.ResNet",
    "transfer_lightning.models.convnext.ConvNeXt",
    "transfer_lightning.models.efficientnet.EfficientNet",
    "transfer_lightning.models.mobilenet.MobileNetV3",
    "transfer_lightning.models.regnet.RegNet",
    "transfer_lightning.models.swin.SwinTransformer",
    "transfer_lightning.models.vit.VisionTransformer",
    "transfer_lightning.models.timm_backbone.TimmBackbone",
)
TRAINERS = ("lightning.pytorch.Trainer",)
RESOLVERS = ("hydra", "now", "oc.select")  # they only read: the run's folders, the time, another key
_RESOLVER = re.compile(r"\$\{\s*([A-Za-z_][\w.]*)\s*:")
_KINDS = {
    "strategy": "a freezing strategy of transfer_lightning",
    "data": "a data module of transfer_lightning",
    "optimizer": "an optimizer of torch.optim",
    "scheduler": "a learning-rate scheduler of transfer_lightning or torch.optim.lr_scheduler",
    "callbacks": "a callback this project configures",
    "logger": "a logger this project configures",
    "trainer": "Lightning's Trainer",
    "backbone": "a backbone family of transfer_lightning",
}


class UntrustedFile(UserError):
    """A file asks for something outside the allowlist: refused before anything is imported or built."""


# classes the user vouches for on their own command line or config (``trusted_classes=[my.Callback]``)
_vouched: set[str] = set()


def trust_also(classes: Any) -> None:
    """Let files name ``classes`` too (your own callback or data module, in your own run folders): the user
    says so on the command line or in their config folder (``trusted_classes``), never a file."""
    if isinstance(classes, (list, tuple)) or hasattr(classes, "__iter__") and not isinstance(classes, str):
        _vouched.update(str(name) for name in classes)


def allowed_targets(kind: str) -> set[str]:
    """The ``_target_`` strings a file may name for ``kind`` (strategy, data, optimizer, ...)."""
    if kind == "backbone":
        return set(BACKBONES)
    if kind == "trainer":
        return set(TRAINERS)
    return {schema._target_ for schema in SCHEMAS.get(kind, {}).values() if hasattr(schema, "_target_")}


def is_allowed(target: Any, kind: str) -> bool:
    """Whether a file may name ``target`` as a ``kind``: checked on the string, before any import."""
    if not isinstance(target, str):
        return False
    if target in allowed_targets(kind) or target in _vouched:
        return True
    if kind == "optimizer":
        return _torch_class(target, "torch.optim", lambda torch: torch.optim.Optimizer)
    if kind == "scheduler":
        return _torch_class(target, "torch.optim.lr_scheduler", lambda torch: torch.optim.lr_scheduler.LRScheduler)
    return False


def _torch_class(target: str, module: str, base: Callable[[Any], type]) -> bool:
    """``torch.optim.<Name>``: a public class of that module (already imported with torch), a subclass of ``base``."""
    prefix, _, name = target.rpartition(".")
    if prefix != module or not name.isidentifier() or name.startswith("_"):
        return False
    import torch  # trusted; a checkpoint has been read with it already

    found = getattr(importlib.import_module(module), name, None)
    return isinstance(found, type) and issubclass(found, base(torch))


def trusted_class(target: str, kind: str, source: str, key: str) -> Any:
    """The class (or function) ``target`` names, imported only after the allowlist said yes."""
    refuse_unless_allowed(target, kind, source, key)
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def refuse_unless_allowed(target: Any, kind: str, source: str, key: str) -> None:
    if not is_allowed(target, kind):
        raise UntrustedFile(
            f"{source} is refused: {key} names {target!r}, which is not {_KINDS[kind]} (a file is data: only the "
            "project's own classes, and torch.optim's optimizers and schedulers, are built from one); nothing was "
            "imported, created or written"
        )


def check_recorded(value: Any, source: str, key: str, positions: dict[str, str]) -> None:
    """Refuse ``value`` (read from ``source`` at ``key``) if a ``_target_`` in it is not on the allowlist for
    its position, or sits where no class belongs, or a string in it calls a resolver not in ``RESOLVERS``.

    ``positions`` maps a dotted key below ``key`` to the kind of class allowed there; ``"callbacks.*"``
    matches every child of ``callbacks``.
    """
    _walk(value, source, key, "", positions, depth=0)


_MAX_DEPTH = 32


def _walk(value: Any, source: str, root: str, path: str, positions: dict[str, str], depth: int) -> None:
    full = f"{root}.{path}" if path else root
    if depth > _MAX_DEPTH:
        raise UntrustedFile(f"{source} is refused: {full} is nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, str):
        for resolver in _RESOLVER.findall(value):
            if resolver not in RESOLVERS:
                raise UntrustedFile(
                    f"{source} is refused: {full} holds {value[:80]!r}, which calls the resolver {resolver!r} "
                    f"(a file may only refer to other keys, or use {', '.join(RESOLVERS)}); nothing was created or written"
                )
        return
    if isinstance(value, dict):
        if "_target_" in value:
            kind = _kind_at(path, positions)
            if kind is None:
                raise UntrustedFile(
                    f"{source} is refused: {full} names {value['_target_']!r} as a class to build, but {full} holds a "
                    "plain value, never a class (a file is data); nothing was imported, created or written"
                )
            refuse_unless_allowed(value["_target_"], kind, source, f"{full}._target_")
        for name, item in value.items():
            _walk(item, source, root, f"{path}.{name}" if path else str(name), positions, depth + 1)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _walk(item, source, root, f"{path}[{index}]" if path else f"[{index}]", positions, depth + 1)


def _kind_at(path: str, positions: dict[str, str]) -> str | None:
    if path in positions:
        return positions[path]
    parent, _, _ = path.rpartition(".")
    return positions.get(f"{parent}.*") if parent else None
