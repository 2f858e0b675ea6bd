"""Best validation accuracy over a sweep's swept keys: a heatmap for two, a line for one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only; works without a display and inside launcher workers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

if TYPE_CHECKING:
    from transfer_lightning.sweeps.results import JobResult


def _sorted_values(values: set[str]) -> list[str]:
    """Numbers in numeric order, anything else alphabetically."""
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


def plot_heatmap(
    jobs: list[JobResult], row_key: str, column_key: str, path: Path, others: list[str] | tuple[str, ...] = ()
) -> Path:
    """One cell per (row value, column value): the best val accuracy of its jobs (the best over the
    ``others`` swept keys, which the title names); ``n/a`` if none."""
    rows = _sorted_values({job.values.get(row_key, "") for job in jobs})
    columns = _sorted_values({job.values.get(column_key, "") for job in jobs})
    grid = np.full((len(rows), len(columns)), np.nan)
    for job in jobs:
        if job.best_val_acc is not None:
            cell = rows.index(job.values.get(row_key, "")), columns.index(job.values.get(column_key, ""))
            grid[cell] = max(job.best_val_acc, np.nan_to_num(grid[cell], nan=-1.0))

    figure, axes = plt.subplots(figsize=(1.4 * len(columns) + 2.5, 0.9 * len(rows) + 2))
    image = axes.imshow(grid, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(len(columns)), columns)
    axes.set_yticks(range(len(rows)), rows)
    axes.set_xlabel(column_key)
    axes.set_ylabel(row_key)
    for (row, column), value in np.ndenumerate(grid):
        label = "n/a" if np.isnan(value) else f"{100 * value:.1f}%"
        axes.text(column, row, label, ha="center", va="center", color="white" if value < 0.6 else "black")
    axes.set_title("best val accuracy" + (f" (best over {', '.join(others)})" if others else ""))
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_line(jobs: list[JobResult], key: str, path: Path) -> Path:
    """Best val accuracy (and test accuracy where measured) over the values of the one swept key."""
    values = _sorted_values({job.values.get(key, "") for job in jobs})
    figure, axes = plt.subplots(figsize=(max(4.5, 0.9 * len(values) + 2.5), 3.5))
    for label, read in (("best val acc", lambda job: job.best_val_acc), ("test acc", _test_acc)):
        points = [(values.index(job.values.get(key, "")), read(job)) for job in jobs if read(job) is not None]
        if points:
            points.sort()
            axes.plot([x for x, _ in points], [100 * y for _, y in points], marker="o", label=label)
    axes.set_xticks(range(len(values)), values)
    axes.set_xlabel(key)
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title(f"accuracy over {key}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _test_acc(job: JobResult) -> float | None:
    return job.summary.get("test_acc")
