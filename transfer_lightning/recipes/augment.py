"""Training augmentation (``data.augment``) with kornia, on the device, every image its own draw.

A batch arrives as float images in [0, 1] at their stored size (CIFAR's 32 px, an image folder's
decoded square) and leaves augmented at the same size; ``BatchPreprocessor`` then resizes it to
``image_size`` and normalises it. Augmenting before the resize costs a fraction of augmenting at
224 px when the images are stored small, and is the same for images stored at ``image_size``.

kornia's crops, flips, affine and colour transforms draw their parameters per image. Its
``RandAugment`` and ``TrivialAugment`` draw the *operations* once per call (per batch), only their
magnitudes or signs per image; so here each image draws its own operations and every operation
runs, through kornia, on the images that drew it (at most one kornia call per operation and step).
AugMix (Hendrycks et al. 2020), which kornia does not have, mixes chains of the same kornia
operations with per-image Dirichlet and Beta weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import kornia.augmentation as K
import torch
from kornia.augmentation.auto import RandAugment, TrivialAugment
from kornia.augmentation.auto.rand_augment.rand_augment import default_policy as RANDAUGMENT_POLICY
from kornia.augmentation.auto.trivial_augment.trivial_augment import default_policy as TRIVIALAUGMENT_POLICY
from torch import nn

# AugMix's operations: no colour, contrast, brightness or sharpness, which overlap ImageNet-C's corruptions
AUGMIX_OPERATIONS = (
    "auto_contrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y", "translate_x", "translate_y",
)  # fmt: skip
AUGMIX_MAX_DEPTH = 3  # each chain applies 1 to 3 operations (AugMix's depth -1)


@dataclass(frozen=True)
class AugmentSettings:
    """The ``data.*`` keys of training augmentation (``config/schemas.py`` documents each)."""

    policy: str = "none"
    train_crop: str = "pad"
    crop_scale: tuple[float, float] = (0.08, 1.0)
    color_jitter: float = 0.0
    randaugment_ops: int = 2
    randaugment_magnitude: int = 9
    augmix_severity: int = 3
    augmix_width: int = 3
    aug_transforms_mult: float = 1.0

    @property
    def active(self) -> bool:
        return self.policy != "none"


class TrainAugmentation(nn.Module):
    """Float images ``(B, 3, size, size)`` in [0, 1] -> augmented images of the same shape.

    ``standard``: the crop (``pad``: reflect-padded by 1/8 and cropped back, CIFAR's; ``random_resized``:
    a box of ``crop_scale`` of the area, aspect 3/4..4/3, resized back) and a horizontal flip;
    ``trivial`` / ``randaugment`` / ``augmix`` add that policy after the flip (timm's order);
    ``aug_transforms`` is fastai's (flip, rotation, zoom, warp, lighting; no crop). ``color_jitter`` > 0
    adds brightness, contrast and saturation jitter to any of them.
    """

    def __init__(self, settings: AugmentSettings, size: int) -> None:
        super().__init__()
        self.settings = settings
        if settings.policy == "aug_transforms":
            steps = fastai_aug_transforms(settings.aug_transforms_mult)
        else:
            steps = [crop(settings, size), K.RandomHorizontalFlip()]
            if settings.policy in POLICIES:
                steps.append(POLICIES[settings.policy](settings))
            elif settings.policy != "standard":
                raise ValueError(f"unknown augmentation policy {settings.policy!r}")
        if settings.color_jitter > 0:
            strength = settings.color_jitter
            steps.append(K.ColorJitter(brightness=strength, contrast=strength, saturation=strength, p=1.0))
        self.steps = nn.Sequential(*steps)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with one_thread_on_cpu(images.device):
            return self.steps(images).clamp_(0, 1)

    def describe(self) -> str:
        """The steps in words, for the log: ``random resized crop (scale 0.08-1) + flip + RandAugment ...``."""
        settings = self.settings
        if settings.policy == "aug_transforms":
            parts = [f"fastai's aug_transforms (mult {settings.aug_transforms_mult:g})"]
        else:
            low, high = settings.crop_scale
            cropped = f"random resized crop (scale {low:g}-{high:g})" if settings.train_crop == "random_resized" else (
                "padded random crop")  # fmt: skip
            parts = [cropped, "flip"]
            parts += {
                "trivial": ["TrivialAugment"],
                "randaugment": [
                    f"RandAugment {settings.randaugment_ops} ops, magnitude {settings.randaugment_magnitude}/30"
                ],
                "augmix": [f"AugMix severity {settings.augmix_severity}, width {settings.augmix_width}"],
            }.get(settings.policy, [])
        parts += [f"colour jitter {settings.color_jitter:g}"] if settings.color_jitter > 0 else []
        return " + ".join(parts) + ", each image its own draw"


@contextmanager
def one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """One intra-op thread while augmenting on a CPU: a policy is dozens of small kernels on small images,
    which more threads only synchronise (on a busy 2-core machine one batch took 65 ms with one thread,
    950 ms with two); the training step that follows gets its threads back."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def crop(settings: AugmentSettings, size: int) -> nn.Module:
    if settings.train_crop == "random_resized":
        return K.RandomResizedCrop((size, size), scale=tuple(settings.crop_scale), ratio=(3 / 4, 4 / 3))
    return K.RandomCrop((size, size), padding=max(1, size // 8), padding_mode="reflect")


def fastai_aug_transforms(mult: float) -> list[nn.Module]:
    """fastai's ``aug_transforms()`` defaults (fastai/vision/augment.py) as kornia transforms: flip;
    rotation up to 10 degrees x ``mult`` and zoom 1 to 1.1 (p 0.75, reflection padding); warp 0.2 x ``mult``
    (p 0.75); lighting 0.2 x ``mult`` (brightness and contrast, p 0.75)."""
    return [
        K.RandomHorizontalFlip(),
        K.RandomAffine(degrees=10.0 * mult, scale=(1.0, 1.1), padding_mode="reflection", p=0.75),
        K.RandomPerspective(distortion_scale=min(0.2 * mult, 1.0), p=0.75),
        K.ColorJitter(brightness=0.2 * mult, contrast=0.2 * mult, p=0.75),
    ]


class PerImageOperations(nn.Module):
    """Applies to each image the operation it drew: ``chosen[i]`` indexes ``operations`` (-1: none).

    Each operation is one kornia policy holding that operation alone, called once on the images
    that drew it, so its magnitude follows kornia's rules and its random parameters stay per image.
    """

    def __init__(self, operations: list[nn.Module]) -> None:
        super().__init__()
        self.operations = nn.ModuleList(operations)

    def forward(self, images: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        out = images.clone()
        for index in chosen.unique().tolist():
            if index < 0:
                continue
            rows = (chosen == index).nonzero().squeeze(1).to(images.device)
            out[rows] = self.operations[index](images[rows])
        return out

    def __len__(self) -> int:
        return len(self.operations)


class PerImageRandAugment(nn.Module):
    """RandAugment (Cubuk et al. 2020): ``ops`` different operations per image, in the order drawn, each at
    ``magnitude`` of 30 (kornia's RandAugment policy and magnitude scale)."""

    def __init__(self, ops: int, magnitude: int) -> None:
        super().__init__()
        self.ops = ops
        self.choice = PerImageOperations(
            [RandAugment(n=1, m=magnitude, policy=[entry]) for entry in RANDAUGMENT_POLICY]
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        order = torch.rand(len(images), len(self.choice)).argsort(dim=1)  # distinct operations per image
        for step in range(self.ops):
            images = self.choice(images, order[:, step])
        return images


class PerImageTrivialAugment(nn.Module):
    """TrivialAugment (Müller and Hutter 2021): one operation per image at a magnitude drawn per image."""

    def __init__(self) -> None:
        super().__init__()
        self.choice = PerImageOperations([TrivialAugment(policy=[entry]) for entry in TRIVIALAUGMENT_POLICY])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.choice(images, torch.randint(len(self.choice), (len(images),)))


class PerImageAugMix(nn.Module):
    """AugMix (Hendrycks et al. 2020): per image, ``width`` chains of 1 to 3 operations at ``severity``
    (kornia's magnitude 3 x severity of 30), mixed with Dirichlet(1) weights, then mixed with the image
    itself by a Beta(1, 1) share."""

    def __init__(self, severity: int, width: int) -> None:
        super().__init__()
        self.width = width
        entries = [entry for entry in RANDAUGMENT_POLICY if entry[0][0] in AUGMIX_OPERATIONS]
        self.choice = PerImageOperations([RandAugment(n=1, m=3 * severity, policy=[entry]) for entry in entries])
        self.chain_weights = torch.distributions.Dirichlet(torch.ones(width))
        self.original_share = torch.distributions.Beta(torch.tensor(1.0), torch.tensor(1.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        count = len(images)
        weights = self.chain_weights.sample((count,)).to(images)
        share = self.original_share.sample((count,)).to(images).view(-1, 1, 1, 1)
        depth = torch.randint(1, AUGMIX_MAX_DEPTH + 1, (count,))
        mixed = torch.zeros_like(images)
        for chain in range(self.width):
            augmented = images
            for step in range(AUGMIX_MAX_DEPTH):
                chosen = torch.randint(len(self.choice), (count,)).masked_fill(depth <= step, -1)
                augmented = self.choice(augmented, chosen)
            mixed += weights[:, chain].view(-1, 1, 1, 1) * augmented
        return share * images + (1 - share) * mixed


POLICIES = {
    "trivial": lambda settings: PerImageTrivialAugment(),
    "randaugment": lambda settings: PerImageRandAugment(settings.randaugment_ops, settings.randaugment_magnitude),
    "augmix": lambda settings: PerImageAugMix(settings.augmix_severity, settings.augmix_width),
}
