"""The confusion matrix and the prediction grid lay themselves out in pixels: every label must land inside
the picture, for short, long and many class names, and the cells must show the matrix they were given."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transfer_lightning.analysis.examples import GridExamples
from transfer_lightning.analysis.figures import _blues, confusion_matrix_figure, prediction_grid_figure

CLASS_NAMES = {
    "cifar": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "long": [f"a_rather_long_class_name_{index}" for index in range(3)],
    "many": [f"class{index}" for index in range(30)],
}


def _texts_outside(picture) -> list[str]:
    """Texts whose box leaves the picture, or crosses its 2-pixel border."""
    width, height = picture.image.size
    return [text for text, (x0, y0, x1, y1) in picture.texts if x0 < 2 or y0 < 2 or x1 > width - 2 or y1 > height - 2]


def _overlapping(picture) -> list[tuple[str, str]]:
    """Pairs of texts whose boxes overlap (a caption over its neighbour's, a name over a count)."""
    boxes = picture.texts
    return [
        (a, b)
        for i, (a, (ax0, ay0, ax1, ay1)) in enumerate(boxes)
        for b, (bx0, by0, bx1, by1) in boxes[i + 1 :]
        if ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1
    ]


@pytest.mark.parametrize("names", CLASS_NAMES.values(), ids=CLASS_NAMES.keys())
def test_confusion_matrix_labels_stay_inside_the_picture(names) -> None:
    counts = torch.randint(0, 500, (len(names), len(names)))
    picture = confusion_matrix_figure(counts, names, "val confusion matrix, epoch 12")
    assert _texts_outside(picture) == [] and _overlapping(picture) == []
    assert picture.array().shape == (picture.image.height, picture.image.width, 3)
    assert picture.array().dtype == np.uint8


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
    picture = prediction_grid_figure(examples, names, "test, best.ckpt")
    assert _texts_outside(picture) == [] and _overlapping(picture) == []
    wrong = int((examples.preds != examples.targets).sum())
    assert (
        picture.texts[0][0]
        == f"test, best.ckpt: {wrong} misclassified (first, most confident first), {count - wrong} correct"
    )
    assert len(picture.texts) == 1 + 2 * count  # the heading, then two caption lines per image


def test_a_confusion_matrix_shows_its_counts_and_shares() -> None:
    matrix = torch.tensor([[9, 0, 0], [0, 8, 0], [0, 1, 6]])
    picture = confusion_matrix_figure(matrix, CLASS_NAMES["cifar"][:3], "epoch 1")
    texts = [text for text, _ in picture.texts]
    assert sorted(text for text in texts if text.isdigit()) == ["1", "6", "8", "9"]  # zeros blank
    assert texts[0] == "epoch 1" and "predicted" in texts and "true" in texts
    box = dict(picture.texts)["6"]  # the count of row 2, column 2, drawn at its cell's centre
    x, y = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
    corner = picture.array()[y - 12, x - 12]  # in the cell, clear of the number
    assert corner.tolist() == _blues(np.array([6 / 7]))[0].tolist()


def test_a_confusion_matrix_of_many_classes_has_no_numbers_in_its_cells() -> None:
    picture = confusion_matrix_figure(torch.full((30, 30), 7), CLASS_NAMES["many"], "x")
    assert not any(text.isdigit() for text, _ in picture.texts)
    assert {"class0", "class29"} <= {text for text, _ in picture.texts}


def test_small_images_are_enlarged_sharp_in_the_grid() -> None:
    image = torch.ones(1, 3, 32, 32)
    image[0, :2, 16:] = 0.0  # top half white, bottom half pure blue (a colour no text or frame has)
    examples = GridExamples(image, torch.tensor([0]), torch.tensor([0]), torch.tensor([0.9]))
    blue = (prediction_grid_figure(examples, ["cat"]).array() == [0, 0, 255]).all(axis=2)
    assert blue.sum() == 96 * 48  # 32 x 16 px shown three times as large, nearest pixel: nothing blended
    rows, columns = np.flatnonzero(blue.any(axis=1)), np.flatnonzero(blue.any(axis=0))
    assert (rows.max() - rows.min() + 1, columns.max() - columns.min() + 1) == (48, 96)
