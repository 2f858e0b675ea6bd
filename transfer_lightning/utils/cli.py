"""What every command-line tool shares: a ``UserError`` is one line on stderr and exit status 2, and the
checks of a command line that need no composed config (they run before Hydra, torch or Lightning load)."""

from __future__ import annotations

import difflib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from transfer_lightning.utils.config_folder import config_folder
from transfer_lightning.utils.errors import UserError
from transfer_lightning.utils.progress import configure_progress

log = logging.getLogger("transfer_lightning")
CONFIG_FOLDER = config_folder()
Result = TypeVar("Result")
Argument = TypeVar("Argument")


def run_tool(task: Callable[[Argument], Result], cfg: Argument) -> Result:
    """Run ``task(cfg)`` (a config, or the command line); a ``UserError`` exits with status 2 and no traceback."""
    if OmegaConf.is_config(cfg):
        configure_progress((cfg.get("trainer") or {}).get("enable_progress_bar"))
    try:
        return task(cfg)
    except UserError as error:
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(2)


def require(cfg: DictConfig, key: str, example: str) -> Any:
    """``cfg[key]``, or a ``UserError`` showing the command with it set."""
    value = cfg.get(key)
    if value is None or value == "":
        raise UserError(f"{key} is required, e.g. {example}")
    return value


def check_command_line(argv: list[str]) -> None:
    """``python -m transfer_lightning``'s checks before Hydra writes anything and before torch loads (the
    first second): a top-level key added with ``+`` must be a setting, a ``resume=<run folder>`` must fit
    that run, and a single run's composed config must pass every check that needs no model
    (``run/validation.py`` ``check_before_torch``: the value rules, ``ckpt_path``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [arg for arg in argv if not arg.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - a malformed override is Hydra's to report
        return
    known = top_level_settings(CONFIG_FOLDER)
    for override in parsed:
        key = override.key_or_group
        if (override.is_add() or override.is_force_add()) and "." not in key and "/" not in key and key not in known:
            refuse_unknown_top_level_key(key, override.value(), known)
    if any(override.key_or_group == "resume" for override in parsed):
        from transfer_lightning.run.resume import check_resume_command  # reads the run's checkpoint: torch

        check_resume_command(argv)
    elif len(overrides) == len(argv) and not any(override.is_sweep_override() for override in parsed):
        _check_single_run(overrides)  # a sweep's jobs (-m) and Hydra's own flags are checked per job


def _check_single_run(overrides: list[str]) -> None:
    """Compose the run's config as Hydra will (its run folder aside) and run the checks that need no model.
    A command Hydra itself refuses (an unknown key or group option) is left for Hydra to report."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from transfer_lightning.run.validation import check_before_torch

    here = {"paths.root_dir": str(Path.cwd()), "paths.output_dir": str(Path.cwd() / "outputs")}  # Hydra's, unset
    given = {override.split("=", 1)[0].lstrip("+~") for override in overrides}
    placeholders = [f"{key}={value}" for key, value in here.items() if key not in given]
    try:
        with initialize_config_dir(config_dir=str(CONFIG_FOLDER), version_base="1.3"):
            cfg = compose("config", overrides=[*overrides, *placeholders])
    except Exception:  # noqa: BLE001 - Hydra's own errors are reported by Hydra, in its words
        return
    finally:
        GlobalHydra.instance().clear()
    check_before_torch(cfg)


def top_level_settings(config_dir: Path) -> set[str]:
    """The top-level keys a training config may hold: ``config.yaml``'s own keys and its config groups."""
    own = set(OmegaConf.load(config_dir / "config.yaml").keys()) - {"defaults"}
    groups = {folder.name for folder in config_dir.iterdir() if folder.is_dir() and not folder.name.startswith("__")}
    return own | groups - {"hydra"}  # (__pycache__: conf/ is also the package transfer_lightning.conf)


def check_top_level_keys(cfg: DictConfig, known: set[str]) -> None:
    """A top-level key added with ``+`` (``+seeed=3``, ``+strategyy=finetune``) that no code reads is a typo:
    Hydra would store it silently and the run would use the default."""
    unknown = sorted(set(cfg.keys()) - known)
    if unknown:
        refuse_unknown_top_level_key(unknown[0], OmegaConf.select(cfg, unknown[0]), known)


def refuse_unknown_top_level_key(key: str, value: Any, known: set[str]) -> None:
    """Raise the one sentence for ``+key=value`` at the top level, with the closest setting."""
    guess = difflib.get_close_matches(key, sorted(known), n=1)
    shown = "..." if OmegaConf.is_config(value) or isinstance(value, (dict, list)) else value
    hint = f"; did you mean {guess[0]}={shown}?" if guess else ""
    raise UserError(
        f"+{key}={shown} adds a key that is not a setting of this project{hint} (settings: {', '.join(sorted(known))})"
    )
