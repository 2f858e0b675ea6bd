"""One image-file lister for every command: the same hidden, system or broken file gets the same treatment
in training on a user's folders, in a CIFAR-10 class-folder copy and in predict."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import run_cli
from transfer_lightning.data import CIFAR10DataModule, ImageFolderDataModule
from transfer_lightning.data.contract import Preprocessing
from transfer_lightning.data.image_files import list_image_files, reason_file_fails
from transfer_lightning.data.listing import skipped_summary
from transfer_lightning.utils.errors import UserError

CLASSES = ("ants", "bees")
PER_CLASS = 4
APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        "  # the header of a real ._ file
# what a folder copied from a Mac or a Windows share holds besides the photos
JUNK_SUMMARY = "Skipped 4 files that are not images: .DS_Store (1), ._* (1), Thumbs.db (1), desktop.ini (1)"
BROKEN = {"empty.jpg": b"", "actually_text.jpg": b"<html>403 Forbidden</html>"}
REASONS = {
    "empty.jpg": "empty file, 0 bytes",
    "actually_text.jpg": "not an image: its contents do not match its extension",
}


def _write_photos(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(PER_CLASS):
        Image.new("RGB", (40, 30), (40 * i, 90, 200)).save(folder / f"IMG_{i:04d}.jpg")


def _write_junk(folder: Path) -> None:
    (folder / "._IMG_0001.jpg").write_bytes(APPLE_DOUBLE)
    for name in (".DS_Store", "Thumbs.db", "desktop.ini"):
        (folder / name).write_bytes(b"\x00\x01junk")
    for hidden_folder in ("__MACOSX", ".thumbnails"):  # folders that are not entered, nor counted
        (folder / hidden_folder).mkdir()
        (folder / hidden_folder / "IMG_0001.jpg").write_bytes(APPLE_DOUBLE)


def _class_folders(root: Path, extra: Callable[[Path], None]) -> None:
    for name in CLASSES:
        _write_photos(root / name)
    extra(root / CLASSES[0])


def _image_folder(root: Path, extra: Callable[[Path], None], **options) -> tuple[int, dict]:
    _class_folders(root, extra)
    module = ImageFolderDataModule(
        root=str(root), image_size=32, batch_size=4, num_workers=0, cache="memory", **options
    )
    module.setup("fit")
    return len(module.splits.train) + len(module.splits.val), module.splits.notes


def _cifar_class_folders(root: Path, extra: Callable[[Path], None], **options) -> tuple[int, dict]:
    _class_folders(root / "train", extra)
    _class_folders(root / "test", lambda folder: None)
    module = CIFAR10DataModule(root=str(root), download=False, val_size=2, image_size=32, num_workers=0, **options)
    module.setup("fit")
    return len(module.splits.train) + len(module.splits.val), module.splits.notes


def _predict_listing(root: Path, extra: Callable[[Path], None]) -> tuple[int, dict]:
    _class_folders(root, extra)
    return len(list_image_files(str(root))), {}


@pytest.mark.parametrize("command", [_image_folder, _cifar_class_folders, _predict_listing], ids=lambda f: f.__name__)
def test_hidden_and_system_files_are_skipped_and_summarised_alike_by_every_command(tmp_path, caplog, command) -> None:
    with caplog.at_level(logging.INFO):
        used, notes = command(tmp_path / "photos", _write_junk)
    assert used == len(CLASSES) * PER_CLASS  # the AppleDouble ._IMG_0001.jpg is neither an image nor a bad file
    assert notes.get("bad_file_count", 0) == 0
    summaries = [record.getMessage() for record in caplog.records if record.getMessage().startswith("Skipped ")]
    assert len(summaries) == 1 and summaries[0].startswith(JUNK_SUMMARY), summaries


def test_the_summary_counts_every_kind_and_names_the_most_common_first(tmp_path) -> None:
    files = [tmp_path / name for name in ("._a.jpg", "._b.jpg", "notes.txt", "README", "Thumbs.db")]
    assert skipped_summary(files) == (
        "Skipped 5 files that are not images: ._* (2), *.txt (1), README (1), Thumbs.db (1)"
    )
    assert skipped_summary([tmp_path / ".DS_Store"]) == "Skipped 1 file that is not an image: .DS_Store (1)"
    assert skipped_summary([]) is None


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_file_has_the_same_reason_in_training_cifar_folders_and_predict(tmp_path, name) -> None:
    def write_broken(folder: Path) -> None:
        (folder / name).write_bytes(BROKEN[name])

    broken = tmp_path / "own" / CLASSES[0] / name
    expected = f"{broken} ({REASONS[name]})"
    assert _image_folder(tmp_path / "own", write_broken)[1]["bad_files"] == [expected]
    cifar_broken = tmp_path / "cifar" / "train" / CLASSES[0] / name
    assert _cifar_class_folders(tmp_path / "cifar", write_broken)[1]["bad_files"] == [
        f"{cifar_broken} ({REASONS[name]})"
    ]
    assert reason_file_fails(broken, Preprocessing(32, 32)) == REASONS[name]


def test_a_broken_file_in_a_cifar_class_folder_follows_data_on_bad_file(tmp_path, caplog) -> None:
    def write_broken(folder: Path) -> None:
        (folder / "empty.jpg").write_bytes(b"")

    with caplog.at_level(logging.WARNING):
        used, notes = _cifar_class_folders(tmp_path / "skipped", write_broken)
    assert used == len(CLASSES) * PER_CLASS and notes["bad_file_count"] == 1
    assert "Skipping 1 broken image file(s) (data.on_bad_file=skip)" in caplog.text
    with pytest.raises(UserError, match=r"1 broken image file\(s\): .*empty.jpg \(empty file, 0 bytes\)"):
        _cifar_class_folders(tmp_path / "stopped", write_broken, on_bad_file="error")


def test_predict_lists_a_zero_byte_file_with_trainings_reason_and_skips_junk(trained_run: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    _write_photos(images)
    _write_junk(images)
    (images / "empty.jpg").write_bytes(b"")
    result = run_cli(
        f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}", f"inputs={images}", "trainer.accelerator=cpu",
        f"output_dir={tmp_path / 'run'}", module="transfer_lightning.predict",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {Path(row["path"]).name: row for row in csv.DictReader((tmp_path / "run" / "predictions.csv").open())}
    assert set(rows) == {f"IMG_{i:04d}.jpg" for i in range(PER_CLASS)} | {"empty.jpg"}
    assert rows["empty.jpg"]["error"] == REASONS["empty.jpg"]
    assert JUNK_SUMMARY in result.stdout + result.stderr
