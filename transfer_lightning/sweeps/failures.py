"""A failed job of a sweep still leaves a ``run_summary.json``, so the sweep report lists it."""

from __future__ import annotations

from pathlib import Path

from transfer_lightning.errors import UserError
from transfer_lightning.summary import write_summary


def error_line(error: BaseException) -> str:
    """One line that says what went wrong (the exception type unless it is a user's mistake)."""
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else ""
    return message if isinstance(error, UserError) else f"{type(error).__name__}: {message}".rstrip(": ")


def write_failed_summary(run_dir: Path | str, error: BaseException, overrides: list[str]) -> Path:
    """``run_summary.json`` with ``status: failed`` and the error line."""
    return write_summary(Path(run_dir), {"status": "failed", "error": error_line(error), "overrides": overrides})
