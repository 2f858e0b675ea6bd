"""The two pictures of a classifier: its confusion matrix and a grid of predictions.

Both return a matplotlib ``Figure`` built without pyplot (no global state, no display needed);
save it with ``utils/files.py`` ``atomic_save_figure`` or hand it to TensorBoard's ``add_figure``.

They are drawn during training (every validation epoch), so their margins are computed from the
label lengths instead of by a layout engine: matplotlib's constrained layout measures every text
on every draw and more than doubled the cost of a figure (profiled: ~0.5 s -> ~0.2 s on 2 CPU cores).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from transfer_lightning.analysis.examples import GridExamples

WRONG_COLOR = "#d62728"
RIGHT_COLOR = "#2ca02c"
_ANNOTATE_MAX_CLASSES = 25  # beyond this the cells are too small for numbers
_CHAR_INCHES = 0.075  # width of one tick-label character at matplotlib's default 10 pt
_LABEL_INCHES = 0.5  # an axis label with its padding
_GRID_CELL_PIXELS = 150  # an image in the prediction grid is 1.5 in at 100 dpi
_GRID_MIN_INCHES = 6.0  # room for the grid's title however few images it shows
_CAPTION_CHAR_INCHES = 0.065  # one character of an 8 pt caption


def _tick_label_inches(class_names: list[str]) -> float:
    return _CHAR_INCHES * max((len(name) for name in class_names), default=1) + 0.15


def confusion_matrix_figure(matrix: torch.Tensor, class_names: list[str], title: str = "Confusion matrix") -> Figure:
    """Rows are true classes, columns predictions; colour = share of the true class, text = count."""
    return ConfusionMatrixPlot(class_names).show(matrix, title)


class ConfusionMatrixPlot:
    """A confusion-matrix figure built once and refilled with each new matrix.

    The axes, tick labels and colour bar are built in the constructor; ``show`` only sets the
    colours, the counts and the title, so the per-epoch figure costs its numbers and its draw.
    Counts of 0 are left blank (a mostly empty off-diagonal reads faster, and draws faster).
    """

    def __init__(self, class_names: list[str]) -> None:
        self.class_names = list(class_names)
        size = max(4.0, 0.5 * len(class_names) + 2.0)
        labels = _tick_label_inches(class_names)
        width, height = size + 1.8 + labels, size + 0.7 * labels
        self.figure = Figure(figsize=(width, height), dpi=100)
        self.figure.subplots_adjust(
            left=(labels + _LABEL_INCHES) / width,
            bottom=(0.71 * labels + _LABEL_INCHES) / height,  # tick labels are rotated 45 degrees
            right=1 - 1.0 / width,  # the colour bar's ticks and label; the bar takes its room from the axes
            top=1 - 0.4 / height,
        )
        self.axes = self.figure.add_subplot()
        classes = len(class_names)
        self.image = self.axes.imshow(torch.zeros(classes, classes).numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
        self.figure.colorbar(self.image, ax=self.axes, fraction=0.046, pad=0.04, label="share of the true class")
        ticks = range(classes)
        self.axes.set_xticks(ticks, labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
        self.axes.set_yticks(ticks, labels=class_names)
        self.axes.set_xlabel("predicted")
        self.axes.set_ylabel("true")
        self.counts: list = []

    def show(self, matrix: torch.Tensor, title: str) -> Figure:
        counts = matrix.detach().cpu().to(torch.long)
        shares = (counts.float() / counts.sum(dim=1, keepdim=True).clamp(min=1)).numpy()
        self.image.set_data(shares)
        self.axes.set_title(title)
        for text in self.counts:
            text.remove()
        self.counts = []
        if len(self.class_names) <= _ANNOTATE_MAX_CLASSES:
            for row, column in counts.nonzero().tolist():
                color = "white" if shares[row, column] > 0.5 else "black"
                count = str(int(counts[row, column]))
                self.counts.append(
                    self.axes.text(column, row, count, ha="center", va="center", color=color, fontsize=8)
                )
        return self.figure


def prediction_grid_figure(
    examples: GridExamples, class_names: list[str], title: str | None = None, columns: int = 8
) -> Figure:
    """Images (``[0, 1]`` pixels) titled with prediction, confidence and truth; wrong ones in red.

    One montage image on one axes with a caption and a coloured frame per cell (32 sub-axes cost
    four times as much to draw).
    """
    count = len(examples.targets)
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    images = examples.images.detach().float().cpu().clamp(0, 1)
    if max(images.shape[-2:]) > _GRID_CELL_PIXELS:  # no more pixels than the figure shows
        scale = _GRID_CELL_PIXELS / max(images.shape[-2:])
        images = F.interpolate(images, scale_factor=scale, mode="bilinear", antialias=True).clamp(0, 1)
    height, width = images.shape[-2:]
    # a cell is the image (1.5 in) with its caption above, as wide as the longest caption needs
    caption_chars = max(len(f"pred: {name} (100%)") for name in class_names)
    cell_inches = max(1.9, _CAPTION_CHAR_INCHES * caption_chars + 0.2)
    pixels_per_inch = width / 1.5
    cell_x, cell_y = round(cell_inches * pixels_per_inch), height + round(0.45 * height)
    gap_x, gap_y = cell_x - width, cell_y - height
    montage = torch.ones(3, rows * cell_y, columns * cell_x)
    figure_height = rows * cell_y / pixels_per_inch + 0.5  # + the figure title
    figure = Figure(figsize=(max(cell_inches * columns, _GRID_MIN_INCHES), figure_height), dpi=100)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0 - 0.5 / figure_height))
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = row * cell_y + gap_y - round(0.1 * height), column * cell_x + gap_x // 2
        montage[:, top : top + height, left : left + width] = images[index]
        predicted, target = int(examples.preds[index]), int(examples.targets[index])
        wrong = predicted != target
        color = WRONG_COLOR if wrong else RIGHT_COLOR
        axes.add_patch(Rectangle((left - 0.5, top - 0.5), width, height, fill=False, edgecolor=color,
                                 linewidth=3 if wrong else 1))  # fmt: skip
        axes.text(
            left + width / 2,
            top - 0.05 * height,
            f"pred: {class_names[predicted]} ({100 * float(examples.confidences[index]):.0f}%)\n"
            f"true: {class_names[target]}",
            fontsize=8,
            color=color,
            ha="center",
            va="bottom",
        )
    axes.imshow(montage.permute(1, 2, 0).numpy(), interpolation="nearest")
    axes.set_axis_off()
    wrong_count = int((examples.preds != examples.targets).sum())
    counts = f"{wrong_count} misclassified (first, most confident first), {count - wrong_count} correct"
    figure.suptitle(f"{title}: {counts}" if title else counts)
    return figure
