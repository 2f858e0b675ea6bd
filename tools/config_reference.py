"""The docs' configuration reference, generated from the config schemas: never written by hand.

``transfer_lightning/config/schemas.py`` holds one dataclass per config node, each field with its
default, what it accepts (``config/settings.py``: ``Allowed.text``) and its one-line ``doc``;
``conf/<group>/*.yaml`` holds the options of each group. This module turns both into one Markdown page.

It is an MkDocs hook (``mkdocs.yml``: ``hooks``): ``on_files`` adds the page ``configuration.md`` to
the site while it is built, so the reference cannot drift from the schemas. ``python
tools/config_reference.py`` prints the page.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import yaml

import transfer_lightning.config  # noqa: F401 - registers the schemas
from transfer_lightning.config.schemas import SCHEMAS, TOOL_SCHEMAS, PreprocessingSchema, TrainSchema
from transfer_lightning.utils.config_folder import config_folder

PAGE = "configuration.md"
SCHEMA_SOURCE = "transfer_lightning/config/schemas.py"
# the groups a training run composes, in conf/config.yaml's order, and the presets that only set other keys
GROUPS = ("data", "model", "strategy", "optimizer", "scheduler", "loss", "trainer", "callbacks", "logger", "paths")
PRESET_GROUPS = ("recipe", "experiment", "debug", "sweep", "hparams_search", "hydra/launcher")
TOOLS = {
    "evaluate_schema": "python -m transfer_lightning.evaluate",
    "predict_schema": "python -m transfer_lightning.predict",
    "export_schema": "python -m transfer_lightning.export",
    "select_schema": "python -m transfer_lightning.select",
}
_PLAIN_TYPES = {bool: "true | false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}


def reference_markdown(conf: Path | None = None) -> str:
    """The whole page."""
    conf = conf or config_folder()
    parts = [_INTRO, "## Training: `python -m transfer_lightning`\n", _table(TrainSchema, "")]
    for group in GROUPS:
        parts.append(_group_section(conf, group))
    parts.append("## Presets\n\nOptions that set keys of the groups above (`conf/<group>/<option>.yaml`).\n")
    for group in PRESET_GROUPS:
        parts.append(f"### `{group}=`\n\n" + _options_table(conf, group, None))
    for name, command in TOOLS.items():
        parts.append(f"## `{command}`\n\n" + _table(TOOL_SCHEMAS[name], ""))
    parts.append(
        "## The preprocessing contract a checkpoint records\n\n"
        "`hyper_parameters.transfer_lightning.preprocessing` of every checkpoint "
        "([Concepts](concepts.md#the-preprocessing-contract)):\n\n" + _table(PreprocessingSchema, "")
    )
    return "\n".join(parts)


_INTRO = f"""# Configuration reference

Every setting of every command, with its default, what it accepts and what it does. This page is
generated from the config schemas (`{SCHEMA_SOURCE}`) and the option files (`conf/<group>/*.yaml`)
each time the site is built, so it says what the code checks.

Set a key as `key=value` and choose an option as `group=option` on the command line. To see the
config a command would run, with every value resolved from the options you chose:

```bash
python -m transfer_lightning --cfg job strategy=finetune
```

A value the schema does not accept stops the command in its first second with one sentence naming
the key, the value and what is allowed (the "accepts" column). An option's file may set other
defaults than its schema: the "sets" column of each group's options lists them.
"""


def _group_section(conf: Path, group: str) -> str:
    schemas = SCHEMAS[group]
    users = _schema_users(conf, group)
    lines = [f"## `{group}`\n", _options_table(conf, group, schemas)]
    common = _common_base(list(schemas.values()))
    if common is not None:  # the keys every option of the group takes (data.image_size, ...), listed once
        common_file = conf / group / "common.yaml"
        sets = _values_set(common_file, common, None) if common_file.is_file() else ""
        note = f" `conf/{group}/common.yaml` sets {sets}." if sets else ""
        lines.append(
            f"### `{group}.*` of every option: {common.__name__}\n\n{note.strip()}\n\n" + _table(common, f"{group}.")
        )
    for name, schema in schemas.items():
        chosen_by = [option for option, entries in users.items() if any(entry[0] == name for entry in entries)]
        prefix = _prefix(users, group, name)
        used = ", ".join(f"`{group}={option}`" for option in chosen_by)
        own = f" (besides the keys of every option: {common.__name__})" if common is not None else ""
        lines.append(
            f"### `{prefix}*`: {schema.__name__}\n\nUsed by {used}{own}.\n\n" + _table(schema, prefix, skip=common)
        )
    return "\n".join(lines)


def _common_base(schemas: list[type]) -> type | None:
    """A dataclass every schema of a group extends, which is not an option's schema itself (DataSchema)."""
    if len(schemas) < 2:
        return None
    for base in schemas[0].__mro__[1:]:
        if dataclasses.is_dataclass(base) and base not in schemas and all(issubclass(s, base) for s in schemas):
            return base
    return None


def _options_table(conf: Path, group: str, schemas: dict[str, type] | None) -> str:
    rows = ["| option | what | sets |", "| --- | --- | --- |"]
    users = _schema_users(conf, group) if schemas else {}
    for path in sorted((conf / group).glob("*.yaml")):
        if path.stem == "common":  # the keys every option extends, not an option of its own
            continue
        entries = users.get(path.stem) or [(None, None)]
        schema_name, package = entries[0]
        schema = schemas.get(schema_name) if schemas and schema_name else None
        what = _leading_comment(path) or _included(path)
        rows.append(f"| `{group}={path.stem}` | {_cell(what)} | {_values_set(path, schema, package)} |")
    return "\n".join(rows) + "\n"


def _schema_users(conf: Path, group: str) -> dict[str, list[tuple[str, str]]]:
    """``{option: [(schema name, package), ...]}`` from each option's ``- /schema/<group>/<name>@<package>``
    defaults."""
    users: dict[str, list[tuple[str, str]]] = {}
    for path in sorted((conf / group).glob("*.yaml")):
        for entry in _defaults_list(path):
            if entry.startswith(f"/schema/{group}/"):
                name, _, package = entry.removeprefix(f"/schema/{group}/").partition("@")
                users.setdefault(path.stem, []).append((name, package))
    return users


def _defaults_list(path: Path) -> list[str]:
    return [entry for entry in (yaml.safe_load(path.read_text()) or {}).get("defaults", []) if isinstance(entry, str)]


def _included(path: Path) -> str:
    """What an option without a comment of its own composes (``callbacks=default``)."""
    names = [entry for entry in _defaults_list(path) if entry != "_self_" and not entry.startswith("/schema/")]
    return "composes " + ", ".join(names) if names else ""


def _prefix(users: dict[str, list[tuple[str, str]]], group: str, schema_name: str) -> str:
    """The dotted path of the schema's keys: ``data.`` for ``@_here_``, ``callbacks.early_stopping.``."""
    for entries in users.values():
        for name, package in entries:
            if name == schema_name:
                return f"{group}." if package == "_here_" else f"{group}.{package}."
    return f"{group}."


def _values_set(path: Path, schema: type | None, package: str | None) -> str:
    """The values an option's file sets that differ from its schema's defaults (every value without one)."""
    content = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k != "defaults"}
    if package and package != "_here_":
        content = content.get(package) or {}
    defaults = _defaults(schema) if schema else {}
    shown = [
        f"`{key}: {_shown(value)}`"
        for key, value in _flat(content)
        if key not in ("_target_", "_partial_") and (key not in defaults or defaults[key] != value)
    ]
    return ", ".join(shown).replace("|", "\\|")


def _flat(content: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in content.items():
        if isinstance(value, dict) and value:
            items.extend(_flat(value, f"{prefix}{key}."))
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _defaults(schema: type) -> dict[str, Any]:
    instance = schema()
    return {f.name: getattr(instance, f.name) for f in dataclasses.fields(schema)}


def _table(schema: type, prefix: str, skip: type | None = None) -> str:
    """One row per setting of ``schema`` (less those of its base ``skip``, listed elsewhere)."""
    skipped = {field.name for field in dataclasses.fields(skip)} if skip else set()
    rows = [
        f"| `{path}` | `{_shown(_default(field))}` | {_cell(_accepts(field))} | {_cell(field.metadata['doc'])} |"
        for field, path in _documented_fields(schema, prefix)
        if field.name not in skipped
    ]
    if not rows:
        return "No settings.\n"
    return "\n".join(["| key | default | accepts | what |", "| --- | --- | --- | --- |", *rows]) + "\n"


def _default(field: dataclasses.Field) -> Any:
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def _documented_fields(schema: type, prefix: str) -> list[tuple[dataclasses.Field, str]]:
    """Every field with a ``doc`` (the config groups composed into a command's top level have none),
    a nested schema's fields under its name."""
    fields = []
    for field in dataclasses.fields(schema):
        if dataclasses.is_dataclass(field.type):
            fields.extend(_documented_fields(field.type, f"{prefix}{field.name}."))
        elif "doc" in field.metadata:
            fields.append((field, f"{prefix}{field.name}"))
    return fields


def _accepts(field: dataclasses.Field) -> str:
    allowed = field.metadata.get("allowed")
    if allowed is not None:
        return allowed.text
    kinds = [k for k in typing.get_args(field.type) or (field.type,) if k is not type(None)]
    words = [_PLAIN_TYPES.get(typing.get_origin(k) or k, "any value") for k in kinds]
    optional = type(None) in typing.get_args(field.type)
    return " or ".join(words) + (", or null" if optional else "")


def _shown(value: Any) -> str:
    """A value as it is written in YAML or on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    if value == "":
        return '""'
    return str(value)


def _leading_comment(path: Path) -> str:
    """The first sentence of the comment an option's file starts with."""
    words = []
    for line in path.read_text().splitlines():
        text = line[1:] if line.startswith("#") else None
        if text is None or text.startswith("  ") or not text.strip():  # code, an indented example, a blank
            break
        if not text.strip().startswith("@package"):
            words.append(text.strip())
    first = re.split(r"(?<=\.)\s+(?=[A-Z])", " ".join(words), maxsplit=1)[0]
    return first.rstrip(":")


def _cell(text: str) -> str:
    """Text for a table cell: no pipes, no HTML tags or emphasis by accident."""
    for plain, escaped in (("|", "\\|"), ("<", "&lt;"), (">", "&gt;"), ("*", "\\*"), ("\n", " ")):
        text = text.replace(plain, escaped)
    return text


# -- the MkDocs hook ---------------------------------------------------------------------------------
def on_files(files: Any, config: Any) -> Any:
    """Adds the generated page to the site being built."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=reference_markdown()))
    return files


if __name__ == "__main__":
    print(reference_markdown())
