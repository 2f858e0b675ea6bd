"""The interface every backbone family implements: ordered named stages, a replaceable head.

Strategies, schedules, the feature cache, validation, weights loading, evaluate, predict and
export only talk to this interface; a family (ResNet, ConvNeXt, ViT, timm ...) is one subclass
here plus one YAML in ``conf/model/``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from transfer_lightning.data.contract import Preprocessing
from transfer_lightning.utils.errors import UserError, first_line

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


class Backbone:
    """A network cut into ordered, named stages (from the input) and a head sized to the classes.

    ``forward_from(frozen_features(x, k), k)`` equals ``model(x)`` for every k in 0..N: the last
    stage ends with the pooling, so ``frozen_features(x, N)`` is the vector the head sees.

    Subclasses implement ``create`` (the architecture), ``stage_layout`` (stage name -> modules in
    forward order) and ``head_path`` (dotted name of the classification ``nn.Linear``); they may
    override ``run_stage`` (a stage that is more than its modules in sequence, e.g. a ViT's
    token embedding), ``extra_parameters`` (parameters owned by no submodule of the stage),
    ``stage_blocks`` (blocks for layer-wise learning-rate decay) and ``default_preprocessing``.

    Example::

        class MyNet(TorchvisionBackbone):
            names = ("mynet",)
            head_path = "fc"

            def stage_layout(self):
                return {"stem": [self.model.stem], "body": [self.model.body, self.model.pool, nn.Flatten(1)]}
    """

    names: ClassVar[tuple[str, ...]] = ()  # the model.name values this family builds
    family: ClassVar[str] = ""
    head_path: str = "fc"  # the head nn.Linear, replaced for the data's classes
    head_run_path: str | None = None  # what runs after the last stage (the head and e.g. its dropout)

    def __init__(self, model: nn.Module, name: str) -> None:
        self.model = model
        self.name = name
        self.weights_lineage: dict[str, Any] = {"source": "random init"}  # models/lineage.py
        self._layout = self.stage_layout()

    # -- what a family defines --------------------------------------------------------------
    @classmethod
    def create(cls, name: str) -> nn.Module:
        """The architecture ``name`` with its original head and random init."""
        raise NotImplementedError

    def stage_layout(self) -> dict[str, list[nn.Module]]:
        """Stage name -> the modules that run in it, in forward order (the last ends with pooling)."""
        raise NotImplementedError

    def run_stage(self, stage: str, x: torch.Tensor) -> torch.Tensor:
        for module in self._layout[stage]:
            x = module(x)
        return x

    def extra_parameters(self, stage: str) -> list[nn.Parameter]:
        """Parameters of ``stage`` held by no module of its layout (a ViT's class token)."""
        return []

    def stage_blocks(self, stage: str) -> list[list[nn.Module]]:
        """``stage`` as blocks from the input, for ``strategy.lr_decay_unit=block``.

        Default: every child of an ``nn.Sequential`` of the stage is a block; other modules
        join the block after them (or the last one).
        """
        blocks: list[list[nn.Module]] = []
        pending: list[nn.Module] = []
        for module in self._layout[stage]:
            if isinstance(module, nn.Sequential) and len(module) > 1:
                children = list(module)
                blocks.extend([[*pending, children[0]], *[[child] for child in children[1:]]])
                pending = []
            else:
                pending.append(module)
        if pending:
            if blocks:
                blocks[-1].extend(pending)
            else:
                blocks.append(pending)
        return blocks

    @classmethod
    def default_preprocessing(cls, name: str, weights: str | None) -> Preprocessing:
        """Input size, resize, interpolation, mean and std the weights were trained with."""
        raise NotImplementedError

    @classmethod
    def check_name(cls, name: str) -> None:
        if name not in cls.names:
            raise UserError(
                f"model.name={name!r} is not a {cls.family} model; choose one of {', '.join(cls.names)} "
                "(or pick the family with model=<name>, e.g. model=convnext_tiny)"
            )

    @classmethod
    def stage_names_of(cls, name: str) -> tuple[str, ...]:
        """The stage names of ``name``, built on the meta device (no memory) where the architecture allows."""
        return cls(cls._architecture(name), name).stage_names

    @classmethod
    def check_input_size(cls, name: str, image_size: int | None) -> None:
        """Refuse a ``data.image_size`` the architecture cannot take (a ViT's fixed position embedding):
        one sentence before any data is read, not an assertion in the first training step.

        Asked of the model itself: one forward pass of an empty image, on the meta device where the
        architecture allows (no memory, no arithmetic). ``None`` is the weights' own size, always taken.
        """
        if image_size is None:
            return
        refused = cls._refusal_at(name, image_size)
        if refused is None:
            return
        own = cls.default_preprocessing(name, None).image_size
        fix = (
            f"data.image_size={own} or null (the weights' size)"
            if cls._refusal_at(name, own) is None
            else "another size"
        )
        raise UserError(
            f"model.name={name} does not take data.image_size={image_size} ({first_line(refused)}); set {fix}, "
            "or choose a backbone that takes any size (e.g. model=convnext_tiny)"
        )

    @classmethod
    @functools.lru_cache(maxsize=32)
    def _refusal_at(cls, name: str, image_size: int) -> Exception | None:
        """What ``_architecture(name)`` raises on an ``image_size`` image: asked once per process, family, name
        and size, as the architecture is built once (a meta pass of a ResNet-18 at 224 px cost ~0.05 s a job)."""
        return _refusal(cls._architecture(name).eval(), image_size)

    @classmethod
    @functools.lru_cache(maxsize=8)
    def _architecture(cls, name: str) -> nn.Module:
        """``create(name)`` on the meta device, or on the CPU where building needs real tensors; built once
        per process and family (read only: for its stage names and its input check; a sweep's jobs share it)."""
        try:
            with torch.device("meta"):
                return cls.create(name)
        except NotImplementedError:  # e.g. RegNet computes its widths from tensors while building
            return cls.create(name)

    @classmethod
    def ensure_weights(cls, name: str, weights: str | None) -> Any:
        """Fail before any data is touched if ``weights`` cannot be had (download, file or run).

        Returns the run (``lineage.RunWeights``) a transfer chain starts from, if any."""
        from transfer_lightning.models.weights import ensure_weights_available

        cls.check_name(name)
        return ensure_weights_available(name, weights)

    def load_weights(self, weights: str | None) -> dict[str, Any]:
        """Load ``weights`` (a name, a file, a run, or None) into the model; returns their lineage."""
        from transfer_lightning.models.weights import load_weights

        return load_weights(self.model, self.name, weights, self.head_path + ".", self.replace_head)

    # -- the interface the framework uses ----------------------------------------------------
    @classmethod
    def build(cls, name: str, num_classes: int, weights: str | None, class_names: list[str] | None = None) -> Backbone:
        """``name`` with ``weights`` loaded and a fresh ``num_classes``-way head.

        Weights from a run of this framework keep that run's head when ``class_names`` is its
        very class list (``models/lineage.py``).
        """
        from transfer_lightning.models.lineage import is_random_init

        cls.check_name(name)
        if num_classes < 2:
            raise UserError(f"the data has {num_classes} class(es); a classifier needs at least 2")
        if not is_random_init(weights):
            backbone = cls._loaded_without_random_init(name, num_classes, weights, class_names)
            if backbone is not None:
                return backbone
        return cls._loaded(cls.create(name), name, num_classes, weights, class_names)

    @classmethod
    def _loaded(
        cls, model: nn.Module, name: str, num_classes: int, weights: str | None, class_names: list[str] | None
    ) -> Backbone:
        from transfer_lightning.models.lineage import keeps_head

        backbone = cls(model, name)
        lineage = backbone.weights_lineage = backbone.load_weights(weights)
        if not (lineage.get("source") == "run" and class_names is not None and keeps_head(lineage, class_names)):
            backbone.replace_head(num_classes)
        return backbone

    @classmethod
    def _loaded_without_random_init(
        cls, name: str, num_classes: int, weights: str, class_names: list[str] | None
    ) -> Backbone | None:
        """``build`` of an architecture made on the meta device, the weights' tensors taken as its own: its random
        initialisation, which the weights replace anyway, made a build with a weights file take 0.12 s instead of
        0.07 for resnet18, 0.90 s instead of 0.52 for vit_b_16. None where that would not be the whole model (then
        ``build`` makes it as usual): an architecture that needs real tensors while it is built, tied parameters,
        or a tensor no weights file holds (a buffer or attribute computed while building)."""
        try:
            with torch.device("meta"):
                model = cls.create(name)
        except NotImplementedError:
            return None
        everything = [parameter for _, parameter in model.named_parameters(remove_duplicate=False)]
        saved = {id(tensor) for tensor in model.state_dict(keep_vars=True).values()}
        if len({id(parameter) for parameter in everything}) != len(everything) or _tensors(model) - saved:
            return None
        backbone = cls._loaded(model, name, num_classes, weights, class_names)
        unset = [key for key, tensor in backbone.model.state_dict(keep_vars=True).items() if tensor.is_meta]
        return None if unset else backbone  # (the weights fill every key but the head's, which is made anew)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(self._layout)

    @property
    def num_stages(self) -> int:
        return len(self._layout)

    def head(self) -> nn.Module:
        return self.model.get_submodule(self.head_path)

    def replace_head(self, num_classes: int) -> None:
        """A new ``nn.Linear`` with ``num_classes`` outputs in place of the head."""
        old = self.head()
        parent_path, _, attribute = self.head_path.rpartition(".")
        parent = self.model.get_submodule(parent_path) if parent_path else self.model
        device = None if old.weight.is_meta else old.weight.device  # a head the weights did not fill: made here
        new = nn.Linear(old.in_features, num_classes, device=device, dtype=old.weight.dtype)
        setattr(parent, attribute, new)

    def stage_modules(self, stage: str) -> list[nn.Module]:
        return list(self._layout[stage])

    def stage_parameters(self, stage: str) -> list[nn.Parameter]:
        """All parameters of one stage, or of the head when ``stage == "head"``."""
        if stage == "head":
            return list(self.head().parameters())
        found = [p for module in self._layout[stage] for p in module.parameters()]
        return _unique([*self.extra_parameters(stage), *found])

    def block_parameters(self, stage: str) -> list[list[nn.Parameter]]:
        """The parameters of ``stage`` per block (from the input); together exactly the stage's."""
        blocks = [[p for module in block for p in module.parameters()] for block in self.stage_blocks(stage)]
        blocks = [block for block in blocks if block]
        if self.extra_parameters(stage):
            blocks[0] = [*self.extra_parameters(stage), *blocks[0]]
        return blocks

    def norm_layers(self, stage: str) -> list[nn.Module]:
        """BatchNorm / LayerNorm / GroupNorm layers of ``stage``."""
        return [layer for module in self._layout[stage] for layer in module.modules() if isinstance(layer, NORM_LAYERS)]

    def frozen_state(self, num_stages: int) -> list[torch.Tensor]:
        """Parameters and buffers of the first ``num_stages`` stages (what their output depends on)."""
        tensors: list[torch.Tensor] = []
        for stage in self.stage_names[:num_stages]:
            tensors.extend(self.extra_parameters(stage))
            for module in self._layout[stage]:
                tensors.extend(module.state_dict().values())
        return tensors

    def supports_forward_from(self, num_stages: int) -> bool:
        """Whether ``frozen_features``/``forward_from`` can split the network after ``num_stages``."""
        return 0 <= num_stages <= self.num_stages

    def frozen_features(self, images: torch.Tensor, num_stages: int) -> torch.Tensor:
        """The output of the first ``num_stages`` stages (all of them: the pooled features)."""
        x = images
        for stage in self.stage_names[:num_stages]:
            x = self.run_stage(stage, x)
        return x

    def forward_from(self, features: torch.Tensor, first_stage: int) -> torch.Tensor:
        """Logits from the output of the first ``first_stage`` stages (see ``frozen_features``)."""
        x = features
        for stage in self.stage_names[first_stage:]:
            x = self.run_stage(stage, x)
        return self.model.get_submodule(self.head_run_path or self.head_path)(x)

    def describe(self) -> str:
        return f"{self.name} ({self.family}): {self.num_stages} stages {', '.join(self.stage_names)} + head"


def _refusal(model: nn.Module, image_size: int) -> Exception | None:
    """The error ``model`` raises on a ``image_size`` square image, or None when it takes it."""
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    except NotImplementedError:  # an operation without a meta kernel: the model cannot be asked this way
        return None
    except (AssertionError, RuntimeError, ValueError) as error:  # what a shape check raises
        return error
    return None


def _tensors(model: nn.Module) -> set[int]:
    """The ids of every parameter, buffer and tensor attribute of ``model`` (also in a list, tuple or dict)."""
    found = set()
    for module in model.modules():
        values = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        for value in vars(module).values():
            values.extend(
                value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else [value]
            )
        found |= {id(value) for value in values if isinstance(value, torch.Tensor)}
    return found


def _unique(parameters: list[nn.Parameter]) -> list[nn.Parameter]:
    seen: set[int] = set()
    return [p for p in parameters if not (id(p) in seen or seen.add(id(p)))]


def backbone_class(model: dict[str, Any]) -> type[Backbone]:
    """The family class of a ``model`` config: its ``backbone`` class path, else found by ``name``."""
    from hydra.utils import get_class

    from transfer_lightning.models.families import TORCHVISION_FAMILIES

    path = model.get("backbone")
    if path:
        try:
            return get_class(path)
        except Exception as error:  # noqa: BLE001 - any import failure gets the same advice
            raise UserError(f"model.backbone={path!r} cannot be imported ({error}); check the class path") from error
    name = model.get("name")
    for family in TORCHVISION_FAMILIES:
        if name in family.names:
            return family
    known = ", ".join(n for family in TORCHVISION_FAMILIES for n in family.names)
    raise UserError(
        f"model.name={name!r} is not supported; choose one of {known}, or model=timm model.name=<timm name>"
    )


def build_backbone(
    model: dict[str, Any], num_classes: int, load_pretrained: bool = True, class_names: list[str] | None = None
) -> Backbone:
    """The backbone a ``model`` config (``name``, ``weights``, optional ``backbone``) describes."""
    weights = model.get("weights") if load_pretrained else None
    return backbone_class(model).build(model["name"], num_classes, weights, class_names)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside, and every submodule's own train/eval flag restored afterwards."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training
