"""``select_report.json``, ``select_report.md`` and ``select_pareto.png`` in the select folder, and the
table and the sentence on the console."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from transfer_lightning.config.schemas import ProbeSchema, StatsSchema
from transfer_lightning.selection.candidates import SelectPlan
from transfer_lightning.selection.finetune import head_override
from transfer_lightning.selection.pareto import plot_pareto
from transfer_lightning.selection.results import CandidateResult, SelectResults
from transfer_lightning.selection.significance import Interval
from transfer_lightning.utils.files import atomic_write_text

REPORT_JSON = "select_report.json"
REPORT_MD = "select_report.md"
PARETO_PNG = "select_pareto.png"
PROTOCOL = (
    "Probe: the frozen backbone's pooled features (feature cache), centred with the training split's mean and "
    "divided by their root mean square; multinomial logistic regression fitted by L-BFGS for each weight decay of probe.weight_decays "
    "(largest first, warm-started); the best val accuracy chooses (ties: the larger weight decay). Intervals: 95% "
    "percentile bootstrap over images (probe: val images; fine-tuned: test images and seeds, both resampled). "
    "Paired test: the difference of the first two fine-tuned candidates' mean test accuracies, bootstrapped with "
    "the same image draw for both and their seeds drawn separately; significant at 5% when its 95% interval "
    "excludes 0. Ranking: fine-tuned candidates by mean best val accuracy, then the rest by probe val accuracy."
)


def write_select_report(
    folder: Path,
    results: SelectResults,
    plan: SelectPlan,
    heads: dict[int, Path | None],
    probe: ProbeSchema,
    stats: StatsSchema,
) -> list[Path]:
    """Write the plot, the JSON and the Markdown report (each atomically); returns them."""
    plot = plot_pareto(results.ranked, Path(folder) / PARETO_PNG)
    winner = winner_command(results, plan, heads)
    report = {
        "select_folder": str(Path(folder).resolve()),
        "protocol": {
            "text": PROTOCOL,
            "probe": {"weight_decays": list(probe.weight_decays), "max_iterations": probe.max_iterations},
            "statistics": {"confidence": 0.95, "bootstrap_samples": stats.bootstrap_samples, "seed": stats.seed},
        },
        "candidates": [_candidate_json(rank, result) for rank, result in enumerate(results.ranked, start=1)],
        "winner": winner,
        "comparison": results.comparison.as_dict() if results.comparison else None,
        "sentence": results.sentence,
        "notes": results.notes,
        "files": {"plot": plot.name},
    }
    written = [plot, atomic_write_text(Path(folder) / REPORT_JSON, json.dumps(report, indent=2) + "\n")]
    written.append(atomic_write_text(Path(folder) / REPORT_MD, report_markdown(report, results)))
    return written


def winner_command(results: SelectResults, plan: SelectPlan, heads: dict[int, Path | None]) -> dict[str, Any] | None:
    """The command that trains the winner again (its best seed, its head from the probe), and its best run."""
    winner = results.winner
    if winner is None:
        return None
    best = winner.best_run()
    seed = best.seed if best else 1
    overrides = [
        *plan.training_overrides(winner.candidate),
        *head_override(heads[winner.candidate.index]),
        f"seed={seed}",
    ]
    return {
        "candidate": winner.candidate.text,
        "command": " ".join(["python -m transfer_lightning", *(shlex.quote(item) for item in overrides)]),
        "run": str(best.folder) if best else None,
        "epochs": best.epochs if best else None,
    }


def table_rows(results: SelectResults) -> list[list[str]]:
    """Header and one row per candidate, best first (the console's and the Markdown's table)."""
    seeds = max((len(r.runs) for r in results.ranked), default=0)
    over = f", mean of {seeds} seed{'s' if seeds > 1 else ''}" if seeds else ""
    rows = [["rank", "candidate", "parameters", "probe val acc (95% CI)", f"fine-tuned test acc{over} (95% CI)",
             "images/s", "Pareto"]]  # fmt: skip
    for rank, result in enumerate(results.ranked, start=1):
        probe = result.probe
        rows.append([
            str(rank),
            result.candidate.text,
            f"{probe.parameters / 1e6:.2f} M",
            Interval(probe.val_acc, *probe.val_ci).text(),
            _finetuned(result),
            f"{probe.images_per_second:,.1f}",
            "yes" if result.pareto else "",
        ])  # fmt: skip
    return rows


def console_report(results: SelectResults, written: list[Path], winner: dict[str, Any] | None) -> str:
    """The table (aligned plain text: a pipe or a log file shows every column), the sentence, the winner."""
    rows = table_rows(results)
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines += ["", results.sentence]
    if winner:
        lines += ["", f"Winner: {winner['candidate']}. Train it again (or longer: add trainer.max_epochs=N) with:",
                  winner["command"]]  # fmt: skip
    lines += [f"Note: {note}" for note in results.notes]
    lines += ["", "Report: " + ", ".join(str(path) for path in written)]
    return "\n".join(lines)


def report_markdown(report: dict[str, Any], results: SelectResults) -> str:
    rows = table_rows(results)
    lines = [
        f"# Which model for this data: {report['select_folder']}",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + " --- |" * len(rows[0]),
        *("| " + " | ".join(f"`{cell}`" if column == 1 else cell for column, cell in enumerate(row)) + " |"
          for row in rows[1:]),
        "",
        f"**{results.sentence}**",
        "",
    ]  # fmt: skip
    winner = report["winner"]
    if winner:
        count = winner.get("epochs")
        epochs = f" (it ran {count} epoch{'s' if count != 1 else ''})" if count is not None else ""
        lines += [
            f"Winner: `{winner['candidate']}`" + (f", best run `{winner['run']}`" if winner["run"] else "") + ".",
            f"Train it again, or longer with `trainer.max_epochs=N`{epochs}:",
            "",
            "```bash",
            winner["command"],
            "```",
            "",
        ]
    lines += [f"![accuracy against cost]({report['files']['plot']})", "", "## Runs", ""]
    for result in results.ranked:
        if not result.finetuned:
            continue
        lines.append(f"- `{result.candidate.text}`:")
        lines += [
            f"  - seed {run.seed}: {run.status}, best val acc {_percent(run.best_val_acc)}, test acc "
            f"{_percent(run.test_acc)}, `{run.folder}`" + (f" ({run.error})" if run.error else "")
            for run in result.runs
        ] or ["  - no runs"]
    lines += ["", "## Protocol", "", report["protocol"]["text"]]
    if results.notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in results.notes)]
    return "\n".join(lines) + "\n"


def _candidate_json(rank: int, result: CandidateResult) -> dict[str, Any]:
    probe = result.probe
    return {
        "rank": rank,
        "candidate": result.candidate.text,
        "index": result.candidate.index,
        "model": probe.model,
        "weights": probe.weights,
        "parameters": probe.parameters,
        "images_per_second": probe.images_per_second,
        "pareto": result.pareto,
        "probe": {
            "val_acc": probe.val_acc,
            "val_ci": probe.val_ci,
            "val_images": probe.val_images,
            "weight_decay": probe.weight_decay,
            "val_acc_per_weight_decay": probe.val_accuracies,
            "test_acc": probe.test_acc,
            "feature_dim": probe.feature_dim,
        },
        "finetune": {
            "finetuned": result.finetuned,
            "val_acc_mean": result.val_mean,
            "test_acc": result.test.as_dict() if result.test else None,
            "runs": [
                {
                    "seed": run.seed,
                    "status": run.status,
                    "folder": str(run.folder),
                    "best_val_acc": run.best_val_acc,
                    "test_acc": run.test_acc,
                    "epochs": run.epochs,
                    "error": run.error or None,
                }
                for run in result.runs
            ],  # fmt: skip
        },
    }


def _finetuned(result: CandidateResult) -> str:
    if not result.finetuned:
        return "-"
    if result.test is not None:
        return result.test.text()
    done = [run.test_acc for run in result.completed if run.test_acc is not None]
    return f"{100 * sum(done) / len(done):.2f}% (no interval)" if done else "no completed run"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"
