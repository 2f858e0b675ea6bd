"""The preprocessing contract a checkpoint records (``image_size``, ``mean``, ``std``), as a module."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from transfer_lightning.data.transforms import BatchPreprocessor


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects of its inputs: side, resize, interpolation and normalisation."""

    image_size: int
    resize_size: int | None = None
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        known = {field.name for field in fields(cls)}
        kept = {key: value for key, value in values.items() if key in known and value is not None}
        for key in ("mean", "std"):
            if key in kept:
                kept[key] = tuple(float(v) for v in kept[key])
        return cls(**kept)


def resolve_preprocessing(overrides: dict[str, Any], defaults: Preprocessing) -> Preprocessing:
    """``defaults`` (the model's or a checkpoint's) with every non-null ``overrides`` value (data.*) applied."""
    given = {key: value for key, value in overrides.items() if value is not None}
    for key in ("mean", "std"):
        if key in given:
            given[key] = tuple(float(v) for v in given[key])
    return replace(defaults, **given)


def preprocessor_for(preprocessing: dict[str, Any]) -> BatchPreprocessor:
    """The inference-time preprocessing a contract describes (no augmentation)."""
    return BatchPreprocessor(
        int(preprocessing["image_size"]),
        augment="none",
        mean=tuple(preprocessing["mean"]),
        std=tuple(preprocessing["std"]),
    )
