"""What every command-line tool shares: a ``UserError`` is one line on stderr and exit status 2."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from omegaconf import DictConfig

from transfer_lightning.errors import UserError

log = logging.getLogger("transfer_lightning")
Result = TypeVar("Result")
Argument = TypeVar("Argument")


def run_tool(task: Callable[[Argument], Result], cfg: Argument) -> Result:
    """Run ``task(cfg)`` (a config, or the command line); a ``UserError`` exits with status 2 and no traceback."""
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
