"""A head that starts from a linear probe (LP-FT): ``model.head_init=<file>``.

``python -m transfer_lightning.select`` fits each candidate's head on its frozen features and writes it
as a plain file, ``{"weight", "bias", "class_names"}`` (tensors and a list of names, read with
``weights_only``: a file is data, it names no class). A fine-tune that starts from it trains from the
probe's solution instead of a random head (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained
Features"). The file is checked before any data is read (``check_head_init_file``) and against the
data's classes and the head's shape before training (``load_head_init``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from transfer_lightning.models.backbone import Backbone
from transfer_lightning.utils.errors import UserError
from transfer_lightning.utils.files import atomic_torch_save, unreadable_file_reason

KEYS = ("weight", "bias", "class_names")


def write_head_init(path: Path, weight: torch.Tensor, bias: torch.Tensor, class_names: list[str]) -> Path:
    """The head file ``load_head_init`` reads (written atomically)."""
    head = {"weight": weight.detach().float().cpu(), "bias": bias.detach().float().cpu(), "class_names": class_names}
    return atomic_torch_save(head, path)


def check_head_init_file(path: str | None) -> None:
    """``model.head_init`` names a file that exists (checked before any data is read)."""
    if path and not Path(path).expanduser().is_file():
        raise UserError(
            f"model.head_init={path} does not exist; give a head file written by python -m transfer_lightning.select "
            "(<select folder>/probes/<candidate>.head.pt), or model.head_init=null for a random head"
        )


def load_head_init(backbone: Backbone, path: str, class_names: list[str]) -> dict[str, Any]:
    """Copy the head of ``path`` into ``backbone``'s head; returns its lineage link (``{"head_init": ...}``)."""
    file = Path(path).expanduser()
    check_head_init_file(str(file))
    try:
        head = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - every way a file can fail to load gets its reason
        raise UserError(f"model.head_init={path} cannot be loaded: {unreadable_file_reason(error)}") from error
    if not isinstance(head, dict) or set(KEYS) - set(head):
        raise UserError(f"model.head_init={path} is not a head file (it lacks {', '.join(KEYS)}); write it with select")
    if list(head["class_names"]) != list(class_names):
        raise UserError(
            f"model.head_init={path} was fitted for other classes ({_short(head['class_names'])}) than this data's "
            f"({_short(class_names)}); fit it on the same data (python -m transfer_lightning.select)"
        )
    target = backbone.head()
    for name in ("weight", "bias"):
        value, parameter = head[name], getattr(target, name, None)
        if not isinstance(value, torch.Tensor) or parameter is None or value.numel() != parameter.numel():
            shape = tuple(parameter.shape) if parameter is not None else None
            raise UserError(
                f"model.head_init={path} holds a {name} of shape {tuple(getattr(value, 'shape', ()))}, but "
                f"{backbone.name}'s head needs {shape}: the probe was fitted on another model's features"
            )
        with torch.no_grad():
            parameter.copy_(value.reshape(parameter.shape))
    return {"head_init": str(file.resolve())}


def _short(names: Any) -> str:
    names = list(names)
    return ", ".join(map(str, names[:4])) + (f" (+{len(names) - 4} more)" if len(names) > 4 else "")
