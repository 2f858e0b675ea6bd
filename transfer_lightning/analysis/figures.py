"""The two pictures of a classifier: its confusion matrix and a grid of predictions.

Both are drawn straight into pixels with Pillow and returned as a ``Picture``: the RGB image, and
the box of every text on it. They are drawn during training (the val confusion matrix every epoch,
both at the test), where matplotlib's figure and Agg draw cost ~0.1-0.2 s a picture on 2 CPU
cores, most of a cached sweep job's fixed cost (BENCHMARKS.md, "Where the time of one cache-hit
job goes"); Pillow draws one in a few milliseconds. The fonts and colours are matplotlib's own
(DejaVu Sans, the ``Blues`` colour map), so they look like the other plots of a run folder.

Save a picture with ``utils/files.py`` ``atomic_save_figure``; log it with
``callbacks/figure_logging.py`` ``log_picture``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageColor, ImageDraw, ImageFont

from transfer_lightning.analysis.examples import GridExamples

WRONG_COLOR = "#d62728"
RIGHT_COLOR = "#2ca02c"
_FONT_FILE = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
_PAD = 12  # white margin around everything
_TITLE_SIZE = 16
_LABEL_SIZE = 14  # axis labels and class names
_ANNOTATE_MAX_CLASSES = 25  # beyond this the cells are too small for numbers
_MATRIX_PIXELS = 480  # the matrix's side for most class counts
_CELL_PIXELS = (4, 100)  # a cell's smallest and largest side
_GRID_MAX_PIXELS = 150  # a larger image in the prediction grid is scaled down to this
_GRID_MIN_PIXELS = 96  # a smaller one is enlarged (whole multiples, nearest pixel) to at least this
_CAPTION_SIZE = 11


@dataclass
class Picture:
    """An RGB image and every text drawn on it, with its box ``(left, top, right, bottom)`` in pixels."""

    image: Image.Image
    texts: list[tuple[str, tuple[int, int, int, int]]] = field(default_factory=list)

    def array(self) -> np.ndarray:
        """The image as an ``H x W x 3`` uint8 array (what the loggers take)."""
        return np.asarray(self.image)


def confusion_matrix_figure(matrix: torch.Tensor, class_names: list[str], title: str = "Confusion matrix") -> Picture:
    """Rows are true classes, columns predictions; colour = share of the true class, text = count.

    Counts of 0 are left blank (a mostly empty off-diagonal reads faster); past 25 classes the cells
    carry no numbers, and class names are left out where a row is too thin to hold one.
    """
    counts = matrix.detach().cpu().to(torch.long).numpy()
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    classes = len(class_names)
    cell = max(_CELL_PIXELS[0], min(_CELL_PIXELS[1], _MATRIX_PIXELS // max(classes, 1)))
    side = cell * classes
    name_size = min(_LABEL_SIZE, cell - 2)
    names = class_names if name_size >= 7 else []
    names_width = max((_text_width(name, name_size) for name in names), default=0) + 6
    line = _LABEL_SIZE + 4  # a horizontal label's height, a vertical one's width
    bar_left_of_matrix, bar_width, bar_label = 14, 18, 12
    bar_ticks_width = _text_width("1.0", bar_label) + 8
    top = _PAD + _TITLE_SIZE + 12
    left = _PAD + line + 6 + names_width
    width = left + side + bar_left_of_matrix + bar_width + bar_ticks_width + line + _PAD
    title_width = _text_width(title, _TITLE_SIZE) + 2 * _PAD
    shift = max(0, (title_width - width) // 2)  # a long title widens the picture on both sides
    left, width = left + shift, max(width, title_width)
    colorbar_label = "share of the true class"
    side_needed = _text_width(colorbar_label, bar_label) + 8  # the colour bar's label fits along the bar
    body = max(side, side_needed)
    height = top + body + 6 + names_width + line + _PAD
    canvas = _Canvas(width, height)
    matrix_top = top + (body - side) // 2

    canvas.text((left + side // 2, _PAD), title, _TITLE_SIZE, anchor="mt", keep_inside=True)
    cells = Image.fromarray(_blues(shares)).resize((side, side), Image.NEAREST)
    canvas.image.paste(cells, (left, matrix_top))
    canvas.draw.rectangle((left - 1, matrix_top - 1, left + side, matrix_top + side), outline="#555555")
    if classes <= _ANNOTATE_MAX_CLASSES and (nonzero := np.argwhere(counts)).size:
        count_size = _fitting_size([str(counts[row, column]) for row, column in nonzero], cell - 4, max_size=12)
        for row, column in nonzero if count_size else []:
            color = "white" if shares[row, column] > 0.5 else "black"
            center = (left + column * cell + cell // 2, matrix_top + row * cell + cell // 2)
            canvas.text(center, str(counts[row, column]), count_size, color, anchor="mm")
    for index, name in enumerate(names):
        middle = index * cell + cell // 2
        canvas.text((left - 6, matrix_top + middle), name, name_size, anchor="rm")
        canvas.vertical_text((left + middle, matrix_top + side + 6), name, name_size, anchor="top")
    canvas.text((left + side // 2, height - _PAD), "predicted", _LABEL_SIZE, anchor="mb")
    canvas.vertical_text((left - names_width - 6 - line // 2, matrix_top + side // 2), "true", _LABEL_SIZE)

    bar_x = left + side + bar_left_of_matrix
    gradient = _blues(np.linspace(1.0, 0.0, side)[:, None])
    canvas.image.paste(Image.fromarray(gradient).resize((bar_width, side), Image.NEAREST), (bar_x, matrix_top))
    canvas.draw.rectangle((bar_x - 1, matrix_top - 1, bar_x + bar_width, matrix_top + side), outline="#555555")
    for share in (0.0, 0.5, 1.0):
        y = matrix_top + round((1.0 - share) * (side - 1))
        canvas.draw.line((bar_x + bar_width, y, bar_x + bar_width + 3, y), fill="#555555")
        canvas.text((bar_x + bar_width + 5, y), f"{share:.1f}", bar_label, anchor="lm")
    label_x = bar_x + bar_width + bar_ticks_width + line // 2
    canvas.vertical_text((label_x, matrix_top + side // 2), colorbar_label, bar_label)
    return canvas.picture()


def prediction_grid_figure(
    examples: GridExamples, class_names: list[str], title: str | None = None, columns: int = 8
) -> Picture:
    """Images (``[0, 1]`` pixels) captioned with prediction, confidence and truth; wrong ones in red,
    with a thicker frame."""
    count = len(examples.targets)
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    images = _grid_pixels(examples.images)
    height, width = images.shape[1:3]
    captions = [_caption(examples, index, class_names) for index in range(count)]
    caption_width = max((_text_width(text, _CAPTION_SIZE) for pair in captions for text in pair), default=0)
    cell_x = max(width + 8, caption_width) + 16
    caption_height = 2 * (_CAPTION_SIZE + 3)
    cell_y = caption_height + 4 + height + 14
    wrong_count = int((examples.preds != examples.targets).sum())
    counted = f"{wrong_count} misclassified (first, most confident first), {count - wrong_count} correct"
    heading = f"{title}: {counted}" if title else counted
    top = _PAD + _LABEL_SIZE + 12
    width_total = max(columns * cell_x, _text_width(heading, _LABEL_SIZE)) + 2 * _PAD
    canvas = _Canvas(width_total, top + rows * cell_y + _PAD)
    canvas.text((width_total // 2, _PAD), heading, _LABEL_SIZE, anchor="mt")
    grid_left = (width_total - columns * cell_x) // 2
    for index in range(count):
        row, column = divmod(index, columns)
        center = grid_left + column * cell_x + cell_x // 2
        image_top = top + row * cell_y + caption_height + 4
        image_left = center - width // 2
        canvas.image.paste(Image.fromarray(images[index]), (image_left, image_top))
        wrong = int(examples.preds[index]) != int(examples.targets[index])
        color = WRONG_COLOR if wrong else RIGHT_COLOR
        frame = 3 if wrong else 1
        canvas.draw.rectangle(
            (image_left - frame, image_top - frame, image_left + width - 1 + frame, image_top + height - 1 + frame),
            outline=color,
            width=frame,
        )
        predicted, truth = captions[index]
        canvas.text((center, image_top - 4), truth, _CAPTION_SIZE, color, anchor="md")
        canvas.text((center, image_top - 4 - _CAPTION_SIZE - 3), predicted, _CAPTION_SIZE, color, anchor="md")
    return canvas.picture()


class _Canvas:
    """A white RGB image to draw on that remembers the box of each text it draws."""

    def __init__(self, width: int, height: int) -> None:
        self.image = Image.new("RGB", (width, height), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.texts: list[tuple[str, tuple[int, int, int, int]]] = []

    def text(
        self, xy: tuple[int, int], text: str, size: int, fill: str = "black", anchor: str = "la",
        keep_inside: bool = False,
    ) -> None:  # fmt: skip
        """``text`` at ``xy`` by Pillow's ``anchor``; ``keep_inside`` slides it back into the picture."""
        font = _font(size)
        box = self.draw.textbbox(xy, text, font=font, anchor=anchor)
        if keep_inside:
            dx = max(0, _PAD - box[0]) - max(0, box[2] - (self.image.width - _PAD))
            xy, box = (xy[0] + dx, xy[1]), (box[0] + dx, box[1], box[2] + dx, box[3])
        self.draw.text(xy, text, font=font, fill=fill, anchor=anchor)
        self.texts.append((text, tuple(map(int, box))))

    def vertical_text(self, xy: tuple[int, int], text: str, size: int, anchor: str = "middle") -> None:
        """``text`` reading upwards (turned a quarter left), centred on ``xy[0]``; ``anchor="top"`` puts
        its end at ``xy[1]`` (a column's name under the matrix), ``"middle"`` centres it there."""
        font = _font(size)
        left, top, right, bottom = font.getbbox(text)
        label = Image.new("L", (right, bottom))
        ImageDraw.Draw(label).text((0, 0), text, font=font, fill=255)
        label = label.crop((left, top, right, bottom)).rotate(90, expand=True)
        x0 = xy[0] - label.width // 2
        y0 = xy[1] if anchor == "top" else xy[1] - label.height // 2
        self.image.paste(ImageColor.getrgb("black"), (x0, y0), label)
        self.texts.append((text, (x0, y0, x0 + label.width, y0 + label.height)))

    def picture(self) -> Picture:
        return Picture(self.image, self.texts)


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(_FONT_FILE), size)


def _text_width(text: str, size: int) -> int:
    return math.ceil(_font(size).getlength(text))


def _fitting_size(texts: list[str], width: int, max_size: int, min_size: int = 7) -> int | None:
    """The largest font size up to ``max_size`` at which the widest of ``texts`` fits in ``width`` pixels."""
    widest = max(texts, key=len)
    return next((size for size in range(max_size, min_size - 1, -1) if _text_width(widest, size) <= width), None)


def _blues(shares: np.ndarray) -> np.ndarray:
    """Shares in ``[0, 1]`` as matplotlib's ``Blues`` colours, uint8 RGB."""
    return (matplotlib.colormaps["Blues"](np.clip(shares, 0.0, 1.0))[..., :3] * 255).round().astype(np.uint8)


def _grid_pixels(images: torch.Tensor) -> np.ndarray:
    """``(N, 3, H, W)`` images in ``[0, 1]`` at the grid's size, as ``(N, H, W, 3)`` uint8."""
    images = images.detach().float().cpu().clamp(0, 1)
    longest = max(images.shape[-2:])
    if longest > _GRID_MAX_PIXELS:  # no more pixels than a cell shows
        scale = _GRID_MAX_PIXELS / longest
        images = F.interpolate(images, scale_factor=scale, mode="bilinear", antialias=True).clamp(0, 1)
    elif longest < _GRID_MIN_PIXELS:  # CIFAR's 32 px: enlarged three times, pixels kept sharp
        images = F.interpolate(images, scale_factor=math.ceil(_GRID_MIN_PIXELS / longest), mode="nearest")
    return (images.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()


def _caption(examples: GridExamples, index: int, class_names: list[str]) -> tuple[str, str]:
    predicted, target = int(examples.preds[index]), int(examples.targets[index])
    confidence = 100 * float(examples.confidences[index])
    return f"pred: {class_names[predicted]} ({confidence:.0f}%)", f"true: {class_names[target]}"
