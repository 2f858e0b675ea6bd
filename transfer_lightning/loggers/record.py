"""Which tracking-server runs a folder logs to, so that a resumed run (or sweep) continues them.

A run folder's ``logger_runs.json`` holds one entry per logger kind that lives on a server
(``mlflow``: tracking URI, experiment and run id, whether models are logged; ``wandb``: project
and run id). A sweep folder's holds the sweep's parent run. TensorBoard and CSV need none: they
append to files in the folder itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transfer_lightning.utils.files import atomic_write_text

RECORD_FILE = "logger_runs.json"


def read_logger_runs(folder: str | Path) -> dict[str, dict[str, Any]]:
    """The folder's recorded logger runs (empty when it has none)."""
    path = Path(folder) / RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def record_logger_run(folder: str | Path, kind: str, entry: dict[str, Any]) -> Path:
    """Record (or replace) the ``kind`` entry of the folder's ``logger_runs.json``, atomically."""
    runs = {**read_logger_runs(folder), kind: entry}
    Path(folder).mkdir(parents=True, exist_ok=True)
    return atomic_write_text(Path(folder) / RECORD_FILE, json.dumps(runs, indent=2, sort_keys=True) + "\n")
