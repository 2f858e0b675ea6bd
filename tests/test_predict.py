"""Predict: top-k classes for loose image files, batched, with unreadable files listed."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import run_cli
from transfer_lightning.data.contract import Preprocessing
from transfer_lightning.data.image_files import ImageFileDataset, list_image_files
from transfer_lightning.run.checkpoint import load_classifier
from transfer_lightning.utils.errors import UserError


def _write_images(folder: Path) -> None:
    rng = np.random.default_rng(0)
    (folder / "nested").mkdir(parents=True)
    for index, (height, width) in enumerate([(32, 32), (48, 40), (100, 60)]):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo_{index}.jpg")
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(folder / "nested" / "gray.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "notes.txt").write_text("not an image, not listed")


def test_predict_folder_writes_top_k_csv_and_lists_unreadable_files(trained_run: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    _write_images(images)
    checkpoint = trained_run / "checkpoints" / "best.ckpt"
    result = run_cli(
        f"ckpt_path={checkpoint}", f"inputs={images}", "top_k=10", "batch_size=2", "trainer.accelerator=cpu",
        f"output_dir={tmp_path / 'run'}", module="transfer_lightning.predict",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    csv_path = tmp_path / "run" / "predictions.csv"
    assert str(csv_path) in result.stdout and "Top-4 predictions" in result.stdout
    rows = {Path(row["path"]).name: row for row in csv.DictReader(csv_path.open())}
    assert set(rows) == {"photo_0.jpg", "photo_1.jpg", "photo_2.jpg", "gray.png", "broken.jpg"}
    assert rows["broken.jpg"]["error"] and not rows["broken.jpg"]["top1"]
    assert "broken.jpg" in result.stderr + result.stdout
    assert "top5" not in rows["photo_0.jpg"]  # top_k=10 is capped at the 4 classes, and says so once
    assert (result.stdout + result.stderr).count("top_k=10 is more than the model's 4 classes: showing all 4") == 1
    module = load_classifier(checkpoint)
    contract = Preprocessing.from_dict(module.record.preprocessing.to_dict())
    for name in ("photo_0.jpg", "photo_2.jpg", "gray.png"):
        row = rows[name]
        probabilities = [float(row[f"top{rank}_prob"]) for rank in range(1, 5)]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) == pytest.approx(1, abs=1e-4)
        path = images / name if name != "gray.png" else images / "nested" / name
        with torch.no_grad():
            # the per-file parity with the training data module is tests/test_contract.py's
            expected = module(ImageFileDataset([path], contract)[0][0].unsqueeze(0)).softmax(dim=1)[0]
        assert row["top1"] == module.class_names[int(expected.argmax())]
        assert float(row["top1_prob"]) == pytest.approx(float(expected.max()), abs=1e-4)


def test_predict_on_a_folder_without_images_is_one_line_and_exit_2(trained_run: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures here")
    result = run_cli(
        f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}", f"inputs={empty}", f"output_dir={tmp_path / 'run'}",
        module="transfer_lightning.predict",
    )  # fmt: skip
    assert result.returncode == 2
    assert "no images found in folder" in result.stderr and "Traceback" not in result.stderr + result.stdout


def test_inputs_accept_a_single_file_or_a_list_and_refuse_a_missing_path(tmp_path: Path) -> None:
    _write_images(tmp_path / "images")
    photo = tmp_path / "images" / "photo_1.jpg"
    assert list_image_files(str(photo)) == [photo]
    assert len(list_image_files([str(photo), str(tmp_path / "images" / "nested")])) == 2
    with pytest.raises(UserError, match="does not exist"):
        list_image_files(str(tmp_path / "missing.jpg"))
