"""Whether the cache is exact for a run, which stage it stores, and whether it fits in memory."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from transfer_lightning.models import Backbone
from transfer_lightning.models.backbone import eval_mode

BYTES_PER_VALUE = 4  # features are stored as float32


@dataclass(frozen=True)
class CachePlan:
    """``stage`` > 0: cache the output of the first ``stage`` stages; 0: run live (``reason`` says why)."""

    stage: int
    reason: str
    feature_shape: tuple[int, ...] = ()
    estimated_bytes: int = 0


def cache_plan(
    setting: str | bool,
    frozen_stages: int,
    augment: str,
    network: Backbone,
    image_size: int,
    num_images: int,
    max_gb: float,
    mixup: bool = False,
) -> CachePlan:
    """Decide from the settings alone, before any feature is computed.

    The frozen stages' output is a pure function of the image only when every split reaches
    them unaugmented: validation and test always, training only with ``augment == "none"`` and no
    mixup or CutMix (``mixup``): those mix images, before the frozen stages. Mixing the cached
    features instead would be another regulariser (mixup of hidden features), not image mixup, so
    the cache is off then.
    The whole cache is held in memory, so its size (``num_images`` x feature size x 4 bytes)
    must stay within ``max_gb``.
    """
    if setting is False or str(setting).lower() == "false":
        return CachePlan(0, "off (data.feature_cache=false)")
    if frozen_stages == 0:
        return CachePlan(0, "off: no stage stays frozen for the whole run (nothing to cache)")
    if augment != "none":
        return CachePlan(
            0, f"off: data.augment={augment} changes the training images every epoch, so the frozen output is not fixed"
        )
    if mixup:
        return CachePlan(
            0, "off: mixup / CutMix (data.mixup_alpha, data.cutmix_alpha) mixes the training images before the frozen "
            "stages, so their output is not fixed (cached features are never mixed in their place)",
        )  # fmt: skip
    if not network.supports_forward_from(frozen_stages):
        return CachePlan(
            0,
            f"off: {network.name} ({network.family}) cannot be split after {frozen_stages} of its "
            f"{network.num_stages} stages (its forward is not a chain of modules there; freeze all with "
            "strategy=feature_extract to cache)",
        )
    shape = feature_shape(network, frozen_stages, image_size)
    estimated = num_images * BYTES_PER_VALUE * int(torch.Size(shape).numel())
    if estimated > max_gb * 2**30:
        return CachePlan(
            0,
            f"off: caching stage {frozen_stages} output {tuple(shape)} for {num_images} images needs "
            f"{estimated / 2**30:.3g} GB > data.feature_cache_max_gb={max_gb} (raise it, freeze more stages "
            "or lower data.image_size)",
            shape,
            estimated,
        )
    return CachePlan(frozen_stages, f"on: caching the output of {frozen_stages} frozen stages", shape, estimated)


def feature_shape(network: Backbone, num_stages: int, image_size: int) -> tuple[int, ...]:
    """Shape of one image's output of the first ``num_stages`` stages.

    Found by running the network's own modules with meta tensors in place of its weights and of the image
    (``torch.func.functional_call``): the shapes of a real run without its arithmetic (a real dry run of a
    ResNet-18 at 224 px cost about 0.4 s CPU in every job). A module that computes with a tensor it does
    not register cannot run on meta tensors: then one real image is run, which is exact too.
    """
    with eval_mode(network.model), torch.inference_mode():
        try:
            return _shape_on_meta(network, num_stages, image_size)
        except Exception:  # noqa: BLE001 - any operation meta tensors cannot take: the real dry run below
            pass
        device = next(network.model.parameters()).device
        images = torch.zeros(1, 3, image_size, image_size, device=device)
        return tuple(network.frozen_features(images, num_stages).shape[1:])


class _FrozenStages(nn.Module):
    """The first ``num_stages`` stages of ``network`` as a module (its weights are ``model.*``)."""

    def __init__(self, network: Backbone, num_stages: int) -> None:
        super().__init__()
        self.model = network.model
        self.network, self.num_stages = network, num_stages

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network.frozen_features(images, self.num_stages)


def _shape_on_meta(network: Backbone, num_stages: int, image_size: int) -> tuple[int, ...]:
    stages = _FrozenStages(network, num_stages)
    tensors = {**dict(stages.named_parameters()), **dict(stages.named_buffers())}
    on_meta = {name: torch.empty_like(tensor, device="meta") for name, tensor in tensors.items()}
    images = torch.zeros(1, 3, image_size, image_size, device="meta")
    return tuple(torch.func.functional_call(stages, on_meta, (images,)).shape[1:])
