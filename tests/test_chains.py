"""Transfer chains: a run starts from another run's model (checkpoint or run folder), with its lineage."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import CONFIG_DIR, ROOT, TINY, classifier_from_dicts, run_cli
from transfer_lightning.classifier import TransferClassifier
from transfer_lightning.evaluate import evaluate
from transfer_lightning.models.lineage import preprocessing_from_run, read_run_weights
from transfer_lightning.models.weights import ensure_weights_available
from transfer_lightning.run.checkpoint import load_classifier
from transfer_lightning.run.resume import original_overrides
from transfer_lightning.utils.errors import UserError

STRATEGY = {"_target_": "transfer_lightning.strategies.FreezeStages", "frozen_stages": 0}
PREPROCESSING = {"image_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


@pytest.fixture(scope="module")
def run_a(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run A: 3 synthetic classes at 40 px (not the data's default 32), random init, one epoch, real CLI."""
    run = tmp_path_factory.mktemp("chain") / "a"
    result = run_cli(
        *TINY,
        "data.num_classes=3",
        "data.image_size=40",
        f"hydra.run.dir={run}",
        f"paths.data_dir={run.parent / 'data'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def _start(weights: str, class_names: list[str]) -> TransferClassifier:
    ensure_weights_available("resnet18", weights)  # as train() does before the data
    return classifier_from_dicts(
        model={"name": "resnet18", "weights": weights},
        strategy=STRATEGY,
        optimizer={},
        scheduler=None,
        class_names=class_names,
        preprocessing=PREPROCESSING,
    )


def _backbone(module: TransferClassifier) -> dict[str, torch.Tensor]:
    return {key: value for key, value in module.net.state_dict().items() if not key.startswith("fc.")}


def test_a_run_starts_from_another_runs_checkpoint_with_a_new_head(run_a: Path) -> None:
    a = load_classifier(run_a / "checkpoints" / "best.ckpt")
    b = _start(str(run_a / "checkpoints" / "best.ckpt"), ["class_0", "class_1"])
    a_backbone, b_backbone = _backbone(a), _backbone(b)
    assert a_backbone.keys() == b_backbone.keys()
    assert all(torch.equal(a_backbone[key], b_backbone[key]) for key in a_backbone)  # BN statistics too
    assert b.net.fc.out_features == 2 and a.net.fc.out_features == 3
    assert b.weights_lineage == {
        "source": "run",
        "path": str((run_a / "checkpoints" / "best.ckpt").resolve()),
        "classes": ["class_0", "class_1", "class_2"],
        "parent": {"source": "random init"},
    }


def test_a_run_folder_gives_the_same_start_as_its_best_checkpoint(run_a: Path) -> None:
    from_file = _start(str(run_a / "checkpoints" / "best.ckpt"), ["class_0", "class_1"])
    from_folder = _start(str(run_a), ["class_0", "class_1"])
    file_backbone, folder_backbone = _backbone(from_file), _backbone(from_folder)
    assert all(torch.equal(file_backbone[key], folder_backbone[key]) for key in file_backbone)
    assert from_folder.weights_lineage == from_file.weights_lineage


def test_the_same_class_list_keeps_the_head(run_a: Path) -> None:
    a = load_classifier(run_a / "checkpoints" / "best.ckpt")
    same = _start(str(run_a), ["class_0", "class_1", "class_2"])
    assert torch.equal(same.net.fc.weight, a.net.fc.weight) and torch.equal(same.net.fc.bias, a.net.fc.bias)
    reordered = _start(str(run_a), ["class_2", "class_1", "class_0"])  # same size, other labels: new head
    assert not torch.equal(reordered.net.fc.weight, a.net.fc.weight)


def test_a_folder_without_a_checkpoint_is_one_clear_sentence(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"is a folder without checkpoints/best\.ckpt"):
        ensure_weights_available("resnet18", str(tmp_path))


@pytest.fixture(scope="module")
def run_b(run_a: Path) -> Path:
    """Run B: 2 classes, started from A's best checkpoint, through the real CLI."""
    run = run_a.parent / "b"
    result = run_cli(
        *TINY, "data.num_classes=2", f"model.weights={run_a / 'checkpoints' / 'best.ckpt'}",
        f"hydra.run.dir={run}", f"paths.data_dir={run_a.parent / 'data'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Head: new, 2 classes" in result.stdout + result.stderr
    return run


def test_chain_run_records_its_lineage_and_inherits_the_preprocessing(run_a: Path, run_b: Path) -> None:
    summary = json.loads((run_b / "run_summary.json").read_text())
    a_summary = json.loads((run_a / "run_summary.json").read_text())
    lineage = summary["weights"]
    assert lineage["source"] == "run" and lineage["classes"] == a_summary["class_names"]
    assert lineage["path"] == str((run_a / "checkpoints" / "best.ckpt").resolve())
    assert lineage["parent"] == {"source": "random init"} == a_summary["weights"]
    b = load_classifier(run_b / "checkpoints" / "best.ckpt")
    assert b.weights_lineage == lineage  # the checkpoint records the chain too
    assert b.record.preprocessing.to_dict()["image_size"] == 40  # A's, not the synthetic data's default 32


def test_evaluate_report_shows_the_chain(run_a: Path, run_b: Path, tmp_path: Path) -> None:
    overrides = [
        f"ckpt_path={run_b / 'checkpoints' / 'best.ckpt'}", "data=synthetic", "data.num_classes=2",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", f"output_dir={tmp_path}",
        f"paths.root_dir={ROOT}", f"paths.output_dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}",
    ]  # fmt: skip
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        report = evaluate(compose("evaluate", overrides=overrides))
    a_checkpoint = (run_a / "checkpoints" / "best.ckpt").resolve()
    assert report["context"]["weights"] == f"run {a_checkpoint} (3 classes) <- random init"
    assert report["weights_lineage"]["parent"] == {"source": "random init"}
    assert f"- weights: `run {a_checkpoint} (3 classes) <- random init`" in (tmp_path / "eval_report.md").read_text()


def test_data_overrides_win_over_the_inherited_preprocessing_with_a_warning(run_a: Path, caplog) -> None:
    run = read_run_weights(str(run_a))
    run = dataclasses.replace(run, preprocessing={**run.preprocessing, "mean": [0.5, 0.4, 0.3]})
    inherited = preprocessing_from_run(run, {"image_size": None})
    assert (inherited.image_size, inherited.mean) == (40, (0.5, 0.4, 0.3))
    assert not [record for record in caplog.records if record.levelname == "WARNING"]
    overridden = preprocessing_from_run(run, {"image_size": 64})
    assert (overridden.image_size, overridden.mean) == (64, (0.5, 0.4, 0.3))
    assert "data.image_size=64 overrides the starting checkpoint's image_size=40" in caplog.text


def test_a_checkpoint_of_another_architecture_is_refused_before_the_data(run_a: Path, tmp_path: Path) -> None:
    result = run_cli(
        *TINY, "model=resnet34", f"model.weights={run_a}", f"hydra.run.dir={tmp_path / 'b'}",
        f"paths.data_dir={tmp_path / 'data'}",
    )  # fmt: skip
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert "holds a resnet18 but this run builds a resnet34" in error and "model=resnet18" in error
    assert "Traceback" not in result.stderr
    assert "Data: SyntheticDataModule" not in result.stdout + result.stderr  # the data's setup never ran


def test_a_resumed_chain_run_reads_its_first_commands_data_overrides(tmp_path: Path) -> None:
    # a resumed run's command line holds resume=..., not the data.image_size=... it started with
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints").mkdir()
    (tmp_path / "run" / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (tmp_path / "run" / ".hydra" / "overrides.yaml").write_text("- data.image_size=48\n- model.weights=/a\n")
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert original_overrides(str(checkpoint)) == ["data.image_size=48", "model.weights=/a"]
    assert original_overrides(None) == [] and original_overrides(str(tmp_path / "elsewhere.ckpt")) == []
