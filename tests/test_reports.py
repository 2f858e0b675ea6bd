"""What the reports say is what is true: n/a where there is nothing to measure, the split by its name."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from rich.console import Console

from transfer_lightning.callbacks import PerClassAccuracy
from transfer_lightning.run.summary import print_report


def test_a_class_without_test_images_has_no_accuracy_rather_than_zero() -> None:
    logged: dict[str, float] = {}
    module = SimpleNamespace(class_names=["cat", "dog", "fox"], device=torch.device("cpu"), log_dict=logged.update)
    callback = PerClassAccuracy(stages=("test",))
    callback.setup(None, module, "test")
    target = torch.tensor([0, 0, 0, 1, 1])  # no fox in the test split
    callback.on_test_batch_end(None, module, {"preds": torch.tensor([0, 0, 1, 1, 2]), "target": target}, None, 0)
    callback.on_test_epoch_end(None, module)

    assert callback.last["test"] == {"cat": pytest.approx(2 / 3), "dog": 0.5, "fox": None}
    assert set(logged) == {"test/acc_per_class/cat", "test/acc_per_class/dog"}  # nothing made up for fox

    console = Console(record=True, width=100)
    summary = {"test_acc": 0.6, "test_images": 5, "test_split": "test", "test_per_class_acc": callback.last["test"]}
    print_report(summary, console)
    text = console.export_text()
    assert text.splitlines()[0] == "Test accuracy: 60.00% on 5 images of the test split"
    lines = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in text.splitlines()
             if line.count("│") == 3 and "class" not in line}  # fmt: skip
    assert lines == {"cat": "66.67%", "dog": "50.00%", "fox": "n/a (no images)"}
