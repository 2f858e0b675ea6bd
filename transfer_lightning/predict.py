"""``python -m transfer_lightning.predict ckpt_path=... inputs=photo.jpg|folder/``: top-k classes.

Prints a table and writes ``predictions.csv`` (one row per file, unreadable files with their
error). Runs batched on the GPU when present (``trainer.accelerator=auto``).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from transfer_lightning.callbacks import DeviceReport
from transfer_lightning.data.contract import Preprocessing
from transfer_lightning.data.image_files import ImageFileDataset, list_image_files, reason_file_fails
from transfer_lightning.recipes.tta import TTA_WORDS
from transfer_lightning.run.builders import build_trainer
from transfer_lightning.run.checkpoint import load_classifier
from transfer_lightning.utils.cli import check_once, require, tool_main
from transfer_lightning.utils.errors import UserError
from transfer_lightning.utils.files import atomic_write_text

log = logging.getLogger("transfer_lightning")
CSV_FILE = "predictions.csv"


def predict(cfg: DictConfig) -> list[dict[str, Any]]:
    """Top-k predictions for every file of ``cfg.inputs``; returns one row per file."""
    check_once(cfg)
    checkpoint = require(cfg, "ckpt_path", "ckpt_path=outputs/<date>/<time> (a run folder) or its .ckpt")
    inputs = require(cfg, "inputs", "inputs=photo.jpg or inputs=path/to/folder")
    files = list_image_files(inputs)
    module = load_classifier(checkpoint)
    module.tta = cfg.tta  # test-time augmentation (recipes/tta.py)
    if cfg.tta != "none":
        log.info("Test-time augmentation: %s (tta=%s)", TTA_WORDS[cfg.tta], cfg.tta)
    top_k = min(cfg.top_k, len(module.class_names))
    if top_k < cfg.top_k:
        log.info("top_k=%d is more than the model's %d classes: showing all %d", cfg.top_k, top_k, top_k)

    contract = module.record.preprocessing
    dataset = ImageFileDataset(files, contract)
    workers = _workers(cfg.num_workers, len(files), cfg.batch_size)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, num_workers=workers, pin_memory=torch.cuda.is_available())
    trainer = build_trainer(cfg, [DeviceReport()], logger=False)
    outputs = trainer.predict(module, dataloaders=loader)
    probabilities = torch.cat([batch["probs"].cpu() for batch in outputs])
    keys = torch.cat([batch["keys"].cpu() for batch in outputs])

    rows = _rows(files, probabilities, keys, module.class_names, top_k, contract)
    unreadable = [row for row in rows if row["error"]]
    for row in unreadable:
        log.warning("Cannot read %s: %s (skipped)", row["path"], row["error"])
    output_dir = Path(cfg.output_dir)
    path = write_csv(output_dir / CSV_FILE, rows, top_k)
    print_predictions(rows, top_k, cfg.show)
    print(f"Predictions for {len(rows) - len(unreadable)} of {len(rows)} files written to {path}")
    if len(unreadable) == len(rows):
        raise UserError(f"none of the {len(rows)} input files could be read as an image (listed in {path})")
    return rows


def _rows(
    files: list[Path],
    probabilities: torch.Tensor,
    keys: torch.Tensor,
    class_names: list[str],
    top_k: int,
    contract: Preprocessing,
) -> list[dict[str, Any]]:
    values, indices = probabilities.topk(top_k, dim=1)
    rows = []
    for key, top_values, top_indices in zip(keys.tolist(), values.tolist(), indices.tolist(), strict=True):
        index = key if key >= 0 else -1 - key
        row: dict[str, Any] = {"path": str(files[index]), "top": [], "error": ""}
        if key >= 0:
            row["top"] = [(class_names[i], p) for i, p in zip(top_indices, top_values, strict=True)]
        else:
            row["error"] = reason_file_fails(files[index], contract)
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]], top_k: int) -> Path:
    """``path, top1, top1_prob, ..., topK, topK_prob, error``: one row per input file."""
    header = ["path"] + [name for rank in range(1, top_k + 1) for name in (f"top{rank}", f"top{rank}_prob")] + ["error"]
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    for row in rows:
        cells = [value for name, p in row["top"] for value in (name, f"{p:.6f}")]
        cells += [""] * (2 * top_k - len(cells))
        writer.writerow([row["path"], *cells, row["error"]])
    return atomic_write_text(path, text.getvalue())


def print_predictions(rows: list[dict[str, Any]], top_k: int, limit: int, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"Top-{top_k} predictions")
    table.add_column("file", overflow="fold")
    for rank in range(1, top_k + 1):
        table.add_column(f"#{rank}")
    for row in rows[:limit]:
        if row["error"]:
            table.add_row(row["path"], f"[red]unreadable: {row['error']}[/red]", *[""] * (top_k - 1))
        else:
            table.add_row(row["path"], *(f"{name} ({100 * p:.1f}%)" for name, p in row["top"]))
    console.print(table)
    if len(rows) > limit:
        console.print(f"... {len(rows) - limit} more rows in the CSV (show={limit})")


def _workers(setting: int | str, num_files: int, batch_size: int) -> int:
    if setting != "auto":
        return int(setting)
    if num_files <= batch_size:  # one batch: starting worker processes costs more than it saves
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


main = tool_main("predict", predict)


if __name__ == "__main__":
    main()
