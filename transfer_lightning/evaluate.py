"""``python -m transfer_lightning.evaluate ckpt_path=...``: a trained checkpoint on a data split.

Writes ``eval_report.json``, ``eval_report.md``, ``confusion_matrix.png`` and ``predictions.png``
into ``<checkpoint folder>/<checkpoint name>_eval_<split>/`` (or ``output_dir``) and prints the
report. The data is the checkpoint's own (``data/record.py``: module, root, split settings), so
``split=val`` is the run's val split; ``data.<key>=...`` replaces one part of it (a moved root),
``data=<name> ...`` names other data. The preprocessing contract always comes from the checkpoint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from transfer_lightning.analysis import (
    PredictionCollector,
    build_report,
    confusion_matrix_figure,
    prediction_grid_figure,
    print_report_table,
    report_markdown,
)
from transfer_lightning.callbacks import DeviceReport
from transfer_lightning.data.base import ClassificationDataModule
from transfer_lightning.data.contract import Preprocessing
from transfer_lightning.data.fingerprint import split_fingerprint
from transfer_lightning.data.record import data_config_from_checkpoint
from transfer_lightning.models.lineage import describe_lineage
from transfer_lightning.recipes.tta import TTA_WORDS
from transfer_lightning.run.builders import build_datamodule, build_trainer
from transfer_lightning.run.checkpoint import checkpoint_file, checkpoint_origin, load_classifier
from transfer_lightning.utils.cli import check_once, require, tool_main
from transfer_lightning.utils.errors import UserError
from transfer_lightning.utils.files import atomic_save_figure, atomic_write_text

log = logging.getLogger("transfer_lightning")
# evaluate.yaml's default data group: an open node that only holds the data.* keys the user typed,
# laid over the data config the checkpoint carries (a YAML file cannot accept keys it does not list)
ConfigStore.instance().store(group="data", name="from_checkpoint", node=OmegaConf.create({}, flags={"struct": False}))


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.split`` of ``cfg.data``; returns the report."""
    check_once(cfg)
    checkpoint = checkpoint_file(
        require(cfg, "ckpt_path", "ckpt_path=outputs/<date>/<time> (a run folder) or its .ckpt")
    )
    module = load_classifier(checkpoint)
    module.tta = cfg.tta  # test-time augmentation (recipes/tta.py)
    record = module.record
    typed = OmegaConf.to_container(cfg.data, resolve=True)
    named = "_target_" in typed  # data=<name> on the command line: that (trusted) config
    data_cfg = typed if named else data_config_from_checkpoint(record.data, typed, checkpoint)
    datamodule = datamodule_for_checkpoint(
        data_cfg, record.preprocessing, module.class_names, from_file=not named, split=cfg.split
    )

    split = used_split(cfg.split, datamodule)
    collector = PredictionCollector(len(module.class_names), stage=cfg.split, grid_size=cfg.grid_size)
    device = DeviceReport()
    trainer = build_trainer(cfg, [collector, device], logger=False)
    loop = trainer.test if cfg.split == "test" else trainer.validate
    loop(module, datamodule=datamodule, verbose=False)

    report = build_report(collector.metrics.compute(), module.class_names, cfg.top_confused)
    report["context"] = {
        "checkpoint": str(checkpoint.resolve()),
        "data": type(datamodule).__name__,
        "split": split,
        "data_root": datamodule.splits.notes.get("data_root"),
        "split_fingerprint": split_fingerprint(getattr(datamodule.splits, split)),
        "images": len(getattr(datamodule.splits, split)),
        "preprocessing": record.preprocessing.to_dict(),
        "image_size": record.preprocessing.image_size,
        "device": device.device,
        "precision": device.precision,
        "weights": describe_lineage(module.weights_lineage),  # the chain, newest link first
        "tta": TTA_WORDS[cfg.tta],
    }
    report["weights_lineage"] = module.weights_lineage
    output_dir = (
        Path(cfg.output_dir) if cfg.get("output_dir") else checkpoint.parent / f"{checkpoint.stem}_eval_{split}"
    )
    write_evaluation(output_dir, report, collector, datamodule, module.class_names)
    return report


def used_split(asked: str, datamodule: ClassificationDataModule) -> str:
    """The split whose images a pass over ``asked`` really sees: data without a test split tests on val."""
    if asked == "test" and datamodule.splits.notes.get("test_split") == "val":
        log.warning("This data has no test split: evaluating on the val split (named val in the report and folder)")
        return "val"
    return asked


def datamodule_for_checkpoint(
    data_cfg: DictConfig | dict[str, Any],
    contract: Preprocessing,
    class_names: list[str],
    from_file: bool = True,
    split: str | None = None,
) -> ClassificationDataModule:
    """The data of ``data_cfg`` (a checkpoint's record: ``from_file``) through the checkpoint's preprocessing
    contract (no augmentation)."""
    datamodule = build_datamodule(
        data_cfg, from_file=from_file, preprocessing=contract, augment="none", test_each_epoch=False
    )
    if split is not None:
        datamodule.serve_only(split)  # the other splits' images need not be decoded
    datamodule.prepare_data()
    datamodule.setup("test")
    if list(datamodule.class_names) != list(class_names):
        raise UserError(f"{class_list_difference(datamodule.class_names, class_names)}; evaluate on data with the "
                        "checkpoint's class folders (data.root=<folder>)")  # fmt: skip
    return datamodule


def class_list_difference(found: list[str], expected: list[str]) -> str:
    """One clause naming how the data's classes differ from the checkpoint's."""
    missing = [name for name in expected if name not in found]
    extra = [name for name in found if name not in expected]
    if missing or extra:
        return (
            f"the data's classes differ from the checkpoint's (missing: {_short(missing) if missing else 'none'}, "
            f"not in the checkpoint: {_short(extra) if extra else 'none'})"
        )
    return f"the data's classes are the checkpoint's in another order ({_short(found)} vs {_short(expected)})"


def write_evaluation(
    output_dir: Path,
    report: dict[str, Any],
    collector: PredictionCollector,
    datamodule: ClassificationDataModule,
    class_names: list[str],
) -> None:
    """The confusion matrix and prediction grid PNGs, then the JSON and Markdown reports."""
    output_dir.mkdir(parents=True, exist_ok=True)
    split = report["context"]["split"]
    shown = f"{split}, {checkpoint_origin(report['context']['checkpoint'])}"  # which images, which weights
    matrix = collector.metrics["confusion_matrix"].compute()
    matrix_figure = confusion_matrix_figure(matrix, class_names, f"Confusion matrix ({shown})")
    atomic_save_figure(matrix_figure, output_dir / "confusion_matrix.png")
    examples = collector.selector.examples()
    examples.images = datamodule.preprocessor.unnormalize(examples.images)
    atomic_save_figure(prediction_grid_figure(examples, class_names, shown), output_dir / "predictions.png")
    images = {"Confusion matrix": "confusion_matrix.png", "Predictions (misclassified first)": "predictions.png"}
    report["files"] = images
    atomic_write_text(output_dir / "eval_report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(
        output_dir / "eval_report.md", report_markdown(report, f"Evaluation on the {split} split", images)
    )
    print_report_table(report, f"Evaluation ({split})")
    log.info("Weights: %s", report["context"]["weights"])
    log.info("Report: %s (eval_report.json, eval_report.md, confusion_matrix.png, predictions.png)", output_dir)


def _short(names: list[str]) -> str:
    return str(list(names[:6])) + (f" (+{len(names) - 6} more)" if len(names) > 6 else "")


main = tool_main("evaluate", evaluate)


if __name__ == "__main__":
    main()
