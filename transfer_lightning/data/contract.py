"""The preprocessing contract: how an image file becomes the tensor the network sees.

Two steps, the same in training, evaluate, predict and the exported JSON:

1. decode (``data/decode.py``, PIL, uint8): upright RGB (EXIF orientation, alpha over white,
   16-bit scaled), shorter side resized to ``resize_size`` with ``interpolation``, then the
   centre ``crop_size`` square (``crop_size`` is ``image_size`` unless a data module stores
   smaller native images, as CIFAR-10 does at 32 px);
2. on the device (``data/transforms.py``): pixels / 255, resized from ``crop_size`` to
   ``image_size`` when they differ (``torch.nn.functional.interpolate``, ``interpolation``,
   ``align_corners=False``, antialiased when shrinking), then ``(x - mean) / std`` per channel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from transfer_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD, BatchPreprocessor
from transfer_lightning.utils.errors import UserError

IMAGENET_IMAGE_SIZE = 224  # the side ImageNet classifiers are trained and evaluated at
OVERRIDABLE = ("image_size", "resize_size", "interpolation", "mean", "std")


@dataclass(frozen=True)
class Preprocessing:
    """Everything that turns an image file into the network's input (see the module docstring)."""

    image_size: int
    resize_size: int
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_size: int | None = None  # None: image_size

    def __post_init__(self) -> None:
        # each value's own range is its schema's (config/schemas.py: DataSchema, PreprocessingSchema)
        if self.resize_size < self.decoded_size:
            raise UserError(
                f"data.resize_size={self.resize_size} is smaller than the crop of {self.decoded_size} px; "
                "set it to at least data.image_size (or null)"
            )

    @property
    def decoded_size(self) -> int:
        """The side of the uint8 square the decode step stores (the centre crop)."""
        return self.crop_size or self.image_size

    def to_dict(self) -> dict[str, Any]:
        """Plain containers (checkpoints load with ``weights_only``)."""
        values = asdict(self)
        return {**values, "mean": list(self.mean), "std": list(self.std), "crop_size": self.decoded_size}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Preprocessing:
        """Also reads old checkpoints that recorded only ``image_size``, ``mean`` and ``std``."""
        image_size = int(values["image_size"])
        crop = values.get("crop_size")
        return cls(
            image_size=image_size,
            resize_size=int(values.get("resize_size") or image_size),
            interpolation=str(values.get("interpolation") or "bilinear"),
            mean=tuple(float(v) for v in values.get("mean", IMAGENET_MEAN)),
            std=tuple(float(v) for v in values.get("std", IMAGENET_STD)),
            crop_size=None if crop in (None, image_size) else int(crop),
        )

    def stored_natively(self, native_size: int) -> Preprocessing:
        """This contract for a data module whose images are ``native_size`` squares upscaled on the device."""
        return replace(self, resize_size=native_size, crop_size=native_size)

    def summary(self) -> str:
        """One line for the run's log: ``224 px (resize 256, centre crop 224, bilinear), mean (...), std (...)``."""
        if self.decoded_size != self.image_size:
            steps = f"stored at {self.decoded_size} px, resized to {self.image_size} on the device, {self.interpolation}"
        else:
            steps = f"resize {self.resize_size}, centre crop {self.image_size}, {self.interpolation}"
        return f"{self.image_size} px ({steps}), mean ({_numbers(self.mean)}), std ({_numbers(self.std)})"

    def describe(self) -> str:
        """The two steps in words, exact enough to reimplement (the exported JSON carries it)."""
        resize = (
            f"resize to {self.image_size}x{self.image_size} (torch.nn.functional.interpolate "
            f"mode={self.interpolation}, align_corners=False, antialias={self.decoded_size > self.image_size}); "
            if self.decoded_size != self.image_size
            else ""
        )
        return (
            "decode upright RGB (EXIF orientation applied, transparency over white, 16-bit scaled to 8-bit; "
            f"JPEGs with PIL Image.draft(None, ({self.resize_size}, {self.resize_size}))), resize the shorter "
            f"side to {self.resize_size} px (torchvision Resize, PIL {self.interpolation}, uint8), take the centre "
            f"{self.decoded_size}x{self.decoded_size} crop (torchvision CenterCrop); scale to [0, 1] (x / 255) "
            f"as float32; {resize}then (x - mean) / std per channel"
        )


def _numbers(values: tuple[float, ...]) -> str:
    return ", ".join(f"{value:.4g}" for value in values)


def default_preprocessing(image_size: int | None = None) -> Preprocessing:
    """Defaults for a data module built without a model's: ImageNet mean/std, bilinear, no extra margin
    before the crop, 224 px unless ``image_size`` says otherwise."""
    image_size = image_size or IMAGENET_IMAGE_SIZE
    return Preprocessing(image_size=image_size, resize_size=image_size)


def resolve_preprocessing(overrides: Mapping[str, Any], defaults: Preprocessing) -> Preprocessing:
    """``defaults`` with the non-null ``image_size`` / ``resize_size`` / ``interpolation`` / ``mean`` /
    ``std`` of ``overrides`` (the data config) applied; a null ``resize_size`` keeps the defaults'
    ratio to the image size."""
    chosen = {key: overrides.get(key) for key in OVERRIDABLE if overrides.get(key) is not None}
    for key in ("mean", "std"):
        if key in chosen:
            chosen[key] = tuple(float(value) for value in chosen[key])
    if "resize_size" not in chosen and defaults.crop_size is None:  # natively stored images keep theirs
        # the defaults' ratio (1 for ours, 256/224 for a crop_pct of 0.875)
        image_size = int(chosen.get("image_size", defaults.image_size))
        chosen["resize_size"] = round(image_size * defaults.resize_size / defaults.image_size)
    return replace(defaults, **chosen)


def as_contract(preprocessing: Preprocessing | Mapping[str, Any]) -> Preprocessing:
    """A contract, from itself or from its ``to_dict()``."""
    return preprocessing if isinstance(preprocessing, Preprocessing) else Preprocessing.from_dict(preprocessing)


def preprocessor_for(preprocessing: Preprocessing | Mapping[str, Any]) -> BatchPreprocessor:
    """The inference-time device step a contract describes (no augmentation)."""
    contract = as_contract(preprocessing)
    return BatchPreprocessor(
        contract.image_size,
        mean=contract.mean,
        std=contract.std,
        interpolation=contract.interpolation,
    )
