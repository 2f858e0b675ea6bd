"""A sweep over seeds (``-m ... seed=1,2,3``): each configuration's mean over its seeds with a 95 % interval,
and the paired test of the best two, from the job folders alone.

A configuration is a job's swept values other than ``seed``. Its interval is the bootstrap over its seeds
and the test images (``selection/significance.py``), from each job's ``test_predictions.npz``; runs
without them (written before this version) get Student's t-interval over their seeds' test accuracies,
and say so. Configurations are ranked by mean best validation accuracy; the first two are compared with
the paired bootstrap on the same test images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from transfer_lightning.config.schemas import StatsSchema
from transfer_lightning.run.test_predictions import ImageResults, read_test_predictions
from transfer_lightning.selection.significance import (
    Interval,
    accuracy_interval,
    comparison_sentence,
    mean_and_t_interval,
    paired_difference,
)

SEED = "seed"
BOOTSTRAP = "bootstrap over seeds and test images"
T_INTERVAL = "t-interval over seeds (no per-image test results)"


@dataclass
class Configuration:
    """The jobs of one combination of swept values (``seed`` aside)."""

    values: dict[str, str]
    jobs: list = field(default_factory=list)  # JobResult
    test: Interval | None = None
    method: str = ""
    images: list[ImageResults] = field(default_factory=list)

    @property
    def label(self) -> str:
        return (
            " ".join(f"{key}={value}" for key, value in self.values.items())
            or "the command's settings (only seed varies)"
        )

    @property
    def completed(self) -> list:
        return [job for job in self.jobs if job.status == "completed" and job.best_val_acc is not None]

    @property
    def val_mean(self) -> float | None:
        values = [job.best_val_acc for job in self.completed]
        return float(np.mean(values)) if values else None


@dataclass
class SeedSummary:
    configurations: list[Configuration]  # best first
    sentence: str


def seed_summary(jobs: list, axes: list[str], stats: StatsSchema | None = None) -> SeedSummary | None:
    """The configurations of a sweep that varies ``seed`` (``axes``: its swept keys), ranked, with intervals and
    the paired sentence; None when the sweep does not vary the seed."""
    if SEED not in axes:
        return None
    stats = stats or StatsSchema()
    others = [key for key in axes if key != SEED]
    groups: dict[tuple[str, ...], Configuration] = {}
    for job in jobs:
        key = tuple(job.values.get(name, "") for name in others)
        groups.setdefault(key, Configuration(dict(zip(others, key, strict=True)))).jobs.append(job)
    for configuration in groups.values():
        _interval(configuration, stats)
    ranked = sorted(groups.values(), key=lambda c: (c.val_mean is None, -(c.val_mean or 0.0), c.label))
    return SeedSummary(ranked, _sentence(ranked, stats))


def markdown_lines(summary: SeedSummary) -> list[str]:
    """The "over seeds" section of ``sweep_report.md``."""
    lines = [
        "## Over seeds, best mean val accuracy first",
        "",
        "| configuration | seeds completed | mean best val acc | mean test acc (95% CI) | interval |",
        "| --- | --- | --- | --- | --- |",
    ]
    for configuration in summary.configurations:
        lines.append(
            f"| `{configuration.label}` | {len(configuration.completed)} of {len(configuration.jobs)} | "
            f"{_percent(configuration.val_mean)} | {_interval_text(configuration.test)} | {configuration.method} |"
        )
    return [*lines, "", f"**{summary.sentence}**"]


def console_lines(summary: SeedSummary) -> list[str]:
    """The same, as aligned text for the end of a sweep and ``sweep_report DIR``."""
    rows = [["configuration", "seeds", "mean best val acc", "mean test acc (95% CI)"]]
    rows += [
        [c.label, f"{len(c.completed)}/{len(c.jobs)}", _percent(c.val_mean), _interval_text(c.test)]
        for c in summary.configurations
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    table = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    return ["Over seeds, best mean val accuracy first:", *table, summary.sentence]


def _interval(configuration: Configuration, stats: StatsSchema) -> None:
    completed = configuration.completed
    images = [read_test_predictions(job.folder) for job in completed]
    if completed and all(result is not None for result in images) and _same_images(images):
        configuration.images = images
        correct = np.stack([result.correct for result in images])
        configuration.test, configuration.method = (
            accuracy_interval(correct, stats.bootstrap_samples, stats.seed),
            BOOTSTRAP,
        )
        return
    accuracies = [job.summary.get("test_acc") for job in completed if job.summary.get("test_acc") is not None]
    if accuracies:
        configuration.test, configuration.method = mean_and_t_interval(accuracies), T_INTERVAL


def _sentence(ranked: list[Configuration], stats: StatsSchema) -> str:
    usable = [c for c in ranked if c.val_mean is not None]
    if len(usable) < 2:
        return "No paired test: it needs two configurations with completed runs."
    first, second = usable[:2]
    if not first.images or not second.images or not _same_images(first.images + second.images):
        return (
            f"No paired test of {first.label} and {second.label}: it needs every run's per-image test results "
            "(test_predictions.npz) on the same test images."
        )
    correct = [np.stack([result.correct for result in c.images]) for c in (first, second)]
    comparison = paired_difference(correct[0], correct[1], stats.bootstrap_samples, stats.seed)
    images = len(first.images[0].labels)
    return comparison_sentence(
        first.label, second.label, comparison, images, (len(correct[0]), len(correct[1])), "best mean val accuracy"
    )


def _same_images(results: list[ImageResults]) -> bool:
    return all(np.array_equal(result.labels, results[0].labels) for result in results)


def _interval_text(interval: Interval | None) -> str:
    return interval.text() if interval is not None else "n/a"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"
