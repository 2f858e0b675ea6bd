"""The one check of a composed config against its schemas (``config/schemas.py``), before torch loads.

OmegaConf has checked each key's type while composing; this walk refuses what types cannot say:
a value outside its allowed range or choices, and a key the schema does not have (``+key=value``
adds one without asking). Every refusal is one sentence naming the key, the value and what is
allowed, with the closest allowed choice or key.
"""

from __future__ import annotations

import difflib
from dataclasses import Field, fields, is_dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from transfer_lightning.config.settings import Allowed
from transfer_lightning.utils.errors import UserError

_HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}


def check_config(cfg: DictConfig, path: str = "") -> None:
    """Raise ``UserError`` for the first key or value of ``cfg`` (at ``path``) that its schema refuses."""
    schema = OmegaConf.get_type(cfg)
    known = schema_fields(schema) if is_dataclass(schema) else None
    for key in cfg:
        key = str(key)
        if key == "hydra" and not path:  # Hydra's own node, which a run's callbacks see: Hydra checked it
            continue
        full_key = f"{path}.{key}" if path else key
        if known is not None and key not in known and not path:
            raise UserError(top_level_key_sentence(f"+{key}", cfg.get(key), sorted(known)))
        if known is not None and key not in known:
            raise UserError(unknown_key_sentence(full_key, owner_of(cfg, path), sorted(known)))
        if OmegaConf.is_interpolation(cfg, key):  # ${paths.data_dir}: checked where its value is set
            continue
        try:
            value = cfg[key]
        except InterpolationResolutionError:
            continue
        allowed = allowed_for(known[key]) if known is not None else None
        if allowed is not None and not allowed.accepts(value):
            raise UserError(value_sentence(full_key, value, allowed))
        if isinstance(value, DictConfig):
            check_config(value, full_key)


def schema_fields(schema: type) -> dict[str, Field]:
    return {field.name: field for field in fields(schema)}


def allowed_for(field: Field) -> Allowed | None:
    return field.metadata.get("allowed")


def closest(word: str, candidates: list[str]) -> str | None:
    """The candidate a user most likely meant by ``word``: an abbreviation of the words of one
    (``learning_rate`` for ``lr``, ``wd`` for ``weight_decay``), else the closest spelling, else none."""
    initials = "".join(part[:1] for part in word.split("_"))
    for candidate in candidates:
        if "_" in word and candidate == initials:
            return candidate
        if "_" in candidate and word == "".join(part[:1] for part in candidate.split("_")):
            return candidate
    guess = difflib.get_close_matches(word, candidates, n=1)
    return guess[0] if guess else None


def owner_of(node: DictConfig, path: str) -> str:
    """What a node configures, for a sentence: its class (``torch.optim.Adam``) or its key."""
    target = node.get("_target_") if "_target_" in node else None
    if target:
        return str(target)
    return path or "this project"


def value_sentence(key: str, value: Any, allowed: Allowed) -> str:
    """``data.augment='heavy' is not allowed; expected none | standard``, with the closest choice."""
    shown = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    sentence = f"{key}={shown!r} is not allowed; expected {allowed.text}"
    words = [str(choice) for choice in allowed.choices() if isinstance(choice, str)]
    guess = closest(shown, words) if isinstance(shown, str) else None
    return f"{sentence} (did you mean {guess}?)" if guess else sentence


def unknown_key_sentence(key: str, owner: str, known: list[str]) -> str:
    """``optimizer.learning_rate is not a setting of torch.optim.Adam; allowed: ...; did you mean lr?``"""
    settings = [name for name in known if name not in _HYDRA_KEYS]
    guess = closest(key.rsplit(".", 1)[-1], settings)
    hint = f"; did you mean {guess}?" if guess else ""
    return f"{key} is not a setting of {owner}; allowed: {', '.join(settings)}{hint}"


def top_level_key_sentence(typed: str, value: Any, known: list[str]) -> str:
    """``+seeed=3 adds a key that is not a setting of this project; did you mean seed=3? (settings: ...)``;
    ``typed`` is the key as typed (``+seeed``, ``seeed``)."""
    key = typed.lstrip("+~")
    guess = closest(key, known)
    shown = "..." if OmegaConf.is_config(value) or isinstance(value, (dict, list)) else value
    verb = "adds" if typed.startswith("+") else "sets"
    hint = f"; did you mean {guess}={shown}?" if guess else ""
    return f"{typed}={shown} {verb} a key that is not a setting of this project{hint} (settings: {', '.join(known)})"
