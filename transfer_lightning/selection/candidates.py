"""The candidates of a select and the training config each one composes.

A candidate is a string of training overrides (``"model=timm model.name=convnext_nano"``). Its training
config is composed from, in this order: the ``data.*`` / ``trainer.*`` / ``paths.*`` overrides typed on
the select command line (they apply to every candidate), the candidate's own overrides, then
``finetune_overrides``. The probe reads the model and the data of that config; the fine-tune is that
config, plus the probe's head (``model.head_init``) and a seed. Every candidate is composed and checked
before anything runs: a bad one is one sentence naming it. Nothing here imports torch.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from transfer_lightning.config.compose import compose_checked
from transfer_lightning.utils.config_folder import config_folder
from transfer_lightning.utils.errors import UserError

# select-command keys that reach every candidate's training config (and fine-tune command)
FORWARDED = ("data", "trainer", "paths")
# hydra overrides that choose and set the fine-tunes' launcher
LAUNCHER = ("hydra/launcher", "hydra.launcher")
# keys select sets itself; a candidate or finetune_overrides may not
OWNED = ("seed", "resume", "ckpt_path", "test", "model.head_init")
_NAME_LIMIT = 48


@dataclass(frozen=True)
class Candidate:
    """One entry of ``candidates``: its position, the string as typed, and its overrides."""

    index: int
    text: str
    overrides: tuple[str, ...]

    @property
    def name(self) -> str:
        """A folder name: ``01-timm-convnext_nano`` (the index keeps two candidates of one model apart)."""
        values = "-".join(item.split("=", 1)[-1] for item in self.overrides)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", values).strip("_.-")[:_NAME_LIMIT] or "defaults"
        return f"{self.index:02d}-{slug}"


@dataclass(frozen=True)
class SelectPlan:
    """What a select command asks for, before anything runs: the candidates and the overrides around them."""

    candidates: tuple[Candidate, ...]
    forwarded: tuple[str, ...]
    launcher: tuple[str, ...]
    finetune: tuple[str, ...]
    searchpath: tuple[str, ...] = ()  # hydra.searchpath=[...]: the user's config folders (their own presets)

    @classmethod
    def of(
        cls, cfg: DictConfig, task_overrides: list[str], hydra_overrides: list[str], searchpath: list[str] = ()
    ) -> SelectPlan:
        """The plan of a composed select config and the overrides of its command line; ``searchpath``: the
        ``hydra.searchpath=[...]`` override of the config folders the command added (``--config-dir``)."""
        candidates = tuple(
            Candidate(index, text, tuple(split_overrides(text, f"candidates[{index}]")))
            for index, text in enumerate(cfg.candidates)
        )
        seen: dict[tuple[str, ...], int] = {}
        for candidate in candidates:
            if candidate.overrides in seen:
                raise UserError(
                    f"candidates[{candidate.index}] ({candidate.text}) repeats candidates[{seen[candidate.overrides]}]; "
                    "list each candidate once"
                )
            seen[candidate.overrides] = candidate.index
        finetune = tuple(split_overrides(cfg.finetune_overrides, "finetune_overrides"))
        return cls(
            candidates=candidates,
            forwarded=tuple(item for item in task_overrides if _group(item) in FORWARDED),
            launcher=tuple(item for item in hydra_overrides if _key(item).startswith(LAUNCHER)),
            finetune=finetune,
            searchpath=tuple(searchpath),
        )

    def training_overrides(self, candidate: Candidate) -> list[str]:
        """The overrides of ``candidate``'s training config (without the head and the seed)."""
        return [*self.searchpath, *self.forwarded, *candidate.overrides, *self.finetune]

    def compose(self, candidate: Candidate) -> DictConfig:
        """``candidate``'s checked training config; ``UserError`` naming the candidate and the mistake."""
        try:
            return compose_checked(config_folder(), "config", self.training_overrides(candidate))
        except UserError as error:
            raise UserError(f"candidates[{candidate.index}] ({candidate.text}): {error}") from None


def split_overrides(text: str, setting: str) -> list[str]:
    """The overrides of one string (shell-like quoting: ``model.weights='my folder/best.ckpt'``)."""
    try:
        overrides = shlex.split(str(text))
    except ValueError as error:
        raise UserError(f"{setting}={text!r} cannot be read ({error}); write overrides separated by spaces") from None
    for item in overrides:
        if "=" not in item.lstrip("~"):
            raise UserError(f"{setting}={text!r}: {item!r} is not an override; write key=value or group=option")
        key = _key(item)
        if _group(item) == "hydra" or any(key == owned or key.startswith(f"{owned}.") for owned in OWNED):
            raise UserError(
                f"{setting}={text!r} sets {key}, which select sets itself (seed=1..seeds, the probe's "
                "head, the test, the folders); leave it out"
            )
    return overrides


def hydra_value(text: str | Path) -> str:
    """``text`` as an override's value: quoted when Hydra would read its characters as syntax."""
    text = str(text)
    if re.fullmatch(r"[A-Za-z0-9_./:+-]+", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def _group(override: str) -> str:
    return re.split(r"[./]", _key(override), maxsplit=1)[0]
