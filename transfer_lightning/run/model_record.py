"""The versioned record of what built a model, saved in every checkpoint, and its one reader.

``checkpoint["transfer_lightning"] = {"format": 2, ...}`` holds plain values only:

- ``model``: ``{"name", "backbone", "weights"}`` (the family class path and the weights it started from);
- ``strategy``, ``optimizer``, ``scheduler``: the configs they were built from (``_target_`` + settings);
- ``class_names``, ``preprocessing`` (``data/contract.py``), ``data`` (the data config, folders absolute);
- ``loss`` and ``ema``: the training loss's settings and the weight average's (``recipes/``), which a
  resumed run must share (absent from records written before them: plain cross-entropy, no EMA);
- ``lineage`` (where the weights came from, ``models/lineage.py``) and ``strategy_state``.

``read_model_record`` is the one way a checkpoint's record is read, whoever wrote the file: every
value is checked against the schemas (``config/schemas.py``) and every class against the allowlist
(``config/trust.py``) before anything is imported or built. Checkpoints of format 1 (before the
record: Lightning's ``hyper_parameters`` and three top-level keys) are read through
``_from_format_1``, the one converter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from transfer_lightning.config.check import check_config, schema_fields, unknown_key_sentence
from transfer_lightning.config.schemas import SCHEMAS, EMASchema, LossSchema, PreprocessingSchema
from transfer_lightning.config.trust import check_recorded, refuse_unless_allowed
from transfer_lightning.data.contract import Preprocessing
from transfer_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from transfer_lightning.utils.errors import UserError, first_line

RECORD_KEY = "transfer_lightning"
FORMAT = 2
MAX_CLASSES = 100_000
# where a record may name a class to build, and which kind
CLASS_POSITIONS = {"strategy": "strategy", "optimizer": "optimizer", "scheduler": "scheduler", "data": "data"}
_PLAIN = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class ModelRecord:
    """What built a ``TransferClassifier``: enough to rebuild it, and nothing that runs code."""

    model: dict[str, Any]
    strategy: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any] | None
    class_names: list[str]
    preprocessing: Preprocessing
    data: dict[str, Any] | None = None
    loss: dict[str, Any] | None = None  # None: plain cross-entropy (recipes/loss.py)
    ema: dict[str, Any] | None = None  # None: no weight average (recipes/ema.py)
    lineage: dict[str, Any] = field(default_factory=lambda: {"source": "random init"})
    strategy_state: dict[str, Any] = field(default_factory=dict)
    from_file: bool = False  # read from a file: its classes are built through the allowlist only

    @property
    def model_name(self) -> str:
        return str(self.model["name"])

    def with_learning_rate(self, lr: float) -> ModelRecord:
        return replace(self, optimizer={**self.optimizer, "lr": lr})

    def to_dict(self, lineage: dict[str, Any], strategy_state: dict[str, Any]) -> dict[str, Any]:
        """The plain record a checkpoint holds (``torch.load(weights_only=True)`` reads it)."""
        return {
            "format": FORMAT,
            "model": dict(self.model),
            "strategy": _without_partial(self.strategy),
            "optimizer": _without_partial(self.optimizer),
            "scheduler": _without_partial(self.scheduler),
            "class_names": list(self.class_names),
            "preprocessing": self.preprocessing.to_dict(),
            "data": self.data,
            "loss": self.loss or schema_defaults(SETTINGS_SCHEMAS["loss"]),
            "ema": self.ema or schema_defaults(SETTINGS_SCHEMAS["ema"]),
            "lineage": lineage,
            "strategy_state": strategy_state,
        }


def read_model_record(checkpoint: Any, source: str | Path) -> ModelRecord:
    """The checked record of a loaded checkpoint; ``UserError`` (one sentence naming ``source`` and the key)
    for anything that is not a sound record of this framework."""
    return checked_record(*raw_record(checkpoint, source), str(source))


def recorded_state(checkpoint: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The strategy state and the lineage a checkpoint records (plain values; nothing is built from them)."""
    record = checkpoint.get(RECORD_KEY)
    if isinstance(record, Mapping):
        state, lineage, keys = record.get("strategy_state"), record.get("lineage"), _record_keys(RECORD_KEY)
    else:  # format 1
        state, lineage, keys = checkpoint.get("freezing_strategy"), checkpoint.get("weights_lineage"), _FORMAT_1_KEYS
    state = _plain_tree(state or {}, "the checkpoint", keys["strategy_state"])
    return state, _plain_tree(lineage or {"source": "unrecorded"}, "the checkpoint", keys["lineage"])


def raw_record(checkpoint: Any, source: str | Path) -> tuple[Mapping[str, Any], dict[str, str]]:
    """A checkpoint's record as written (format 1 converted), and the key each of its fields has in the file;
    ``UserError`` for a file that holds none. Its values are checked by ``checked_record``."""
    source = str(source)
    if not isinstance(checkpoint, Mapping) or not ({RECORD_KEY, "hyper_parameters"} & set(checkpoint)):
        raise UserError(
            f"{source} is not a transfer_lightning checkpoint (it has no {RECORD_KEY} record); it may come from "
            "another framework. Pass a .ckpt written by python -m transfer_lightning"
        )
    if RECORD_KEY in checkpoint:
        raw, keys = checkpoint[RECORD_KEY], _record_keys(RECORD_KEY)
        if not isinstance(raw, Mapping):
            raise UserError(f"{source} is damaged: {RECORD_KEY} is not a record (a {type(raw).__name__})")
        version = raw.get("format")
        if version != FORMAT:
            newer = isinstance(version, int) and not isinstance(version, bool) and version > FORMAT
            raise UserError(
                f"{source} holds a record of format {version!r}, which this version does not read (it reads "
                f"{FORMAT} and older checkpoints{'; upgrade transfer_lightning' if newer else ''})"
            )
        check_recorded(dict(raw), source, RECORD_KEY, CLASS_POSITIONS)
        return raw, keys
    return _from_format_1(checkpoint, source), _FORMAT_1_KEYS


def checked_record(raw: Mapping[str, Any], keys: dict[str, str], source: str) -> ModelRecord:
    """The record ``raw_record`` read, every value checked (schemas, allowlist, plain values only)."""
    model = _model(raw.get("model"), source, keys["model"])
    return ModelRecord(
        model=model,
        strategy=_built_node(raw.get("strategy"), "strategy", source, keys["strategy"]),
        optimizer=_built_node(raw.get("optimizer"), "optimizer", source, keys["optimizer"]),
        scheduler=_built_node(raw.get("scheduler"), "scheduler", source, keys["scheduler"], optional=True),
        class_names=_class_names(raw.get("class_names"), source, keys["class_names"]),
        preprocessing=_preprocessing(raw.get("preprocessing"), source, keys["preprocessing"]),
        data=_built_node(raw.get("data"), "data", source, keys["data"], optional=True),
        loss=_settings(raw.get("loss"), SETTINGS_SCHEMAS["loss"], source, keys["loss"]),
        ema=_settings(raw.get("ema"), SETTINGS_SCHEMAS["ema"], source, keys["ema"]),
        lineage=_plain_tree(raw.get("lineage") or {"source": "unrecorded"}, source, keys["lineage"]),
        strategy_state=_plain_tree(raw.get("strategy_state") or {}, source, keys["strategy_state"]),
        from_file=True,
    )


def _record_keys(prefix: str) -> dict[str, str]:
    names = ("model", "strategy", "optimizer", "scheduler", "class_names", "preprocessing", "data", "loss", "ema",
             "lineage")  # fmt: skip
    return {name: f"{prefix}.{name}" for name in (*names, "strategy_state")}


_FORMAT_1_KEYS = {
    **_record_keys("hyper_parameters"),
    "lineage": "weights_lineage",
    "strategy_state": "freezing_strategy",
}


def _from_format_1(checkpoint: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A checkpoint written before the record (Lightning's ``hyper_parameters`` + three top-level keys)."""
    hparams = checkpoint["hyper_parameters"]
    if not isinstance(hparams, Mapping):
        raise UserError(f"{source} is damaged: hyper_parameters is not a mapping (a {type(hparams).__name__})")
    check_recorded(dict(hparams), source, "hyper_parameters", CLASS_POSITIONS)
    for key in ("weights_lineage", "freezing_strategy"):
        check_recorded(checkpoint.get(key), source, key, {})
    model = hparams.get("model")
    if isinstance(model, Mapping) and not model.get("backbone") and isinstance(model.get("name"), str):
        model = {**model, "backbone": _family_of(model["name"], source)}  # older checkpoints left it implicit
    missing = [key for key in ("model", "strategy", "class_names", "preprocessing") if key not in hparams]
    if missing:
        raise UserError(
            f"{source} is not a transfer_lightning checkpoint (hyper_parameters lack {', '.join(missing)}); it may "
            "come from another framework. Pass a .ckpt written by python -m transfer_lightning"
        )
    lineage = checkpoint.get("weights_lineage") or {
        "source": "unrecorded",
        "model.weights": model.get("weights") if isinstance(model, Mapping) else None,
    }
    return {
        "format": 1,
        "model": model,
        "strategy": hparams.get("strategy"),
        "optimizer": hparams.get("optimizer") or {"_target_": "torch.optim.Adam", "lr": 1e-3},
        "scheduler": hparams.get("scheduler") or None,
        "class_names": hparams.get("class_names"),
        "preprocessing": hparams.get("preprocessing"),
        "data": hparams.get("data"),
        "lineage": lineage,
        "strategy_state": checkpoint.get("freezing_strategy") or {},
    }


def _family_of(name: str, source: str) -> str:
    from transfer_lightning.models.families import TORCHVISION_FAMILIES

    for family in TORCHVISION_FAMILIES:
        if name in family.names:
            return f"{family.__module__}.{family.__qualname__}"
    raise UserError(f"{source} names model {name!r}, which is not a torchvision model this version builds")


def _model(value: Any, source: str, key: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise UserError(f"{source} is damaged: {key} is not a mapping (a {type(value).__name__})")
    name, backbone, weights = value.get("name"), value.get("backbone"), value.get("weights")
    if not isinstance(name, str) or not name:
        raise UserError(f"{source} is damaged: {key}.name={name!r} is not a model name")
    refuse_unless_allowed(backbone, "backbone", source, f"{key}.backbone")
    if weights is not None and not isinstance(weights, str):
        raise UserError(f"{source} is damaged: {key}.weights={weights!r} is not a weights name or path")
    return {"name": name, "backbone": backbone, "weights": weights}


def _built_node(value: Any, kind: str, source: str, key: str, optional: bool = False) -> dict[str, Any] | None:
    """A recorded strategy / optimizer / scheduler / data config, checked against its class's schema."""
    if optional and not value:
        return None
    return check_recorded_node(value, kind, source, key)


def check_recorded_node(value: Any, kind: str, source: str, key: str) -> dict[str, Any]:
    """A recorded config node that builds a ``kind`` (strategy, data, callbacks ...): its ``_target_`` on the
    allowlist, its settings checked against that class's schema; the node without ``_partial_``."""
    if not isinstance(value, Mapping):
        raise UserError(f"{source} is damaged: {key} is not a mapping (a {type(value).__name__})")
    target = value.get("_target_")
    refuse_unless_allowed(target, kind, source, f"{key}._target_")
    node = {name: item for name, item in value.items() if name != "_partial_"}
    schema = next((s for s in SCHEMAS.get(kind, {}).values() if getattr(s, "_target_", None) == target), None)
    if schema is None:  # a torch.optim class without a schema here: plain values only, its signature decides
        return _plain_tree(node, source, key)
    _check_against_schema(node, schema, source, key)
    return dict(node)


def _check_against_schema(node: Mapping[str, Any], schema: type, source: str, key: str) -> None:
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(dict(node)))
        check_config(merged, key)
    except UserError as error:
        raise UserError(f"{source} is refused: {error}") from None
    except (ConfigKeyError, ConfigAttributeError) as error:  # a key the schema does not have
        name = str(getattr(error, "key", None) or getattr(error, "full_key", None) or "?")
        settings = sorted(name for name in schema_fields(schema) if not name.startswith("_"))
        owner = str(node.get("_target_") or key)
        raise UserError(f"{source} is refused: {unknown_key_sentence(f'{key}.{name}', owner, settings)}") from None
    except OmegaConfBaseException as error:
        name = getattr(error, "full_key", None) or "?"
        raise UserError(
            f"{source} is refused: {key}.{name} holds a value of the wrong type ({first_line(error)})"
        ) from None


SETTINGS_SCHEMAS = {"loss": LossSchema, "ema": EMASchema}  # the settings nodes of a record


def schema_defaults(schema: type) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(schema))


def _settings(value: Any, schema: type, source: str, key: str) -> dict[str, Any]:
    """A recorded settings node (``loss``, ``ema``) checked against its schema; absent: the schema's defaults,
    what a run trained with before the node existed."""
    if value is None:
        return schema_defaults(schema)
    if not isinstance(value, Mapping):
        raise UserError(f"{source} is damaged: {key} is not a mapping (a {type(value).__name__})")
    _check_against_schema(value, schema, source, key)
    return _plain_tree(dict(value), source, key)


def _class_names(value: Any, source: str, key: str) -> list[str]:
    if (
        not isinstance(value, list)
        or not 2 <= len(value) <= MAX_CLASSES
        or not all(isinstance(name, str) and name for name in value)
        or len(set(value)) != len(value)
    ):
        shown = value if not isinstance(value, list) else f"a list of {len(value)}"
        raise UserError(
            f"{source} is damaged: {key} ({str(shown)[:80]}) is not a list of 2 to {MAX_CLASSES:,} different names"
        )
    return list(value)


def _preprocessing(value: Any, source: str, key: str) -> Preprocessing:
    if not isinstance(value, Mapping) or "image_size" not in value:
        raise UserError(f"{source} is damaged: {key} is not a preprocessing contract (image_size, mean, std ...)")
    image_size = value["image_size"]
    complete = {  # an older record left some keys implicit
        "image_size": image_size,
        "resize_size": value.get("resize_size") or image_size,
        "interpolation": value.get("interpolation") or "bilinear",
        "mean": value.get("mean", list(IMAGENET_MEAN)),
        "std": value.get("std", list(IMAGENET_STD)),
        "crop_size": value.get("crop_size"),
    }
    _check_against_schema(complete, PreprocessingSchema, source, key)
    try:
        return Preprocessing.from_dict(complete)
    except UserError as error:
        raise UserError(f"{source} is refused: {key}: {error}") from None


def _plain_tree(value: Any, source: str, key: str, depth: int = 0) -> Any:
    """``value`` if it is made of plain values only (no objects, a bounded depth)."""
    if isinstance(value, _PLAIN):
        return value
    if depth < 32 and isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _plain_tree(v, source, f"{key}.{k}", depth + 1) for k, v in value.items()}
    if depth < 32 and isinstance(value, (list, tuple)):
        return [_plain_tree(v, source, key, depth + 1) for v in value]
    raise UserError(f"{source} is damaged: {key} holds a {type(value).__name__} where plain values belong")


def _without_partial(node: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if not node else {k: v for k, v in node.items() if k != "_partial_"}
