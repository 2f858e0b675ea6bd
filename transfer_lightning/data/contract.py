"""The preprocessing contract a checkpoint records (``image_size``, ``mean``, ``std``), as a module."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from transfer_lightning.data.transforms import BatchPreprocessor


def preprocessor_for(preprocessing: dict[str, Any]) -> BatchPreprocessor:
    """The inference-time preprocessing a contract describes (no augmentation)."""
    return BatchPreprocessor(
        int(preprocessing["image_size"]),
        augment="none",
        mean=tuple(preprocessing["mean"]),
        std=tuple(preprocessing["std"]),
    )


@dataclass(frozen=True)
class Preprocessing:
    """What a network expects as input: square side, resize before the centre crop, and normalisation.

    A backbone's ``default_preprocessing`` gives the values its weights were trained with;
    ``data.*`` settings that are not null override them (``resolve_preprocessing``).
    """

    image_size: int
    resize_size: int
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        return cls(
            image_size=int(values["image_size"]),
            resize_size=int(values.get("resize_size", values["image_size"])),
            interpolation=str(values.get("interpolation", "bilinear")),
            mean=tuple(float(v) for v in values["mean"]),
            std=tuple(float(v) for v in values["std"]),
        )


def resolve_preprocessing(overrides: dict[str, Any], defaults: Preprocessing) -> Preprocessing:
    """``defaults`` with every field of ``overrides`` that is not None replacing the model's value."""
    chosen = {key: value for key, value in overrides.items() if key in defaults.to_dict() and value is not None}
    return Preprocessing.from_dict({**defaults.to_dict(), **chosen})
