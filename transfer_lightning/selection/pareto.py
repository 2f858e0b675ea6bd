"""``select_pareto.png``: accuracy against speed, one point per candidate, with the Pareto front marked."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only; works without a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

from transfer_lightning.utils.files import atomic_save_figure  # noqa: E402

if TYPE_CHECKING:
    from transfer_lightning.selection.results import CandidateResult

PROBE_COLOR = "#1f77b4"
FINETUNED_COLOR = "#d62728"


def plot_pareto(results: list[CandidateResult], path: Path) -> Path:
    """Probe val accuracy (95 % interval as an error bar) over inference images/s, log scale; the Pareto
    front's candidates ringed and joined; the fine-tuned candidates' test accuracy (mean over seeds, with its
    interval) above their probe."""
    figure, axes = plt.subplots(figsize=(7.5, 5))
    try:
        for result in results:
            probe, speed = result.probe, result.probe.images_per_second
            error = [[100 * (probe.val_acc - probe.val_ci[0])], [100 * (probe.val_ci[1] - probe.val_acc)]]
            axes.errorbar(speed, 100 * probe.val_acc, yerr=error, fmt="o", color=PROBE_COLOR, capsize=3)
            axes.annotate(label(result), (speed, 100 * probe.val_acc), textcoords="offset points", xytext=(6, -12),
                          fontsize=8)  # fmt: skip
            if result.test is not None:
                test = result.test
                error = [[100 * (test.mean - test.low)], [100 * (test.high - test.mean)]]
                axes.errorbar(speed, 100 * test.mean, yerr=error, fmt="s", color=FINETUNED_COLOR, capsize=3)
        front = sorted((r for r in results if r.pareto), key=lambda r: r.probe.images_per_second)
        axes.plot(
            [r.probe.images_per_second for r in front], [100 * r.probe.val_acc for r in front], "--",
            color=PROBE_COLOR, alpha=0.6, marker="o", markersize=14, markerfacecolor="none", label="Pareto front (probe)",
        )  # fmt: skip
        axes.errorbar([], [], fmt="o", color=PROBE_COLOR, label="linear probe: val accuracy (95% CI)")
        if any(r.test is not None for r in results):
            axes.errorbar(
                [], [], fmt="s", color=FINETUNED_COLOR, label="fine-tuned: test accuracy, mean of seeds (95% CI)"
            )
        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(ScalarFormatter())  # 200, not 2 x 10^2
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.set_xlabel("inference images/s on this device (log scale)")
        axes.set_ylabel("accuracy (%)")
        axes.set_title("Accuracy against cost")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8, loc="best")
        figure.tight_layout()
        atomic_save_figure(figure, path, dpi=100)
    finally:
        plt.close(figure)
    return path


def label(result: CandidateResult) -> str:
    """``#2 convnext_nano``: the candidate's position and its model's name."""
    return f"#{result.candidate.index} {result.probe.model.split(' ', 1)[0]}"
