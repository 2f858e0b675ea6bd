"""Classification metrics with torchmetrics, and the report they make: dict, Markdown, rich table."""

from __future__ import annotations

from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)


def classification_metrics(num_classes: int) -> MetricCollection:
    """Overall accuracy plus per-class accuracy, precision, recall, F1 and the confusion matrix."""
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(num_classes, average="micro"),
            "per_class_accuracy": MulticlassAccuracy(num_classes, average=None),
            "precision": MulticlassPrecision(num_classes, average=None),
            "recall": MulticlassRecall(num_classes, average=None),
            "f1": MulticlassF1Score(num_classes, average=None),
            "confusion_matrix": MulticlassConfusionMatrix(num_classes),
        }
    )


def build_report(computed: dict[str, torch.Tensor], class_names: list[str], top_confused: int = 5) -> dict[str, Any]:
    """A JSON-ready report from ``classification_metrics(...).compute()``.

    A class without test images gets ``null`` accuracy/recall (not 0%); one never predicted gets
    ``null`` precision. Where the classes have different numbers of images, ``balanced_accuracy`` (the
    mean of the per-class accuracies of the classes with images) stands beside ``accuracy``.
    """
    matrix = computed["confusion_matrix"].cpu().long()
    support, predicted = matrix.sum(dim=1), matrix.sum(dim=0)
    per_class = {}
    for index, name in enumerate(class_names):
        has_images, was_predicted = bool(support[index] > 0), bool(predicted[index] > 0)
        per_class[name] = {
            "support": int(support[index]),
            "predicted": int(predicted[index]),
            "accuracy": _value(computed["per_class_accuracy"], index) if has_images else None,
            "precision": _value(computed["precision"], index) if was_predicted else None,
            "recall": _value(computed["recall"], index) if has_images else None,
            "f1": _value(computed["f1"], index) if has_images or was_predicted else None,
        }
    present = support > 0
    balanced = {}
    if len(set(support[present].tolist())) > 1:
        accuracies = computed["per_class_accuracy"].cpu()[present]
        balanced = {"balanced_accuracy": float(accuracies.mean())}
    return {
        "num_images": int(matrix.sum()),
        "accuracy": float(computed["accuracy"]),
        **balanced,
        "per_class": per_class,
        "most_confused": most_confused_pairs(matrix, class_names, top_confused),
        "confusion_matrix": matrix.tolist(),
        "class_names": list(class_names),
    }


def most_confused_pairs(matrix: torch.Tensor, class_names: list[str], limit: int) -> list[dict[str, Any]]:
    """The largest off-diagonal cells: (true class, predicted class, count, share of the true class)."""
    off_diagonal = matrix.clone()
    off_diagonal.fill_diagonal_(0)
    counts, flat = off_diagonal.flatten().sort(descending=True, stable=True)
    pairs = []
    for count, index in zip(counts.tolist(), flat.tolist(), strict=True):
        if count == 0 or len(pairs) == limit:
            break
        true, predicted = divmod(index, matrix.shape[1])
        pairs.append(
            {
                "true": class_names[true],
                "predicted": class_names[predicted],
                "count": count,
                "share_of_true": count / max(1, int(matrix[true].sum())),
            }
        )
    return pairs


def report_markdown(report: dict[str, Any], title: str, images: dict[str, str]) -> str:
    """The report as Markdown: overall accuracy, a per-class table, confused pairs, the images."""
    lines = [
        f"# {title}",
        "",
        f"**Accuracy: {_percent(report['accuracy'])}**{_balanced(report)} on {report['num_images']} images.",
        "",
    ]
    for key, value in report.get("context", {}).items():
        lines.append(f"- {key}: `{value}`")
    lines += [
        "",
        "## Per class",
        "",
        "Per-class accuracy is the share of that class's images classified correctly (= recall).",
        "",
    ]
    lines += ["| class | images | accuracy | precision | recall | F1 |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in report["per_class"].items():
        cells = [_percent(row[key]) for key in ("accuracy", "precision", "recall", "f1")]
        lines.append(f"| {name} | {row['support']} | " + " | ".join(cells) + " |")
    lines += ["", "## Most confused pairs", ""]
    if report["most_confused"]:
        lines += ["| true | predicted as | images | share of true class |", "| --- | --- | ---: | ---: |"]
        for pair in report["most_confused"]:
            lines.append(
                f"| {pair['true']} | {pair['predicted']} | {pair['count']} | {_percent(pair['share_of_true'])} |"
            )
    else:
        lines.append("No misclassified images.")
    lines.append("")
    for caption, file_name in images.items():
        lines += [f"## {caption}", "", f"![{caption}]({file_name})", ""]
    return "\n".join(lines)


def print_report_table(report: dict[str, Any], title: str, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(
        title=f"{title}: accuracy {_percent(report['accuracy'])}{_balanced(report)} on {report['num_images']} images"
    )
    for column, justify in (("class", "left"), ("images", "right"), ("accuracy", "right"), ("precision", "right"), ("recall", "right"), ("F1", "right")):  # fmt: skip
        table.add_column(column, justify=justify)
    for name, row in report["per_class"].items():
        table.add_row(
            name, str(row["support"]), *(_percent(row[key]) for key in ("accuracy", "precision", "recall", "f1"))
        )
    console.print(table)
    if report["most_confused"]:
        confused = Table(title="Most confused (true -> predicted)")
        for column in ("true", "predicted as", "images", "share of true"):
            confused.add_column(column)
        for pair in report["most_confused"]:
            confused.add_row(pair["true"], pair["predicted"], str(pair["count"]), _percent(pair["share_of_true"]))
        console.print(confused)


def _balanced(report: dict[str, Any]) -> str:
    balanced = report.get("balanced_accuracy")
    return "" if balanced is None else f" (balanced accuracy {_percent(balanced)}: the classes are unbalanced)"


def _value(tensor: torch.Tensor, index: int) -> float:
    return float(tensor[index])


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"
