"""The confusion matrix and the prediction grid lay themselves out without a layout engine: every
label must still land inside the picture, for short, long and many class names."""

from __future__ import annotations

import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from transfer_lightning.analysis.examples import GridExamples
from transfer_lightning.analysis.figures import ConfusionMatrixPlot, confusion_matrix_figure, prediction_grid_figure

CLASS_NAMES = {
    "cifar": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "long": [f"a_rather_long_class_name_{index}" for index in range(3)],
    "many": [f"class{index}" for index in range(30)],
}


def _texts_outside(figure) -> list[str]:
    """Visible non-empty texts whose drawn box leaves the figure (1 px slack)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    width, height = canvas.get_width_height()
    outside = []
    for text in figure.findobj(Text):
        if not text.get_visible() or not text.get_text():
            continue
        box = text.get_window_extent(renderer)
        if box.x0 < -1 or box.y0 < -1 or box.x1 > width + 1 or box.y1 > height + 1:
            outside.append(text.get_text())
    return outside


@pytest.mark.parametrize("names", CLASS_NAMES.values(), ids=CLASS_NAMES.keys())
def test_confusion_matrix_labels_stay_inside_the_picture(names) -> None:
    counts = torch.randint(0, 500, (len(names), len(names)))
    assert _texts_outside(confusion_matrix_figure(counts, names, "val confusion matrix, epoch 12")) == []


@pytest.mark.parametrize("count", [1, 5, 32])
@pytest.mark.parametrize("names", CLASS_NAMES.values(), ids=CLASS_NAMES.keys())
def test_prediction_grid_captions_stay_inside_the_picture(names, count) -> None:
    generator = torch.Generator().manual_seed(count)
    examples = GridExamples(
        torch.rand(count, 3, 224, 224, generator=generator),
        torch.randint(0, len(names), (count,), generator=generator),
        torch.randint(0, len(names), (count,), generator=generator),
        torch.rand(count, generator=generator),
    )
    assert _texts_outside(prediction_grid_figure(examples, names)) == []


def test_a_refilled_confusion_matrix_shows_the_new_counts_only() -> None:
    plot = ConfusionMatrixPlot(CLASS_NAMES["cifar"][:3])
    plot.show(torch.tensor([[5, 1, 0], [0, 7, 2], [3, 0, 4]]), "epoch 0")
    figure = plot.show(torch.tensor([[9, 0, 0], [0, 8, 0], [0, 1, 6]]), "epoch 1")
    cells = sorted(text.get_text() for text in plot.axes.texts)
    assert cells == ["1", "6", "8", "9"]  # zeros blank, nothing left from epoch 0
    assert plot.axes.get_title() == "epoch 1"
    assert plot.image.get_array()[2, 2] == pytest.approx(6 / 7)
    assert _texts_outside(figure) == []
