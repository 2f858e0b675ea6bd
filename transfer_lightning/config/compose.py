"""Compose a command's config as Hydra will and check it, turning every refusal into one sentence.

The command line runs this within its first second, before torch loads and before Hydra writes
anything (``utils/cli.py``): a misspelt key or option, a value of the wrong type or outside its
range is one sentence with a did-you-mean and exit status 2.
"""

from __future__ import annotations

from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

import transfer_lightning.config  # noqa: F401 - registers the schemas
from transfer_lightning.config.check import (
    allowed_for,
    check_config,
    closest,
    schema_fields,
    top_level_key_sentence,
    unknown_key_sentence,
)
from transfer_lightning.config.settings import Allowed
from transfer_lightning.utils.errors import UserError, first_line

# Hydra sets these when it runs; a composition outside a run gives them a placeholder.
_RUNTIME_PATHS = {"paths.root_dir": ".", "paths.output_dir": "outputs"}
_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def compose_checked(config_dir: Path, config_name: str, overrides: list[str], values: bool = True) -> DictConfig:
    """The checked config of ``overrides``; ``UserError`` naming the first thing that is wrong. ``values=False``
    checks only what composing checks (keys, options, types), not the allowed values."""
    given = {override.split("=", 1)[0].lstrip("+~") for override in overrides}
    placeholders = [f"{key}={Path(value).absolute()}" for key, value in _RUNTIME_PATHS.items() if key not in given]
    try:
        cfg = _compose(config_dir, config_name, [*overrides, *placeholders])
    except Exception as error:  # noqa: BLE001 - every way composition fails gets its sentence
        raise UserError(_sentence(error, config_dir, config_name, overrides, placeholders)) from None
    if values:
        check_config(cfg)
    return cfg


def _compose(config_dir: Path, config_name: str, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            return compose(config_name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def _sentence(error: Exception, config_dir: Path, name: str, overrides: list[str], extra: list[str]) -> str:
    cause = error.__cause__ or error
    if isinstance(error, OverrideParseException):
        return f"cannot read the command line: {first_line(error)}"
    if str(error).startswith("Multiple values for "):  # +experiment=x where the defaults already name the group
        group = str(error).removeprefix("Multiple values for ").split(".", 1)[0]
        typed = next((item for item in overrides if item.lstrip("+").startswith(f"{group}=")), group)
        return f"{typed} adds {group}, which the config already has; write {typed.lstrip('+')}"
    if isinstance(error, MissingConfigException) or "Could not find" in str(error) or "Could not load" in str(error):
        return _missing_option(config_dir, overrides) or first_line(error)
    typed = _override_of(overrides, _failed_key(error))
    if typed is None:
        return first_line(cause)
    base = _compose_without_mistakes(config_dir, name, [item for item in overrides if item is not typed], extra)
    if base is None:
        return first_line(cause)
    key, _, value = typed.lstrip("+~").partition("=")
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(base, parent_key) if parent_key else base
    while parent_key and not isinstance(parent, DictConfig):  # trainer.accelerator=cpu where no trainer exists
        parent_key, _, leaf = parent_key.rpartition(".")
        parent = OmegaConf.select(base, parent_key) if parent_key else base
    schema = OmegaConf.get_type(parent) if isinstance(parent, DictConfig) else None
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) or leaf not in (parent or {}):
        return _unknown_key(typed, key, parent, parent_key)
    if isinstance(cause, ValidationError) and is_dataclass(schema):
        field = schema_fields(schema).get(leaf)
        allowed = allowed_for(field) if field else None
        words = allowed.text if allowed else _TYPE_WORDS.get(field.type if field else None, "another value")
        return _with_guess(f"{key}={_parsed_value(typed)!r} is not allowed; expected {words}", value, allowed)
    return first_line(cause)


def _failed_key(error: Exception) -> str | None:
    """The key a failed composition names (``milestones[1]``: the list ``milestones``)."""
    failed_key = getattr(error.__cause__ or error, "full_key", None) or _quoted_key(str(error))
    return failed_key.split("[", 1)[0] if failed_key else None


def _compose_without_mistakes(config_dir: Path, name: str, overrides: list[str], extra: list[str]) -> DictConfig | None:
    """The config of ``overrides`` less every one that fails too (a command with several misspelt keys: the
    first gets its whole sentence); None where a failure names no override."""
    while True:
        try:
            return _compose(config_dir, name, [*overrides, *extra])
        except Exception as error:  # noqa: BLE001 - another mistake: leave it out and compose again
            typed = _override_of(overrides, _failed_key(error))
            if typed is None:
                return None
            overrides = [item for item in overrides if item is not typed]


def _unknown_key(typed: str, key: str, parent: Any, parent_key: str) -> str:
    known = sorted(str(k) for k in parent) if isinstance(parent, DictConfig) else []
    if not parent_key:  # a top-level key: the same sentence as for +key=value
        name, _, value = typed.partition("=")
        return top_level_key_sentence(name, value, known)
    owner = str(parent.get("_target_")) if isinstance(parent, DictConfig) and parent.get("_target_") else parent_key
    return unknown_key_sentence(key, owner, known)


def _missing_option(config_dir: Path, overrides: list[str]) -> str | None:
    """``strategy=finetuen is not an option of strategy; did you mean finetune? (options: ...)``."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException:
        return None
    for override in parsed:
        group = override.key_or_group
        folder = config_dir / group
        if not folder.is_dir():
            continue
        options = sorted(path.stem for path in folder.glob("*.yaml"))
        for value in _values(override):
            if value is not None and str(value) not in options:
                guess = closest(str(value), options)
                hint = f"; did you mean {guess}?" if guess else ""
                return f"{group}={value} is not an option of {group}{hint} (options: {', '.join(options)})"
    return None


def _values(override: Any) -> list[Any]:
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    value = override.value()
    return list(value) if isinstance(value, list) else [value]


def _override_of(overrides: list[str], key: str | None) -> str | None:
    """The override that sets ``key`` or a key below it."""
    if not key:
        return None
    keys = [(item, item.lstrip("+~").split("=", 1)[0]) for item in overrides]
    return next((item for item, name in keys if name == key or name.startswith(f"{key}.")), None)


def _quoted_key(message: str) -> str | None:
    """``Could not override 'optimizer.learning_rate'.`` -> the key."""
    start = message.find("'")
    end = message.find("'", start + 1)
    return message[start + 1 : end] if 0 <= start < end else None


def _parsed_value(typed: str) -> Any:
    try:
        return OverridesParser.create().parse_override(typed).value()
    except OverrideParseException:
        return typed.partition("=")[2]


def _with_guess(sentence: str, value: str, allowed: Allowed | None) -> str:
    words = [str(choice) for choice in allowed.choices()] if allowed else []
    guess = closest(value, words)
    return f"{sentence} (did you mean {guess}?)" if guess else sentence
