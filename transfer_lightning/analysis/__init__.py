"""Evaluating a trained classifier: metrics report, example selection and figures."""

from transfer_lightning.analysis.collector import PredictionCollector
from transfer_lightning.analysis.examples import ExampleSelector, GridExamples
from transfer_lightning.analysis.figures import confusion_matrix_figure, prediction_grid_figure
from transfer_lightning.analysis.report import (
    build_report,
    classification_metrics,
    print_report_table,
    report_markdown,
)

__all__ = [
    "ExampleSelector",
    "GridExamples",
    "PredictionCollector",
    "build_report",
    "classification_metrics",
    "confusion_matrix_figure",
    "prediction_grid_figure",
    "print_report_table",
    "report_markdown",
]
