"""The answer of a sweep: ``sweep_summary.csv``, ``sweep_report.md`` and a plot, from the job folders.

Everything is read from what each job left on disk (``.hydra/overrides.yaml`` and
``run_summary.json``), so a report can be rebuilt for any multirun folder at any time.
"""

from __future__ import annotations

import csv
import io
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from transfer_lightning.run.summary import read_summary
from transfer_lightning.sweeps.seeds import (
    SEED,
    Configuration,
    SeedSummary,
    console_lines,
    markdown_lines,
    seed_summary,
)
from transfer_lightning.utils.files import atomic_write_text

SUMMARY_CSV = "sweep_summary.csv"
REPORT_MD = "sweep_report.md"
HEATMAP_PNG = "sweep_heatmap.png"
SCATTER_PNG = "sweep_scatter.png"
LINE_PNG = "sweep_line.png"
ACCURACY_DIGITS = 4  # significant digits: what a test set of thousands of images can measure
VALUE_DIGITS = 4  # significant digits of a swept number in tables and plots (Optuna draws 16)
# overrides that say how to run a sweep, not what a job is
IGNORED_KEYS = ("resume",)
CSV_COLUMNS = (
    "job",
    "status",
    "best_val_acc",
    "test_acc",
    "epochs",
    "wall_time_s",
    "trainable_params",
    "overrides",
    "error",
)


@dataclass
class JobResult:
    """One job folder of a sweep: its overrides and what its ``run_summary.json`` says."""

    number: int
    folder: Path
    overrides: list[str]
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        # no summary: the job never started, or was killed before it could write one
        return self.summary.get("status", "incomplete")

    @property
    def best_val_acc(self) -> float | None:
        return self.summary.get("best_val_acc")

    @property
    def values(self) -> dict[str, str]:
        return dict(override.split("=", 1) for override in self.overrides if "=" in override)

    def row(self) -> dict[str, Any]:
        params = self.summary.get("params") or {}
        return {
            "job": self.number,
            "status": self.status,
            "best_val_acc": _significant(self.best_val_acc),
            "test_acc": _significant(self.summary.get("test_acc")),
            "epochs": self.summary.get("epochs"),
            "wall_time_s": None if self.summary.get("wall_time_s") is None else round(self.summary["wall_time_s"], 1),
            "trainable_params": params.get("trainable"),
            "overrides": " ".join(self.overrides),
            "error": self.summary.get("error", ""),
        }


def job_overrides(overrides: list[str]) -> list[str]:
    """The overrides that define a job (``resume=...`` only says how it was launched)."""
    return [item for item in overrides if _key(item) not in IGNORED_KEYS]


def collect_jobs(sweep_dir: Path) -> list[JobResult]:
    """Every job folder (``<sweep_dir>/<job number>``), in job order.

    A sweep folder may be someone else's: its files are data, each value checked before use; a job
    whose files are damaged is listed as ``unreadable`` with the reason.
    """
    jobs = []
    for folder in Path(sweep_dir).iterdir():
        overrides_file = folder / ".hydra" / "overrides.yaml"
        if not (folder.is_dir() and folder.name.isdigit() and overrides_file.is_file()):
            continue
        overrides = read_overrides(overrides_file)
        if overrides is None:
            damaged = {"status": "unreadable", "error": f"{overrides_file} is not a list of overrides"}
            jobs.append(JobResult(int(folder.name), folder, [], damaged))
            continue
        jobs.append(JobResult(int(folder.name), folder, job_overrides(overrides), sound_summary(read_summary(folder))))
    return sorted(jobs, key=lambda job: job.number)


def read_overrides(path: Path) -> list[str] | None:
    """A job's ``.hydra/overrides.yaml``: a list of ``key=value`` strings, or None when it is not one."""
    try:
        overrides = yaml.safe_load(path.read_text(errors="replace"))
    except (OSError, yaml.YAMLError):
        return None
    overrides = [] if overrides is None else overrides
    return overrides if isinstance(overrides, list) and all(isinstance(item, str) for item in overrides) else None


_NUMBERS = ("best_val_acc", "test_acc", "wall_time_s")


def sound_summary(summary: dict[str, Any] | None) -> dict[str, Any]:
    """The values of a job's ``run_summary.json`` a report uses, each of its kind; a value of another kind
    makes the job ``unreadable`` (a damaged or edited file), never an error of the report."""
    if not summary:
        return {}
    kept: dict[str, Any] = {}
    problems = []
    for key, value in summary.items():
        if key in _NUMBERS:
            good = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
        elif key in ("epochs", "global_step"):
            good = value is None or (isinstance(value, int) and not isinstance(value, bool))
        elif key in ("status", "error"):
            good = isinstance(value, str)
        elif key == "params":
            good = isinstance(value, dict) and all(isinstance(v, int) for v in value.values())
        elif key == "overrides":
            good = isinstance(value, list) and all(isinstance(item, str) for item in value)
        else:
            continue  # not read by a report
        if good:
            kept[key] = value
        else:
            problems.append(key)
    if problems:
        return {"status": "unreadable", "error": f"run_summary.json holds a damaged {', '.join(problems)}"}
    return kept


def swept_keys(jobs: list[JobResult]) -> list[str]:
    """Keys whose value differs between jobs, in the order they appear on the command line."""
    keys: list[str] = []
    for job in jobs:
        keys += [key for key in job.values if key not in keys]
    return [key for key in keys if len({job.values.get(key) for job in jobs}) > 1]


def shown_value(value: str) -> str:
    """A swept value as tables and plots show it: a decimal number to ``VALUE_DIGITS`` significant digits
    (``0.0003421``, not ``0.00034212345678901``); integers and words as they are. Commands keep it whole."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if value.lstrip("+-").isdigit() else f"{number:.{VALUE_DIGITS}g}"


def ranked(jobs: list[JobResult]) -> list[JobResult]:
    """Best validation accuracy first; jobs without one (failed, incomplete) last."""
    return sorted(jobs, key=lambda job: (job.best_val_acc is None, -(job.best_val_acc or 0.0), job.number))


def best_val_acc(sweep_dir: Path) -> float | None:
    """The sweep's best validation accuracy so far (None before any job measured one)."""
    scores = [job.best_val_acc for job in collect_jobs(sweep_dir) if job.best_val_acc is not None]
    return max(scores, default=None)


def rerun_command(job: JobResult) -> str:
    return " ".join(["python -m transfer_lightning", *(shlex.quote(item) for item in job.overrides)])


def configuration_command(configuration: Configuration) -> str:
    """The sweep of one configuration over the seeds it was run with (``-m ... seed=1,2,3``)."""
    seeds = ",".join(dict.fromkeys(job.values.get(SEED, "") for job in configuration.jobs))
    overrides = [f"{SEED}={seeds}" if _key(item) == SEED else item for item in configuration.jobs[0].overrides]
    return " ".join(["python -m transfer_lightning -m", *(shlex.quote(item) for item in overrides)])


def best_configuration(seeds: SeedSummary | None) -> Configuration | None:
    """The configuration of a sweep over seeds with the best mean best val accuracy (None without one)."""
    best = seeds.configurations[0] if seeds else None
    return best if best is not None and best.val_mean is not None else None


def write_sweep_report(sweep_dir: Path) -> list[Path]:
    """Write the CSV, the markdown report and the plot; returns the files written.

    The plot: a heatmap over the first two swept keys (best over any others) where the jobs form a grid,
    a scatter plot of the jobs where they do not (Optuna's draws of continuous values), a line over one key.
    In a sweep over seeds and other keys, it is over the other keys, each configuration at its mean over its
    seeds: the answer a sweep over seeds is for, not its luckiest seed.
    """
    sweep_dir = Path(sweep_dir)
    jobs = collect_jobs(sweep_dir)
    order = ranked(jobs)
    written = [_write_csv(sweep_dir / SUMMARY_CSV, order)]
    axes = swept_keys(jobs)
    seeds = seed_summary(jobs, axes)  # a sweep over seed=1,2,3: mean and interval per configuration
    plot = _plot(jobs, axes, seeds, sweep_dir)
    written += [plot] if plot else []
    for name in {HEATMAP_PNG, SCATTER_PNG, LINE_PNG} - {plot.name if plot else ""}:
        (sweep_dir / name).unlink(missing_ok=True)  # an earlier report's other kind of plot would mislead
    written.append(_write_markdown(sweep_dir / REPORT_MD, sweep_dir, order, axes, plot, seeds))
    return written


def _plotted_axes(axes: list[str], seeds: SeedSummary | None) -> list[str]:
    """The keys the plot is over: in a sweep over seeds and other keys, the others (each configuration at its
    means over its seeds); else every swept key."""
    return [key for key in axes if key != SEED] if seeds is not None and len(axes) > 1 else axes


def _plot(jobs: list[JobResult], axes: list[str], seeds: SeedSummary | None, sweep_dir: Path) -> Path | None:
    plotted = _plotted_axes(axes, seeds)
    averaged = plotted != axes
    if averaged:  # one point per configuration, at its means over its seeds
        jobs = [
            JobResult(index, sweep_dir, [f"{key}={value}" for key, value in c.values.items()],
                      {"best_val_acc": c.val_mean, "test_acc": c.test.mean if c.test else None,
                       "test_ci": (c.test.low, c.test.high) if c.test else None})
            for index, c in enumerate(seeds.configurations)
        ]  # fmt: skip
    axes = plotted
    if not axes or not any(job.best_val_acc is not None for job in jobs):
        return None
    from transfer_lightning.sweeps.heatmap import forms_a_grid, plot_heatmap, plot_line, plot_scatter

    if len(axes) >= 2 and forms_a_grid(jobs, axes[0], axes[1]):
        return plot_heatmap(jobs, axes[0], axes[1], sweep_dir / HEATMAP_PNG, others=axes[2:], averaged=averaged)
    if len(axes) >= 2:
        return plot_scatter(jobs, axes[0], axes[1], sweep_dir / SCATTER_PNG, others=axes[2:], averaged=averaged)
    return plot_line(jobs, axes[0], sweep_dir / LINE_PNG, averaged=averaged)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def ranking_lines(jobs: list[JobResult]) -> list[str]:
    """The jobs best first, as aligned text: rank, the swept values, best val acc, test acc, epochs,
    wall time, status (plain text, so a pipe or a log file shows every column in full)."""
    axes = swept_keys(jobs)
    header = ["rank", "job", *axes, "best val acc", "test acc", "epochs", "wall time", "status"]
    rows = [header]
    for rank, job in enumerate(ranked(jobs), start=1):
        row = job.row()
        rows.append([
            str(rank) if job.best_val_acc is not None else "-",
            str(job.number),
            *(shown_value(job.values.get(key, "")) for key in axes),
            _percent(job.best_val_acc),
            _percent(job.summary.get("test_acc")),
            "" if row["epochs"] is None else str(row["epochs"]),
            "" if row["wall_time_s"] is None else f"{row['wall_time_s']:.1f} s",
            job.status,
        ])  # fmt: skip
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def print_ranking(sweep_dir: Path) -> None:
    """Print the ranked jobs and the winner's command line (end of a sweep, ``sweep_report DIR``)."""
    jobs = collect_jobs(Path(sweep_dir))
    print(f"Sweep {sweep_dir}: {len(jobs)} jobs, best val accuracy first")
    print("\n".join(ranking_lines(jobs)))
    best = ranked(jobs)[0] if jobs else None
    if best is None or best.best_val_acc is None:
        print("No job finished with a validation accuracy.")
        return
    seeds = seed_summary(jobs, swept_keys(jobs))
    if configuration := best_configuration(seeds):
        print(f"Best configuration: {configuration.label}, mean val acc {_percent(configuration.val_mean)} over "
              f"{len(configuration.completed)} seeds. Re-run it over its seeds with:")  # fmt: skip
        print(configuration_command(configuration))
    else:
        print(f"Winner: job {best.number}, val acc {_percent(best.best_val_acc)}. Re-run it with:")
        print(rerun_command(best))
    if seeds is not None:
        print("\n".join(["", *console_lines(seeds)]))


def _significant(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.{ACCURACY_DIGITS}g}")


def _write_csv(path: Path, jobs: list[JobResult]) -> Path:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(job.row() for job in jobs)
    return atomic_write_text(path, text.getvalue())


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


def _write_markdown(
    path: Path, sweep_dir: Path, jobs: list[JobResult], axes: list[str], plot: Path | None, seeds: SeedSummary | None
) -> Path:
    counts = {status: sum(job.status == status for job in jobs) for status in {job.status for job in jobs}}
    lines = [
        f"# Sweep report: {sweep_dir}",
        "",
        f"{len(jobs)} jobs: " + ", ".join(f"{count} {status}" for status, count in sorted(counts.items())),
        f"Swept: {', '.join(f'`{key}`' for key in axes) or 'nothing (all jobs share their overrides)'}",
        "",
    ]
    best = jobs[0] if jobs and jobs[0].best_val_acc is not None else None
    if configuration := best_configuration(seeds):
        test = configuration.test.text() if configuration.test else "n/a"
        lines += [
            f"## Best configuration: `{configuration.label}`, mean val acc {_percent(configuration.val_mean)} over "
            f"{len(configuration.completed)} seeds (mean test acc {test})",
            "",
            "Re-run it over its seeds:",
            "",
            "```bash",
            configuration_command(configuration),
            "```",
            "",
        ]
    elif best:
        lines += [
            f"## Best: job {best.number}, val acc {_percent(best.best_val_acc)}"
            f" (test acc {_percent(best.summary.get('test_acc')) or 'n/a'})",
            "",
            "Re-run the winner:",
            "",
            "```bash",
            rerun_command(best),
            "```",
            "",
        ]
    else:
        lines += ["No job finished with a validation accuracy.", ""]
    common = [item for item in (jobs[0].overrides if jobs else []) if item.split("=", 1)[0] not in axes]
    lines += [
        "## All jobs, best first",
        "",
        f"Common overrides: `{' '.join(common)}`" if common else "No common overrides.",
        "",
        "| job | " + " | ".join(f"`{key}`" for key in axes) + (" | " if axes else "")
        + "status | best val acc | test acc | epochs | wall time (s) | trainable params |",
        "|" + " --- |" * (len(axes) + 7),
    ]  # fmt: skip
    for job in jobs:
        row = {key: "" if value is None else value for key, value in job.row().items()}
        swept = "".join(f"{shown_value(job.values.get(key, ''))} | " for key in axes)
        lines.append(
            f"| {job.number} | {swept}{job.status} | {_percent(job.best_val_acc)} | {_percent(job.summary.get('test_acc'))} "
            f"| {row['epochs']} | {row['wall_time_s']} | {row['trainable_params']} |"
        )
    if seeds is not None:
        lines += ["", *markdown_lines(seeds)]
    failed = [job for job in jobs if job.status not in ("completed",)]
    if failed:
        lines += ["", "## Jobs that did not complete", ""]
        lines += [
            f"- job {job.number} ({job.status}): {job.summary.get('error') or 'no run_summary.json'}" for job in failed
        ]
    if plot:
        shown = _plotted_axes(axes, seeds)
        over = " x ".join(f"`{key}`" for key in shown[:2])
        what = "Mean best val accuracy over seeds, by" if shown != axes else "Best val accuracy over"
        lines += ["", f"## {what} {over}", "", f"![best val accuracy]({plot.name})"]
    return atomic_write_text(path, "\n".join(lines) + "\n")
