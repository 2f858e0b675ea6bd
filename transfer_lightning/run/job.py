"""What Hydra says of the job this process runs: single run or multirun, the group choices, the overrides typed.

Each answer is empty (or False) outside a Hydra job, e.g. when ``train`` is called from Python.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def choices() -> dict[str, str | None]:
    """The option of each config group, e.g. ``{"strategy": "finetune", "recipe": "book", ...}``."""
    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def task_overrides() -> list[str]:
    """The overrides as typed on the command line (a multirun job: its own values), ``hydra.*`` ones excluded."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def launcher_overrides() -> list[str]:
    """The command line's ``hydra.*`` overrides (its launcher, sweep folder ...)."""
    return list(HydraConfig.get().overrides.hydra) if HydraConfig.initialized() else []


def user_searchpath() -> list[str]:
    """``hydra.searchpath=[...]`` naming the config folders the command added (``--config-dir``,
    ``hydra.searchpath``), for a command this job starts or a config it composes; empty when there are none."""
    if not HydraConfig.initialized():
        return []
    added = [
        f"{source.schema}://{str(source.path).split('://', 1)[-1]}"
        for source in HydraConfig.get().runtime.config_sources
        if source.provider == "command-line" or source.provider.startswith("hydra.searchpath")
    ]
    return [f"hydra.searchpath=[{','.join(added)}]"] if added else []


def experiment_preset() -> DictConfig | None:
    """The experiment preset this job composed (``experiment=<name>``), read from the config folder it came from."""
    choice = choices().get("experiment")
    if not choice:
        return None
    sources = HydraConfig.get().runtime.config_sources
    return read_preset(choice, [Path(str(source.path)) for source in sources if source.schema == "file"])


def read_preset(name: str, folders: list[Path | str]) -> DictConfig | None:
    """``experiment/<name>.yaml`` of the first of ``folders`` (paths or ``file://`` search-path entries) that
    has it; None where none has."""
    for folder in folders:
        path = Path(str(folder).removeprefix("file://")) / "experiment" / f"{name}.yaml"
        if path.is_file():
            return OmegaConf.load(path)
    return None
