"""The versioned record every checkpoint carries (run/model_record.py), the module built from objects, and
checkpoints of the format before the record still evaluating through the one converter."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, run_cli
from transfer_lightning.classifier import TransferClassifier
from transfer_lightning.run.checkpoint import load_classifier, read_checkpoint_and_record
from transfer_lightning.run.model_record import FORMAT, RECORD_KEY, read_model_record
from transfer_lightning.utils.errors import UserError

FORMAT_1 = ROOT / "tests" / "data" / "format1_test_resnet.ckpt"


def test_a_run_writes_a_versioned_record_and_no_lightning_hyper_parameters(trained_run: Path) -> None:
    checkpoint = torch.load(trained_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    record = checkpoint[RECORD_KEY]
    assert record["format"] == FORMAT == 2 and "hyper_parameters" not in checkpoint
    assert set(record) == {"format", "model", "strategy", "optimizer", "scheduler", "class_names", "preprocessing",
                           "data", "loss", "ema", "lineage", "strategy_state"}  # fmt: skip
    assert record["loss"] == {"label_smoothing": 0.0, "class_weights": "none"} and record["ema"]["enabled"] is False
    assert record["model"] == {
        "name": "resnet18",
        "backbone": "transfer_lightning.models.resnet.ResNet",
        "weights": None,
    }
    assert record["optimizer"]["_target_"] == "torch.optim.Adam" and "_partial_" not in record["optimizer"]
    assert json.loads(json.dumps(record)) == record  # plain values only: what weights_only reads back


def test_the_record_read_back_rebuilds_the_same_model(trained_run: Path) -> None:
    path = trained_run / "checkpoints" / "best.ckpt"
    checkpoint, record = read_checkpoint_and_record(path)
    module = load_classifier(path)
    assert module.record.to_dict(module.weights_lineage, module.strategy.state_dict()) == checkpoint[RECORD_KEY]
    assert record.from_file and record.class_names == module.class_names
    for name, tensor in checkpoint["state_dict"].items():
        assert torch.equal(module.state_dict()[name], tensor), name


def test_a_checkpoint_of_the_format_before_the_record_still_evaluates(tmp_path: Path) -> None:
    """``tests/data/format1_test_resnet.ckpt`` was written by main at 18af43a (Lightning's hyper_parameters)."""
    old = torch.load(FORMAT_1, map_location="cpu", weights_only=True)
    assert RECORD_KEY not in old and "hyper_parameters" in old
    record = read_model_record(old, FORMAT_1)
    assert record.model["backbone"] == "transfer_lightning.models.timm_backbone.TimmBackbone"
    assert record.strategy_state == old["freezing_strategy"] and record.lineage == old["weights_lineage"]
    assert record.optimizer == {k: v for k, v in old["hyper_parameters"]["optimizer"].items() if k != "_partial_"}
    result = run_cli(f"ckpt_path={FORMAT_1}", "trainer.accelerator=cpu", f"output_dir={tmp_path / 'eval'}",
                     module="transfer_lightning.evaluate", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "eval_report.json").read_text())
    assert report["context"]["images"] == 32 and 0 <= report["accuracy"] <= 1


def test_a_record_of_a_newer_format_is_refused_with_the_fix(tmp_path: Path, trained_run: Path) -> None:
    checkpoint = torch.load(trained_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    checkpoint[RECORD_KEY]["format"] = FORMAT + 1
    path = tmp_path / "newer.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(UserError) as refused:
        load_classifier(path)
    assert str(refused.value) == (
        f"{path} holds a record of format 3, which this version does not read (it reads 2 and older checkpoints; "
        "upgrade transfer_lightning)"
    )


def test_the_module_takes_built_objects_not_config_dictionaries() -> None:
    parameters = inspect.signature(TransferClassifier.__init__).parameters
    assert list(parameters) == ["self", "backbone", "strategy", "optimizer", "record", "scheduler", "loss"]
    assert "dict" not in str(parameters["backbone"].annotation) + str(parameters["strategy"].annotation)
