"""The one place that builds and writes ``run_summary.json`` and prints the book-style report."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from transfer_lightning.utils.files import atomic_write_text

if TYPE_CHECKING:
    from transfer_lightning.run.assemble import Run

SUMMARY_FILE = "run_summary.json"
log = logging.getLogger("transfer_lightning")


@dataclass
class TestResult:
    """The final test on the best checkpoint."""

    accuracy: float | None
    images: int | None
    per_class: dict[str, float]
    balanced_accuracy: float | None = None  # the mean of the per-class accuracies


def planned_epochs(cfg: Any) -> int | None:
    """``trainer.max_epochs``, or None where it sets no limit (-1, null)."""
    epochs = cfg.trainer.get("max_epochs")
    return epochs if isinstance(epochs, int) and epochs >= 1 else None


def describe_model(module: Any, epochs: int | None = None) -> None:
    """The model's lines in the log: backbone, weights, strategy (and a schedule longer than the ``epochs``
    of the run), parameter counts (what trains within them)."""
    from transfer_lightning.models.lineage import describe_lineage

    params = module.parameter_counts(epochs)
    log.info("Backbone %s (model.name)", module.backbone.describe())
    log.info("Weights: %s (model.weights)", describe_lineage(module.weights_lineage))
    log.info("Strategy %s", module.strategy.describe())
    if warning := module.strategy.schedule_warning(epochs):
        log.warning(warning)
    log.info("Parameters: %s trainable, %s frozen", f"{params['trainable']:,}", f"{params['frozen']:,}")


def describe_training(datamodule: Any, module: Any, callbacks: list[Any]) -> None:
    """The recipe's line in the log: what training batches go through, the loss, the weight average."""
    from transfer_lightning.recipes.ema import EMAWeights

    ema = next((c for c in callbacks if isinstance(c, EMAWeights)), None)
    parts = [datamodule.describe_training_inputs(), f"loss: {module.loss.describe()}"]
    parts += [ema.describe()] if ema else []
    log.info("Training: %s", "; ".join(parts))


def recipe_summary(
    name: str | None, datamodule: Any, module: Any, callbacks: list[Any], probe: dict[str, Any] | None
) -> dict[str, Any]:
    """``run_summary.json``'s ``recipe``: the preset and the pieces it (or the command line) switched on."""
    from transfer_lightning.recipes.ema import EMAWeights

    ema = next((c for c in callbacks if isinstance(c, EMAWeights)), None)
    weights = module.loss.class_weights
    return {
        "name": name,
        "augment": datamodule.augment,
        "mixup": datamodule.mixup.describe() if datamodule.mixup.active else None,
        "sampler": datamodule.sampler,
        "label_smoothing": module.loss.label_smoothing,
        "class_weights": dict(zip(module.class_names, weights.tolist(), strict=True)) if weights is not None else None,
        "ema": {"decay": ema.decay, "warmup": ema.warmup} if ema else None,
        "linear_probe": probe,
    }


def is_unbalanced(labels: Any) -> bool:
    """Whether a split's classes differ in size (balanced accuracy then differs from accuracy)."""
    import torch

    counts = torch.bincount(torch.as_tensor(labels).long())
    counts = counts[counts > 0]
    return len(counts) > 1 and bool((counts != counts[0]).any())


def test_best(trainer: Any, module: Any, datamodule: Any, callbacks: list[Any]) -> TestResult:
    """Test the best checkpoint (the module's last weights when nothing was checkpointed)."""
    from transfer_lightning.callbacks import PerClassAccuracy

    checkpoint = trainer.checkpoint_callback
    best = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None
    results = trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
    per_class = next((c for c in callbacks if isinstance(c, PerClassAccuracy)), None)
    return TestResult(
        accuracy=results[0].get("test/acc") if results else None,
        images=int(results[0]["test/images"]) if results and "test/images" in results[0] else None,
        per_class=per_class.last.get("test", {}) if per_class else {},
        balanced_accuracy=results[0].get("test/balanced_acc") if results else None,
    )


def run_summary(cfg: Any, run: Run, tested: TestResult | None, best_val: Any, wall_time_s: float) -> dict[str, Any]:
    """What ``run_summary.json`` says of the completed run ``run`` (``best_val``: read before the test pass)."""
    from transfer_lightning.callbacks import DeviceReport
    from transfer_lightning.run import job

    trainer, module, datamodule, feature_cache = run.trainer, run.module, run.datamodule, run.feature_cache
    checkpoint = trainer.checkpoint_callback
    device = next((c for c in run.callbacks if isinstance(c, DeviceReport)), None)
    unbalanced = tested is not None and is_unbalanced(datamodule.splits.test.labels)
    return {
        "status": "completed",
        "model": cfg.model.name,
        "weights": module.weights_lineage,
        "strategy": run.hparams["strategy"],
        "frozen_stages": module.strategy.frozen_stages,
        "stages": list(module.backbone.stage_names),
        "params": module.parameter_counts(planned_epochs(cfg)),
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "best_val_acc": best_val,
        "test_acc": tested.accuracy if tested else None,
        "test_per_class_acc": tested.per_class if tested else {},
        # beside accuracy where the test split's classes are unbalanced: the mean of the per-class accuracies
        **({"test_balanced_acc": tested.balanced_accuracy} if unbalanced else {}),
        "test_images": tested.images if tested else None,  # each image of the split once, whatever the processes
        "test_split": datamodule.splits.notes.get("test_split", "test"),  # "val" when there is no test split
        "class_names": datamodule.class_names,
        "data": {
            "module": type(datamodule).__name__,
            **datamodule.splits.notes,
            "preprocessing": datamodule.preprocessing,
            "split_fingerprints": feature_cache.fingerprints or datamodule.split_fingerprints(),
        },
        "feature_cache": feature_cache.summary(),
        "device": device.device if device else str(trainer.strategy.root_device),
        "precision": str(trainer.precision),
        "best_ckpt": (checkpoint.best_model_path or None) if checkpoint else None,
        "last_ckpt": (checkpoint.last_model_path or None) if checkpoint else None,
        "seed": cfg.seed,
        "lr_find": run.lr_find,
        "resumed_from": run.resumed_from,
        "overrides": run.overrides,
        "recipe": recipe_summary(job.choices().get("recipe"), datamodule, module, run.callbacks, run.probe),
        "wall_time_s": round(wall_time_s, 2),
    }


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    """Write ``run_summary.json`` atomically (a kill mid-write leaves no half file)."""
    text = json.dumps(_jsonable(summary), indent=2, ensure_ascii=False) + "\n"
    return atomic_write_text(Path(run_dir) / SUMMARY_FILE, text)


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """A run folder's summary; a damaged one (not JSON, not an object) reads as an unreadable run, never raises.

    Someone else's run folder is data: the values are checked by the code that reads them.
    """
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(errors="replace"))
    except (OSError, ValueError) as error:
        return {"status": "unreadable", "error": f"{SUMMARY_FILE} cannot be read ({str(error)[:80]})"}
    if not isinstance(summary, dict):
        return {"status": "unreadable", "error": f"{SUMMARY_FILE} holds a {type(summary).__name__}, not a summary"}
    return summary


def print_report(summary: dict[str, Any], console: Console | None = None) -> None:
    """Overall test accuracy on how many images, then one line per class (as the book prints it)."""
    console = console or Console()
    test_acc = summary.get("test_acc")
    if test_acc is None:
        console.print("No test accuracy (test was skipped).")
        return
    images = summary.get("test_images")
    counted = f" on {images:,} images" if isinstance(images, int) else ""
    balanced = summary.get("test_balanced_acc")
    beside = f", balanced accuracy {100 * balanced:.2f}% (unbalanced classes)" if balanced is not None else ""
    split = summary.get("test_split", "test")
    console.print(f"Test accuracy: {100 * test_acc:.2f}%{counted} of the {split} split{beside}", highlight=False)
    table = Table()
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    for name, accuracy in (summary.get("test_per_class_acc") or {}).items():
        table.add_row(name, "n/a (no images)" if accuracy is None else f"{100 * accuracy:.2f}%")
    console.print(table)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_failure_summary(run_dir: Path, status: str, error_line: str, **fields: Any) -> Path | None:
    """``run_summary.json`` for a run that did not complete: ``status`` (``failed``/``interrupted``),
    the one-line reason, and whatever else is known (``fields``). Never raises: it runs while
    something else already went wrong (possibly the disk itself)."""
    try:
        return write_summary(run_dir, {"status": status, "error": error_line, **fields})
    except Exception as error:  # noqa: BLE001 - the original failure matters more than this one
        logging.getLogger(__name__).warning("Could not write %s in %s: %s", SUMMARY_FILE, run_dir, error)
        return None
