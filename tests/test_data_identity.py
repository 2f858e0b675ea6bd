"""What a model saw is a recorded contract: splits have an identity, the checkpoint carries its data,
and evaluate, predict and a second run all see exactly what the first run saw."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, predict_class_folders, run_cli
from tests.contract_images import write_colour_folder, write_contract_images
from transfer_lightning.data import ImageFolderDataModule
from transfer_lightning.data.record import data_config_from_checkpoint, recorded_data_config
from transfer_lightning.evaluate import class_list_difference
from transfer_lightning.utils.errors import UserError

IMAGE_FOLDER_TINY = [arg for arg in TINY if arg != "data=synthetic"] + [
    "data=image_folder",
    "data.image_size=32",
    "data.batch_size=8",
]


def _summary(run: Path) -> dict:
    return json.loads((run / "run_summary.json").read_text())


def test_split_seeds_give_other_splits_other_fingerprints_and_their_own_cache_entries(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write_colour_folder(root, per_class=6)
    sweep, data_dir = tmp_path / "sweep", tmp_path / "data"
    result = run_cli(
        "-m", *IMAGE_FOLDER_TINY, f"data.root={root}", "data.split_seed=1,2,3", "test=false",
        f"hydra.sweep.dir={sweep}", f"paths.data_dir={data_dir}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [_summary(sweep / str(job)) for job in range(3)]
    for job in jobs:
        assert set(job["data"]["split_fingerprints"]) == {"train", "val", "test"}
        assert job["feature_cache"]["enabled"] and job["feature_cache"]["hits"] == []  # no hit across seeds
    for split in ("train", "val"):
        assert len({job["data"]["split_fingerprints"][split] for job in jobs}) == 3, split

    val_files = []
    for seed in (1, 2):
        datamodule = ImageFolderDataModule(
            root=str(root), split_seed=seed, cache_dir=str(data_dir),
            preprocessing=jobs[seed - 1]["data"]["preprocessing"],  # the run's contract (the backbone's defaults)
        )  # fmt: skip
        datamodule.setup("fit")
        assert datamodule.split_fingerprints() == jobs[seed - 1]["data"]["split_fingerprints"]
        val_files.append(datamodule.split_files["val"])
    assert val_files[0] != val_files[1]

    entries = [torch.load(path, weights_only=True)["meta"] for path in (data_dir / "feature_cache").glob("*.pt")]
    per_split = {split: sum(entry["split"] == split for entry in entries) for split in ("train", "val", "test")}
    assert per_split == {"train": 3, "val": 3, "test": 3}


def test_checkpoint_carries_its_data_for_evaluate_and_predict_and_reruns(tmp_path: Path) -> None:
    """From the parent of data.root=data (caches would land in the root), two runs in a row see the
    same classes; evaluate with only ckpt_path serves the run's own val split (non-default seed and
    fraction) from another folder; predict's CSV is right on exactly the images evaluate got right."""
    project = tmp_path / "project"
    classes = write_colour_folder(project / "data", per_class=7)
    for name, path in write_contract_images(tmp_path / "odd").items():  # phone-style files in every class
        shutil.copy(path, project / "data" / classes[len(name) % 2] / path.name)
    command = [*IMAGE_FOLDER_TINY, "data.root=data", "data.split_seed=7", "data.val_fraction=0.3", "test=false"]
    for run in ("run1", "run2"):
        result = run_cli(*command, f"hydra.run.dir={project / run}", cwd=project)
        assert result.returncode == 0, result.stderr[-3000:]
        assert _summary(project / run)["class_names"] == classes
    assert sorted(p.name for p in (project / "data").iterdir()) == classes  # nothing written into the root
    summary = _summary(project / "run1")
    assert summary["data"]["split_fingerprints"] == _summary(project / "run2")["data"]["split_fingerprints"]

    checkpoint = project / "run1" / "checkpoints" / "best.ckpt"
    evaluated = run_cli(
        f"ckpt_path={checkpoint}", "split=val", "trainer.accelerator=cpu", f"output_dir={tmp_path / 'eval'}",
        f"hydra.run.dir={tmp_path / 'eval_run'}", module="transfer_lightning.evaluate", cwd=tmp_path,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "eval_report.json").read_text())
    fingerprints = summary["data"]["split_fingerprints"]
    assert report["context"]["split_fingerprint"] == fingerprints["val"] != fingerprints["train"]
    assert report["context"]["data_root"] == str(project / "data")

    reference = ImageFolderDataModule(
        root=str(project / "data"), split_seed=7, val_fraction=0.3, preprocessing=summary["data"]["preprocessing"]
    )
    reference.setup("fit")
    assert reference.split_fingerprints()["val"] == fingerprints["val"]  # the same files, order and labels
    val_files = reference.split_files["val"]
    assert report["context"]["images"] == len(val_files)
    assert not set(val_files) & set(reference.split_files["train"])

    rows = predict_class_folders(checkpoint, val_files, tmp_path)
    assert len(rows) == len(val_files) and not any(row["error"] for row in rows)
    correct = sum(row["top1"] == Path(row["path"]).parent.name for row in rows)
    assert correct == round(report["accuracy"] * len(val_files))


def test_evaluate_refuses_another_class_list_in_one_sentence_naming_the_difference(
    trained_run: Path, tmp_path: Path
) -> None:
    result = run_cli(
        f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}", "data.num_classes=3", "trainer.accelerator=cpu",
        f"hydra.run.dir={tmp_path}", module="transfer_lightning.evaluate",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "missing: ['class_3']" in result.stderr and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "not in the checkpoint: none" in errors[0]


def test_typed_data_keys_replace_parts_of_the_recorded_config_and_typos_are_refused(tmp_path: Path) -> None:
    recorded = recorded_data_config({"_target_": "x.ImageFolderDataModule", "root": "photos", "split_seed": 7})
    assert recorded["root"] == str(Path.cwd() / "photos")  # absolute at training time
    moved = data_config_from_checkpoint(recorded, {"root": str(tmp_path / "moved")}, tmp_path / "best.ckpt")
    assert moved == {**recorded, "root": str(tmp_path / "moved")}
    with pytest.raises(UserError, match="data.rooot is not a setting of this checkpoint's data"):
        data_config_from_checkpoint(recorded, {"rooot": "x"}, tmp_path / "best.ckpt")
    with pytest.raises(UserError, match="records no data config"):
        data_config_from_checkpoint(None, {}, tmp_path / "best.ckpt")
    assert "another order" in class_list_difference(["b", "a"], ["a", "b"])
