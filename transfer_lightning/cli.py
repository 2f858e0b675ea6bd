"""What every command-line tool shares: a ``UserError`` is one line on stderr and exit status 2."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from omegaconf import DictConfig

from transfer_lightning.errors import UserError
from transfer_lightning.progress import configure_progress

log = logging.getLogger("transfer_lightning")
Result = TypeVar("Result")


def run_tool(task: Callable[[DictConfig], Result], cfg: DictConfig) -> Result:
    """Run ``task(cfg)``; a ``UserError`` exits with status 2 and no traceback."""
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
