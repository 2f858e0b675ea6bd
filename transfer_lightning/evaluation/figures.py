"""The two pictures of a classifier: its confusion matrix and a grid of predictions.

Both return a matplotlib ``Figure`` built without pyplot (no global state, no display needed);
save it with ``save_figure`` or hand it to TensorBoard's ``add_figure``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from matplotlib.figure import Figure

from transfer_lightning.evaluation.examples import GridExamples

WRONG_COLOR = "#d62728"
RIGHT_COLOR = "#2ca02c"
_ANNOTATE_MAX_CLASSES = 25  # beyond this the cells are too small for numbers


def confusion_matrix_figure(matrix: torch.Tensor, class_names: list[str], title: str = "Confusion matrix") -> Figure:
    """Rows are true classes, columns predictions; colour = share of the true class, text = count."""
    counts = matrix.detach().cpu().to(torch.long)
    totals = counts.sum(dim=1, keepdim=True).clamp(min=1)
    shares = (counts.float() / totals).numpy()
    size = max(4.0, 0.5 * len(class_names) + 2.0)
    figure = Figure(figsize=(size + 1.0, size), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = range(len(class_names))
    axes.set_xticks(ticks, labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(ticks, labels=class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if len(class_names) <= _ANNOTATE_MAX_CLASSES:
        for row in range(len(class_names)):
            for column in range(len(class_names)):
                color = "white" if shares[row, column] > 0.5 else "black"
                axes.text(column, row, str(int(counts[row, column])), ha="center", va="center", color=color, fontsize=8)
    return figure


def prediction_grid_figure(examples: GridExamples, class_names: list[str], columns: int = 8) -> Figure:
    """Images (``[0, 1]`` pixels) titled with prediction, confidence and truth; wrong ones in red."""
    count = len(examples.targets)
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    figure = Figure(figsize=(1.9 * columns, 2.2 * rows + 0.4), dpi=100, layout="constrained")
    for index in range(count):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(examples.images[index].permute(1, 2, 0).cpu().numpy())
        predicted, target = int(examples.preds[index]), int(examples.targets[index])
        wrong = predicted != target
        color = WRONG_COLOR if wrong else RIGHT_COLOR
        axes.set_title(
            f"pred: {class_names[predicted]} ({100 * float(examples.confidences[index]):.0f}%)\n"
            f"true: {class_names[target]}",
            fontsize=8,
            color=color,
        )
        axes.set_xticks([])
        axes.set_yticks([])
        for spine in axes.spines.values():
            spine.set_edgecolor(color)
            spine.set_linewidth(3 if wrong else 1)
    wrong_count = int((examples.preds != examples.targets).sum())
    figure.suptitle(f"{wrong_count} misclassified (first, most confident first), {count - wrong_count} correct")
    return figure


def save_figure(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
