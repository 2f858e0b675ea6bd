"""Any timm model: stages from its own ``group_matcher``, head swapped by ``reset_classifier``.

``model=timm model.name=<timm name>``; ``model.weights=pretrained`` loads timm's weights from
the local Hugging Face cache (nothing is downloaded during a run).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from timm.models import group_parameters
from torch import nn

from transfer_lightning.data.contract import Preprocessing
from transfer_lightning.models.backbone import Backbone, eval_mode
from transfer_lightning.models.lineage import RANDOM_INIT, is_random_init, is_run_weights
from transfer_lightning.models.weights import (
    ensure_weights_available,
    is_weights_file,
    load_backbone_state,
    load_weights,
    read_state_dict_file,
)
from transfer_lightning.utils.errors import UserError

PRETRAINED = "pretrained"


class TimmBackbone(Backbone):
    """A timm model cut where timm's ``group_matcher(coarse=True)`` cuts it (stem, stages or blocks).

    Parameters timm groups with nothing (a pre-logits norm) join the last stage; the classifier
    (``get_classifier()``) is the head. Blocks for ``strategy.lr_decay_unit=block`` are the fine
    groups (``coarse=False``). The feature cache splits a timm model after every stage
    (``forward_features`` + pooling), and between stages wherever the rest of ``forward_features`` is a
    chain of modules (``_chain_after``), the forward of a timm model being its own code.
    """

    family = "timm"

    @classmethod
    def check_name(cls, name: str) -> None:
        if not isinstance(name, str) or not timm.is_model(name):
            raise UserError(
                f'model.name={name!r} is not a timm model; list them with python -c "import timm; '
                "print(timm.list_models('convnext*'))\" (e.g. model.name=convnext_tiny)"
            )

    @classmethod
    def create(cls, name: str) -> nn.Module:
        return timm.create_model(name, pretrained=False)

    def stage_layout(self) -> dict[str, list[nn.Module]]:
        parameters = dict(self.model.named_parameters())
        head = {id(p) for p in self.model.get_classifier().parameters()}
        groups = list(group_parameters(self.model, self.model.group_matcher(coarse=True)).values())
        stages: list[list[str]] = []
        for index, names in enumerate(groups):
            kept = [n for n in names if id(parameters[n]) not in head]
            # the unmatched group (timm's last) holds the classifier and what runs just before it
            if index == len(groups) - 1 and len(kept) < len(names) and stages:
                stages[-1].extend(kept)
            elif kept:
                stages.append(kept)
        self._stage_parameter_names: dict[str, list[str]] = {}
        for index, names in enumerate(stages):
            stage = _stage_name(index, names)
            self._stage_parameter_names[stage if stage not in self._stage_parameter_names else f"stage{index}"] = names
        return {
            stage: _covering_modules(self.model, set(names)) for stage, names in self._stage_parameter_names.items()
        }

    def extra_parameters(self, stage: str) -> list[nn.Parameter]:
        covered = {id(p) for module in self._layout[stage] for p in module.parameters()}
        parameters = dict(self.model.named_parameters())
        return [parameters[n] for n in self._stage_parameter_names[stage] if id(parameters[n]) not in covered]

    def block_parameters(self, stage: str) -> list[list[nn.Parameter]]:
        parameters = dict(self.model.named_parameters())
        own = set(self._stage_parameter_names[stage])
        fine = group_parameters(self.model, self.model.group_matcher(coarse=False)).values()
        blocks = [[parameters[n] for n in names if n in own] for names in fine]
        return [block for block in blocks if block]

    def head(self) -> nn.Module:
        return self.model.get_classifier()

    def replace_head(self, num_classes: int) -> None:
        self.model.reset_classifier(num_classes)

    def supports_forward_from(self, num_stages: int) -> bool:
        """After 0 or all stages always; in between where ``forward_features`` runs the rest of the network as
        a plain chain of modules (timm's CNNs and ViTs do), checked on a probe image (see ``_chain_after``)."""
        return num_stages in (0, self.num_stages) or (
            0 < num_stages < self.num_stages and bool(self._chain_after(num_stages))
        )

    def run_stage(self, stage: str, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("a timm model runs whole (forward_features), not stage by stage")

    def frozen_features(self, images: torch.Tensor, num_stages: int) -> torch.Tensor:
        self._check_split(num_stages)
        if num_stages == 0:
            return images
        if num_stages == self.num_stages:
            return self.model.forward_head(self.model.forward_features(images), pre_logits=True)
        return _input_of(self._chain_after(num_stages)[0], self.model.forward_features, images)

    def forward_from(self, features: torch.Tensor, first_stage: int) -> torch.Tensor:
        self._check_split(first_stage)
        if first_stage == 0:
            return self.model(features)
        if first_stage == self.num_stages:
            return self.model.get_classifier()(features)
        x = features
        for module in self._chain_after(first_stage):
            x = module(x)
        return self.model.forward_head(x)

    def _check_split(self, num_stages: int) -> None:
        if not self.supports_forward_from(num_stages):
            raise ValueError(f"{self.name} cannot be split after {num_stages} of its {self.num_stages} stages")

    def _chain_after(self, num_stages: int) -> list[nn.Module]:
        """The modules ``forward_features`` runs after the first ``num_stages`` stages, when they are a chain
        (each takes the previous one's output, the last gives the features); empty when they are not.

        Traced once on a probe image with hooks on the stages' modules and the model's other top-level
        modules; whatever runs before the chain (a ViT's position embedding) stays in the frozen part.
        Accepted only if the split reproduces the model's logits on the probe."""
        if num_stages not in self._chains:
            self._chains[num_stages] = self._traced_chain(num_stages)
        return self._chains[num_stages]

    @functools.cached_property
    def _chains(self) -> dict[int, list[nn.Module]]:
        return {}

    def _traced_chain(self, num_stages: int) -> list[nn.Module]:
        calls, features, probe = self._trace()
        first = {id(module) for module in self._layout[self.stage_names[num_stages]]}
        start = next((i for i, (module, _, _) in enumerate(calls) if id(module) in first), None)
        if start is None or len({id(module) for module, _, _ in calls}) != len(calls):
            return []
        chain = calls[start:]
        linked = all(chain[i + 1][1] is chain[i][2] for i in range(len(chain) - 1)) and chain[-1][2] is features
        if not linked:
            return []
        modules = [module for module, _, _ in chain]
        self._chains[num_stages] = modules  # for the check below, which runs the split
        with torch.no_grad(), eval_mode(self.model):
            split = self.forward_from(self.frozen_features(probe, num_stages), num_stages)
            whole = self.model(probe)
        return modules if torch.allclose(split, whole, rtol=1e-4, atol=1e-5) else []

    def _trace(self) -> tuple[list[tuple[nn.Module, torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor]:
        """``forward_features`` on one probe image: the calls of the hooked modules, in order, with their
        single tensor input and output (a call with more arguments or other outputs ends the trace's use)."""
        stage_modules = [module for stage in self.stage_names for module in self._layout[stage]]
        inside = {id(m) for module in stage_modules for m in module.modules()}
        hooked = stage_modules + [
            child for child in self.model.children() if not any(id(m) in inside for m in child.modules())
        ]
        calls: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] = []

        def record(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            single = len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)
            calls.append((module, args[0] if single else None, output if isinstance(output, torch.Tensor) else None))

        size = self.model.pretrained_cfg.get("input_size", (3, 224, 224))
        parameter = next(self.model.parameters())
        probe = torch.randn(1, *size, generator=torch.Generator().manual_seed(0)).to(parameter)
        handles = [module.register_forward_hook(record, with_kwargs=True) for module in hooked]
        try:
            with torch.no_grad(), eval_mode(self.model):
                features = self.model.forward_features(probe)
        finally:
            for handle in handles:
                handle.remove()
        return calls, features, probe

    # -- weights and preprocessing ----------------------------------------------------------
    @classmethod
    def default_preprocessing(cls, name: str, weights: str | None) -> Preprocessing:
        """From the model's ``pretrained_cfg``: input size, crop ratio, interpolation, mean, std."""
        values = pretrained_config(name)
        image_size = int(values["input_size"][-1])
        return Preprocessing(
            image_size=image_size,
            resize_size=math.floor(image_size / float(values.get("crop_pct") or 1.0)),
            interpolation=str(values.get("interpolation") or "bilinear"),
            mean=tuple(values["mean"]),
            std=tuple(values["std"]),
        )

    def load_weights(self, weights: str | None) -> dict:
        if is_random_init(weights):
            return dict(RANDOM_INIT)
        weights = str(weights)
        head_prefix = self.model.pretrained_cfg["classifier"] + "."
        if weights != PRETRAINED:  # a state-dict file or a run of this framework
            return load_weights(self.model, self.name, weights, head_prefix, self.replace_head)
        path = cached_pretrained_file(self.name, weights)
        load_backbone_state(self.model, read_state_dict_file(path), f"timm {self.name} pretrained", head_prefix)
        return {"source": "timm", "name": self.name, "path": str(path)}

    @classmethod
    def ensure_weights(cls, name: str, weights: str | None):
        cls.check_name(name)
        if is_random_init(weights):
            return None
        if not (is_weights_file(str(weights)) or is_run_weights(str(weights))):
            cached_pretrained_file(name, str(weights))  # pretrained, or a value it names as not allowed
            return None
        return ensure_weights_available(name, str(weights))


def cached_pretrained_file(name: str, weights: str) -> Path:
    """The file of ``name``'s pretrained weights in the local Hugging Face cache, or a ``UserError``."""
    if weights != PRETRAINED:
        raise UserError(
            f"model.weights={weights!r} is not allowed for a timm model; use pretrained, a path to a .pth or "
            ".safetensors state dict, or null for random init"
        )
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.constants import HF_HUB_CACHE

    repo_id = pretrained_config(name).get("hf_hub_id")
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo_id, filename) if repo_id else None
        if isinstance(found, str):
            return Path(found)
    raise UserError(
        f"timm's pretrained weights for {name} ({repo_id or 'no Hugging Face id'}) are not in the local Hugging "
        f"Face cache {HF_HUB_CACHE}; fetch them once where there is network (huggingface-cli download {repo_id}), "
        "or use model.weights=/path/file.pth or .safetensors for a local state dict, or model.weights=null"
    )


def pretrained_config(name: str) -> dict:
    """timm's ``pretrained_cfg`` of ``name`` (its default tag unless the name carries one)."""
    with torch.device("meta"):
        return dict(timm.create_model(name, pretrained=False).pretrained_cfg)


def _stage_name(index: int, names: list[str]) -> str:
    """``stem`` first, then the first parameter's path up to its stage number (``layer1``, ``stages.2``)."""
    if index == 0:
        return "stem"
    parts = names[0].split(".")
    for position, part in enumerate(parts[:-1]):
        if part[-1:].isdigit():
            return ".".join(parts[: position + 1])
    return parts[0] if len(parts) > 1 else f"stage{index}"


def _covering_modules(model: nn.Module, names: set[str]) -> list[nn.Module]:
    """The largest submodules whose parameters all belong to ``names`` (in definition order)."""
    chosen: list[str] = []
    modules: list[nn.Module] = []
    for path, module in model.named_modules():
        if not path or any(path.startswith(parent + ".") for parent in chosen):
            continue
        own = [f"{path}.{n}" for n, _ in module.named_parameters()]
        if own and all(n in names for n in own):
            chosen.append(path)
            modules.append(module)
    return modules


class _Stop(Exception):
    """Raised by the hook of ``_input_of`` once it holds the input it waited for."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value


def _input_of(module: nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The tensor ``module`` receives while ``forward(x)`` runs; the rest of ``forward`` is not computed."""

    def stop(_module: nn.Module, args: tuple) -> None:
        raise _Stop(args[0])

    handle = module.register_forward_pre_hook(stop)
    try:
        forward(x)
    except _Stop as stopped:
        return stopped.value
    finally:
        handle.remove()
    raise RuntimeError(f"{type(module).__name__} did not run in forward_features")
