"""Best validation accuracy over a sweep's swept keys: a heatmap (or a scatter plot) for two, a line for one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only; works without a display and inside launcher workers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from transfer_lightning.sweeps.results import shown_value  # noqa: E402
from transfer_lightning.utils.files import atomic_save_figure  # noqa: E402

if TYPE_CHECKING:
    from transfer_lightning.sweeps.results import JobResult


def _sorted_values(values: set[str]) -> list[str]:
    """Numbers in numeric order, anything else alphabetically."""
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


def forms_a_grid(jobs: list[JobResult], row_key: str, column_key: str) -> bool:
    """Whether at least half the cells of the ``row_key`` x ``column_key`` grid hold a job: a grid search does,
    a search that draws continuous values (Optuna) does not, and its heatmap would be mostly empty."""
    rows = {job.values.get(row_key, "") for job in jobs}
    columns = {job.values.get(column_key, "") for job in jobs}
    cells = {(job.values.get(row_key, ""), job.values.get(column_key, "")) for job in jobs}
    return 2 * len(cells) >= len(rows) * len(columns)


MEAN = "mean best val accuracy over seeds"  # the title of a plot of configurations (``averaged``)


def plot_heatmap(
    jobs: list[JobResult],
    row_key: str,
    column_key: str,
    path: Path,
    others: list[str] | tuple[str, ...] = (),
    averaged: bool = False,
) -> Path:
    """One cell per (row value, column value): the best val accuracy of its jobs (the best over the
    ``others`` swept keys, which the title names); ``n/a`` if none. ``averaged``: the jobs are configurations
    at their means over seeds."""
    rows = _sorted_values({job.values.get(row_key, "") for job in jobs})
    columns = _sorted_values({job.values.get(column_key, "") for job in jobs})
    grid = np.full((len(rows), len(columns)), np.nan)
    for job in jobs:
        if job.best_val_acc is not None:
            cell = rows.index(job.values.get(row_key, "")), columns.index(job.values.get(column_key, ""))
            grid[cell] = max(job.best_val_acc, np.nan_to_num(grid[cell], nan=-1.0))

    figure, axes = plt.subplots(figsize=(1.4 * len(columns) + 2.5, 0.9 * len(rows) + 2))
    image = axes.imshow(grid, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(len(columns)), [shown_value(value) for value in columns])
    axes.set_yticks(range(len(rows)), [shown_value(value) for value in rows])
    axes.set_xlabel(column_key)
    axes.set_ylabel(row_key)
    for (row, column), value in np.ndenumerate(grid):
        label = "n/a" if np.isnan(value) else f"{100 * value:.1f}%"
        axes.text(column, row, label, ha="center", va="center", color="white" if value < 0.6 else "black")
    axes.set_title(
        (MEAN if averaged else "best val accuracy") + (f" (best over {', '.join(others)})" if others else "")
    )
    figure.colorbar(image, ax=axes)
    return _save(figure, path)


def plot_scatter(
    jobs: list[JobResult],
    x_key: str,
    y_key: str,
    path: Path,
    others: list[str] | tuple[str, ...] = (),
    averaged: bool = False,
) -> Path:
    """One point per job at its (``x_key``, ``y_key``) values, coloured and labelled by its best val accuracy;
    a job without one is a grey cross. Numbers on numeric axes (logarithmic across two decades or more)."""
    figure, axes = plt.subplots(figsize=(7, 5))
    x = _positions(jobs, x_key, axes.xaxis, axes.set_xscale)
    y = _positions(jobs, y_key, axes.yaxis, axes.set_yscale)
    measured = [index for index, job in enumerate(jobs) if job.best_val_acc is not None]
    missing = [index for index, job in enumerate(jobs) if job.best_val_acc is None]
    accuracy = [jobs[index].best_val_acc for index in measured]
    image = axes.scatter(x[measured], y[measured], c=accuracy, cmap="viridis", vmin=0.0, vmax=1.0, s=60)
    if missing:
        axes.scatter(x[missing], y[missing], marker="x", color="grey", label="no val accuracy")
        axes.legend()
    for index, value in zip(measured, accuracy, strict=True):
        axes.annotate(f"{100 * value:.1f}%", (x[index], y[index]), textcoords="offset points", xytext=(5, 5))
    axes.set_xlabel(x_key)
    axes.set_ylabel(y_key)
    axes.grid(alpha=0.3)
    title = f"{MEAN}, each configuration" if averaged else "best val accuracy of each job"
    axes.set_title(title + (f" (also varying: {', '.join(others)})" if others else ""))
    figure.colorbar(image, ax=axes)
    return _save(figure, path)


def _positions(jobs: list[JobResult], key: str, axis, set_scale) -> np.ndarray:
    """Each job's coordinate for ``key``: its number where every value is one, else the index of its value
    among the sorted values (ticks labelled with the values)."""
    values = [job.values.get(key, "") for job in jobs]
    try:
        numbers = np.array([float(value) for value in values])
    except ValueError:
        names = _sorted_values(set(values))
        axis.set_ticks(range(len(names)), [shown_value(name) for name in names])
        return np.array([names.index(value) for value in values], dtype=float)
    if numbers.min() > 0 and numbers.max() >= 100 * numbers.min():
        set_scale("log")
    return numbers


def plot_line(jobs: list[JobResult], key: str, path: Path, averaged: bool = False) -> Path:
    """Best val accuracy (and test accuracy where measured) over the values of the one swept key; ``averaged``:
    the jobs are configurations at their means over seeds, the test accuracy with its 95 % interval (``test_ci``)."""
    values = _sorted_values({job.values.get(key, "") for job in jobs})
    figure, axes = plt.subplots(figsize=(max(4.5, 0.9 * len(values) + 2.5), 3.5))
    mean = "mean " if averaged else ""
    for label, read in ((f"{mean}best val acc", lambda job: job.best_val_acc), (f"{mean}test acc", _test_acc)):
        measured = sorted(
            ((values.index(job.values.get(key, "")), job) for job in jobs if read(job) is not None), key=lambda p: p[0]
        )
        if not measured:
            continue
        x, y = [x for x, _ in measured], [100 * read(job) for _, job in measured]
        intervals = [job.summary.get("test_ci") for _, job in measured] if read is _test_acc else []
        if intervals and all(intervals):
            error = [[value - 100 * low for value, (low, _) in zip(y, intervals, strict=True)],
                     [100 * high - value for value, (_, high) in zip(y, intervals, strict=True)]]  # fmt: skip
            axes.errorbar(x, y, yerr=error, marker="o", capsize=4, label=f"{label} (95% CI)")
        else:
            axes.plot(x, y, marker="o", label=label)
    axes.set_xticks(range(len(values)), [shown_value(value) for value in values])
    axes.set_xlabel(key)
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title(f"mean accuracy over seeds, by {key}" if averaged else f"accuracy over {key}")
    return _save(figure, path)


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    atomic_save_figure(figure, path, dpi=100)
    plt.close(figure)
    return path


def _test_acc(job: JobResult) -> float | None:
    return job.summary.get("test_acc")
