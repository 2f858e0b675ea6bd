"""A failed job of a sweep still leaves a ``run_summary.json``, so the sweep report lists it."""

from __future__ import annotations

from pathlib import Path

from transfer_lightning.run.summary import read_summary, write_failure_summary
from transfer_lightning.utils.errors import UserError, first_line


def error_line(error: BaseException) -> str:
    """One line that says what went wrong (the exception type unless it is a user's mistake)."""
    return first_line(error) if isinstance(error, UserError) else f"{type(error).__name__}: {first_line(error)}"


def write_failed_summary(run_dir: Path | str, error: BaseException, overrides: list[str]) -> Path | None:
    """``run_summary.json`` with ``status: failed`` and the error line, unless the run already
    recorded this failure itself (``faults.recorded_outcome`` writes a richer one: model, strategy,
    epoch and step reached), which is then kept as it is."""
    line = error_line(error)
    earlier = read_summary(Path(run_dir))
    if earlier and earlier.get("status") == "failed" and earlier.get("error") == line:
        return None
    return write_failure_summary(Path(run_dir), "failed", line, overrides=overrides)
