"""The one place that writes ``run_summary.json`` and prints the book-style report."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from transfer_lightning.utils.files import atomic_write_text

SUMMARY_FILE = "run_summary.json"


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    """Write ``run_summary.json`` atomically (a kill mid-write leaves no half file)."""
    text = json.dumps(_jsonable(summary), indent=2, ensure_ascii=False) + "\n"
    return atomic_write_text(Path(run_dir) / SUMMARY_FILE, text)


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def print_report(summary: dict[str, Any], console: Console | None = None) -> None:
    """Overall test accuracy, then one line per class (as the book prints it)."""
    console = console or Console()
    test_acc = summary.get("test_acc")
    if test_acc is None:
        console.print("No test accuracy (test was skipped).")
        return
    table = Table(title=f"Test accuracy: {100 * test_acc:.2f}%  ({summary.get('test_split', 'test')} split)")
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    for name, accuracy in (summary.get("test_per_class_acc") or {}).items():
        table.add_row(name, f"{100 * accuracy:.2f}%")
    console.print(table)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_failure_summary(run_dir: Path, status: str, error_line: str, **fields: Any) -> Path | None:
    """``run_summary.json`` for a run that did not complete: ``status`` (``failed``/``interrupted``),
    the one-line reason, and whatever else is known (``fields``). Never raises: it runs while
    something else already went wrong (possibly the disk itself)."""
    try:
        return write_summary(run_dir, {"status": status, "error": error_line, **fields})
    except Exception as error:  # noqa: BLE001 - the original failure matters more than this one
        logging.getLogger(__name__).warning("Could not write %s in %s: %s", SUMMARY_FILE, run_dir, error)
        return None
