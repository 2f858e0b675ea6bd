"""The CIFAR-10 reader on small files written here: torchvision's layout and class folders."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import TINY, run_cli
from transfer_lightning.data import CIFAR10DataModule
from transfer_lightning.data.cifar10 import CIFAR10_CLASSES
from transfer_lightning.data.fingerprint import split_fingerprint
from transfer_lightning.utils.errors import UserError


def _write_torchvision_layout(root: Path, per_batch: int = 6) -> dict[str, np.ndarray]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3 * 32 * 32), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, size=per_batch)]
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": data, "labels": labels}, handle)
        written[name] = data
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": CIFAR10_CLASSES}, handle)
    return written


def test_reads_torchvision_binary_layout_with_seeded_stable_split(tmp_path: Path) -> None:
    written = _write_torchvision_layout(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), download=False, val_size=5, image_size=32)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.class_names == CIFAR10_CLASSES
    assert (len(dm.splits.train), len(dm.splits.val), len(dm.splits.test)) == (25, 5, 6)
    first_test = torch.from_numpy(written["test_batch"][0].reshape(3, 32, 32))
    assert torch.equal(dm.splits.test[0][0], first_test)

    again = CIFAR10DataModule(root=str(tmp_path), download=False, val_size=5, image_size=32)
    again.setup("fit")
    assert torch.equal(again.splits.val.images, dm.splits.val.images)


def _write_class_folders(root: Path, per_class: int = 3, classes=("cat", "dog", "ship")) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
        (root / split / "notes.txt").write_text("not an image")


def test_reads_class_folder_layout_in_sorted_class_order(tmp_path: Path) -> None:
    _write_class_folders(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), download=False, val_size=2, image_size=32)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.class_names == ["cat", "dog", "ship"]
    assert (len(dm.splits.train) + len(dm.splits.val), len(dm.splits.test)) == (9, 9)
    image, label = dm.splits.test[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    saved = np.array(Image.open(tmp_path / "test" / "cat" / "0000.png"))
    assert torch.equal(image, torch.from_numpy(saved).permute(2, 0, 1)) and label == 0


def test_test_split_missing_a_class_folder_is_named(tmp_path: Path) -> None:
    _write_class_folders(tmp_path)
    for file in (tmp_path / "test" / "dog").iterdir():
        file.unlink()
    (tmp_path / "test" / "dog").rmdir()
    dm = CIFAR10DataModule(root=str(tmp_path), download=False, val_size=2)
    with pytest.raises(UserError, match=r"missing: \['dog'\]"):
        dm.setup("fit")


def test_missing_data_offline_explains_where_files_are_expected(tmp_path: Path) -> None:
    dm = CIFAR10DataModule(root=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(UserError) as error:
        dm.prepare_data()
    message = str(error.value)
    assert "cifar-10-batches-py" in message and "data.download=true" in message
    assert "ROOT/train/<class>" in message


def test_batches_are_resized_and_normalised_on_the_device(tmp_path: Path) -> None:
    _write_class_folders(tmp_path)
    dm = CIFAR10DataModule(root=str(tmp_path), download=False, val_size=2, image_size=64, batch_size=4)
    dm.setup("fit")
    images, labels = next(iter(dm.val_dataloader()))
    assert images.dtype == torch.uint8
    processed, _ = dm.on_after_batch_transfer((images, labels), 0)
    assert processed.shape == (2, 3, 64, 64) and processed.dtype == torch.float32
    restored = dm.preprocessor.unnormalize(processed)
    assert restored.min() >= 0 and restored.max() <= 1


def test_evaluate_with_only_ckpt_path_serves_a_cifar_runs_own_val_split(tmp_path: Path) -> None:
    """The checkpoint carries CIFAR-10's root and split settings (here a non-default seed and val size)."""
    _write_torchvision_layout(tmp_path / "cifar")
    run = tmp_path / "run"
    tiny = [arg for arg in TINY if arg != "data=synthetic"]
    trained = run_cli(
        *tiny, "data=cifar10", f"data.root={tmp_path / 'cifar'}", "data.download=false", "data.val_size=5",
        "data.split_seed=3", "data.image_size=32", f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["data"]["preprocessing"]["crop_size"] == 32  # stored natively, resized on the device
    evaluated = run_cli(
        f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}", "split=val", "trainer.accelerator=cpu",
        f"hydra.run.dir={tmp_path / 'eval'}", module="transfer_lightning.evaluate", cwd=tmp_path,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = json.loads((run / "checkpoints" / "best_eval_val" / "eval_report.json").read_text())
    assert report["context"]["images"] == 5
    assert report["context"]["split_fingerprint"] == summary["data"]["split_fingerprints"]["val"]


def test_a_data_module_asked_for_the_test_split_alone_decodes_no_training_image(tmp_path: Path, monkeypatch) -> None:
    """``evaluate split=test`` serves the official test images only: the 50,000 training images of a
    class-folder copy are listed for their class order, never decoded."""
    from transfer_lightning.data import folder_reader

    _write_class_folders(tmp_path)
    decoded: list[str] = []
    real = folder_reader.decode_folder_split

    def counting(split_dir: Path, *args, **kwargs):
        decoded.append(split_dir.name)
        return real(split_dir, *args, **kwargs)

    monkeypatch.setattr("transfer_lightning.data.cifar10.decode_folder_split", counting)
    whole = CIFAR10DataModule(root=str(tmp_path), download=False, val_size=2, image_size=32)
    whole.setup("test")
    alone = CIFAR10DataModule(root=str(tmp_path), download=False, val_size=2, image_size=32)
    alone.serve_only("test")
    alone.setup("test")
    assert decoded == ["train", "test", "test"]  # the whole set, then the test folder alone
    assert alone.class_names == whole.class_names and (len(alone.splits.train), len(alone.splits.val)) == (0, 0)
    assert split_fingerprint(alone.splits.test) == split_fingerprint(whole.splits.test)
