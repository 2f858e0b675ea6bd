"""data=image_folder on folders this file writes: every mess of a real photo folder, both layouts,
splits, class balance, caches, the user's mistakes, and one end-to-end CLI run."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
import PIL
import pytest
import torch
import torchvision
from PIL import Image

from tests.conftest import ROOT, TINY, compose_config, run_cli
from transfer_lightning.data import ImageFolderDataModule
from transfer_lightning.data.decode import decode_square, decoder_version, open_rgb
from transfer_lightning.train import check_training_config
from transfer_lightning.utils.errors import UserError

COLOURS = {"ants": (200, 40, 40), "honey bees": (40, 200, 40), "ünïcode wasps": (40, 40, 200)}


def write_photo(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30), seed: int = 0) -> Path:
    """A JPEG of one colour with a little noise (width x height = ``size``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.integers(-10, 10, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=95)
    return path


def write_class_folders(root: Path, counts: dict[str, int], start: int = 0) -> None:
    for name, count in counts.items():
        for i in range(start, start + count):
            write_photo(root / name / f"img_{i:03d}.jpg", COLOURS.get(name, (128, 128, 128)), seed=i)


def write_broken_files(folder: Path) -> list[Path]:
    """A zero-byte JPEG, a truncated JPEG and a text file named .jpg."""
    folder.mkdir(parents=True, exist_ok=True)
    empty, truncated, text = folder / "empty.jpg", folder / "truncated.jpg", folder / "actually_text.jpg"
    empty.write_bytes(b"")
    whole = write_photo(folder / "whole.jpg", (90, 90, 90), size=(64, 48)).read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    (folder / "whole.jpg").unlink()
    text.write_text("<html>403 Forbidden</html>")
    return [empty, truncated, text]


def make_module(root: Path, **overrides) -> ImageFolderDataModule:
    options = {"image_size": 32, "batch_size": 8, "num_workers": 0, "cache": "memory", **overrides}
    module = ImageFolderDataModule(root=str(root), **options)
    module.setup("fit")
    return module


def dataset_files(module: ImageFolderDataModule, split: str) -> list[int]:
    """The images of a split as comparable keys (their pixel sums and labels)."""
    dataset = getattr(module.splits, split)
    return sorted((int(dataset[i][0].long().sum()), dataset[i][1]) for i in range(len(dataset)))


# -- image modes, sizes, orientation ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("gray.png", lambda: Image.new("L", (30, 20), 77), (77, 77, 77)),
        ("transparent.png", lambda: Image.new("RGBA", (30, 20), (0, 0, 0, 0)), (255, 255, 255)),
        ("half_red.png", lambda: Image.new("RGBA", (30, 20), (255, 0, 0, 128)), (255, 127, 127)),
        ("palette.gif", lambda: Image.new("RGB", (30, 20), (0, 0, 255)).convert("P"), (0, 0, 255)),
        ("cmyk.jpg", lambda: Image.new("CMYK", (30, 20), (0, 255, 255, 0)), (255, 0, 0)),
        ("deep16.png", lambda: Image.fromarray(np.full((20, 30), 100 * 257, dtype=np.uint16)), (100, 100, 100)),
    ],
)
def test_every_image_mode_becomes_8_bit_rgb_with_the_right_colour(tmp_path, name, make, expected) -> None:
    path = tmp_path / name
    make().save(path)
    if name == "deep16.png":
        assert Image.open(path).mode.startswith("I"), "the test must really write a 16-bit PNG"
    image = decode_square(path, 32)
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    mean = image.float().mean(dim=(1, 2))
    assert torch.allclose(mean, torch.tensor(expected, dtype=torch.float), atol=6), (name, mean)


@pytest.mark.parametrize("size", [(120, 40), (40, 120), (300, 299), (17, 9)])
def test_any_size_becomes_a_square_of_the_centre_by_shorter_side_and_centre_crop(tmp_path, size) -> None:
    width, height = size
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = 255  # red border ...
    if width > height:  # ... green centre square of the shorter side
        pixels[:, (width - height) // 2 : (width + height) // 2] = (0, 255, 0)
    else:
        pixels[(height - width) // 2 : (height + width) // 2, :] = (0, 255, 0)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    image = decode_square(tmp_path / "photo.png", 32)
    assert image.shape == (3, 32, 32)
    centre_columns = image[:, :, 2:-2].float()  # bilinear edges may blend one pixel
    assert centre_columns[1].min() > 200 and centre_columns[0].max() < 60


def test_phone_photos_are_turned_upright_by_their_exif_orientation(tmp_path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display", as phones write portrait shots
    Image.new("RGB", (40, 20), (10, 10, 10)).save(tmp_path / "portrait.jpg", exif=exif)
    assert Image.open(tmp_path / "portrait.jpg").size == (40, 20)
    assert open_rgb(tmp_path / "portrait.jpg").size == (20, 40)


def test_large_jpegs_decode_to_the_same_square_at_reduced_scale(tmp_path) -> None:
    write_photo(tmp_path / "big.jpg", (30, 160, 220), size=(1600, 1200))
    image = decode_square(tmp_path / "big.jpg", 64)
    assert image.shape == (3, 64, 64)
    assert torch.allclose(image.float().mean(dim=(1, 2)), torch.tensor([30.0, 160.0, 220.0]), atol=4)


# -- files that are not images ------------------------------------------------------------------
def test_non_image_and_hidden_files_are_ignored_by_extension(tmp_path) -> None:
    write_class_folders(tmp_path, {"ants": 5, "honey bees": 5})
    for junk in ("notes.txt", ".DS_Store", "Thumbs.db", "._img_000.jpg", "desktop.ini"):
        (tmp_path / "ants" / junk).write_bytes(b"\x00\x05junk")
    (tmp_path / "ants" / "__MACOSX").mkdir()
    (tmp_path / "ants" / "__MACOSX" / "img_000.jpg").write_bytes(b"resource fork")
    module = make_module(tmp_path)
    notes = module.splits.notes
    assert notes["bad_file_count"] == 0
    assert notes["ignored_non_image_files"] == 5  # __MACOSX/ is skipped without counting
    assert sum(notes["class_counts"]["train"].values()) + sum(notes["class_counts"]["val"].values()) == 10


@pytest.mark.parametrize("cache", ["none", "memory"])
def test_broken_files_are_found_before_training_and_skipped_with_their_paths(tmp_path, cache, caplog) -> None:
    write_class_folders(tmp_path, {"ants": 6, "honey bees": 6})
    broken = write_broken_files(tmp_path / "ants")
    with caplog.at_level(logging.WARNING):
        module = make_module(tmp_path, cache=cache)
    notes = module.splits.notes
    assert notes["bad_file_count"] == 3
    for path in broken:
        assert any(entry.startswith(str(path)) for entry in notes["bad_files"]), path
        assert str(path) in caplog.text
    assert any("empty file" in entry for entry in notes["bad_files"])
    assert len(module.splits.train) + len(module.splits.val) == 12
    for split in ("train", "val"):  # every remaining image decodes: nothing can fail at epoch 3
        dataset = getattr(module.splits, split)
        assert all(dataset[i][0].shape == (3, 32, 32) for i in range(len(dataset)))


def test_on_bad_file_error_stops_before_training_naming_the_files(tmp_path) -> None:
    write_class_folders(tmp_path, {"ants": 4, "honey bees": 4})
    broken = write_broken_files(tmp_path / "honey bees")
    with pytest.raises(UserError, match="3 broken image file") as error:
        make_module(tmp_path, on_bad_file="error")
    assert all(str(path) in str(error.value) for path in broken)


# -- layouts and splits -------------------------------------------------------------------------
def test_split_folders_layout_uses_train_val_and_test_folders(tmp_path) -> None:
    write_class_folders(tmp_path / "train", {"ants": 5, "honey bees": 4})
    write_class_folders(tmp_path / "val", {"ants": 2, "honey bees": 3}, start=100)
    write_class_folders(tmp_path / "test", {"ants": 1, "honey bees": 2}, start=200)
    module = make_module(tmp_path)
    assert [len(module.splits.train), len(module.splits.val), len(module.splits.test)] == [9, 5, 3]
    assert module.splits.notes["layout"] == "split folders"
    assert module.splits.notes["class_counts"]["test"] == {"ants": 1, "honey bees": 2}
    assert "test_split" not in module.splits.notes


def test_without_a_test_split_the_test_uses_val_and_the_notes_say_so(tmp_path) -> None:
    write_class_folders(tmp_path / "train", {"ants": 5, "honey bees": 4})
    write_class_folders(tmp_path / "val", {"ants": 2, "honey bees": 3}, start=100)
    module = make_module(tmp_path)
    assert module.splits.test is module.splits.val
    assert module.splits.notes["test_split"] == "val"
    assert "used val" in module.splits.notes["test_note"]


def test_evaluate_on_a_split_folder_decodes_that_folder_alone_and_says_nothing_of_a_test_split(
    tmp_path, caplog
) -> None:
    write_class_folders(tmp_path / "train", {"ants": 5, "honey bees": 4})
    write_class_folders(tmp_path / "val", {"ants": 2, "honey bees": 3}, start=100)
    whole = make_module(tmp_path)
    alone = ImageFolderDataModule(root=str(tmp_path), image_size=32, batch_size=8, num_workers=0, cache="memory")
    alone.serve_only("val")
    caplog.clear()  # the whole module's setup warned of no test split: it serves one
    with caplog.at_level("INFO"):
        alone.setup("validate")
    assert (len(alone.splits.train), len(alone.splits.test)) == (0, 0) and alone.class_names == whole.class_names
    assert dataset_files(alone, "val") == dataset_files(whole, "val")
    assert not [message for message in caplog.messages if "No test split" in message]  # split=val asked for none
    assert alone.split_files["val"] == whole.split_files["val"]


def test_class_names_are_the_sorted_folder_names_with_spaces_and_unicode(tmp_path) -> None:
    write_class_folders(tmp_path, {"ünïcode wasps": 5, "honey bees": 5, "ants": 5})
    module = make_module(tmp_path)
    assert module.class_names == ["ants", "honey bees", "ünïcode wasps"]
    _, label = module.splits.train[0]
    assert module.class_names[label] in COLOURS


def test_single_folder_split_is_stratified_seeded_and_stable(tmp_path) -> None:
    write_class_folders(tmp_path, {"ants": 10, "honey bees": 20, "ünïcode wasps": 30})
    options = {"val_fraction": 0.2, "test_fraction": 0.1, "split_seed": 7}
    first, again = make_module(tmp_path, **options), make_module(tmp_path, **options)
    counts = first.splits.notes["class_counts"]
    assert counts["val"] == {"ants": 2, "honey bees": 4, "ünïcode wasps": 6}
    assert counts["test"] == {"ants": 1, "honey bees": 2, "ünïcode wasps": 3}
    assert counts["train"] == {"ants": 7, "honey bees": 14, "ünïcode wasps": 21}
    for split in ("train", "val", "test"):
        assert dataset_files(first, split) == dataset_files(again, split)
    keys = [set(dataset_files(first, split)) for split in ("train", "val", "test")]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    other_seed = make_module(tmp_path, **{**options, "split_seed": 8})
    assert dataset_files(other_seed, "val") != dataset_files(first, "val")


# -- class balance ------------------------------------------------------------------------------
def test_imbalance_is_reported_and_the_weighted_sampler_draws_classes_equally(tmp_path, caplog) -> None:
    write_class_folders(tmp_path, {"ants": 40, "honey bees": 5})
    with caplog.at_level(logging.INFO):
        plain = make_module(tmp_path)
    assert "ants: 32, honey bees: 4" in caplog.text and "imbalanced" in caplog.text
    balanced = make_module(tmp_path, balance="weighted_sampler")
    torch.manual_seed(0)
    drawn = Counter()
    for _ in range(40):
        for _, labels in balanced.train_dataloader():
            drawn.update(labels.tolist())
    share_of_minority = drawn[1] / sum(drawn.values())
    assert 0.42 < share_of_minority < 0.58, drawn
    plain_drawn = Counter(label for _, labels in plain.train_dataloader() for label in labels.tolist())
    assert plain_drawn == {0: 32, 1: 4}


# -- caches -------------------------------------------------------------------------------------
def test_memory_cache_serves_the_same_images_as_decoding_each_epoch(tmp_path) -> None:
    write_class_folders(tmp_path, {"ants": 4, "honey bees": 4})
    Image.new("CMYK", (50, 30), (0, 255, 255, 0)).save(tmp_path / "ants" / "cmyk.jpg")
    cached, streamed = make_module(tmp_path, cache="memory"), make_module(tmp_path, cache="none")
    assert cached.in_memory and not streamed.in_memory
    for split in ("train", "val"):
        assert dataset_files(cached, split) == dataset_files(streamed, split)
    first_path = streamed.splits.train.paths[0]
    assert any(
        torch.equal(cached.splits.train[i][0], decode_square(first_path, 32)) for i in range(len(cached.splits.train))
    )


def test_disk_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path, monkeypatch) -> None:
    root, cache_dir = tmp_path / "photos", tmp_path / "cache"
    write_class_folders(root, {"ants": 4, "honey bees": 4})
    write_broken_files(root / "ants")
    first = make_module(root, cache="disk", cache_dir=str(cache_dir))
    cache_files = list(cache_dir.glob("*.pt"))
    assert len(cache_files) == 1

    def refuse(self, path):
        raise AssertionError("decoded although the disk cache is valid")

    monkeypatch.setattr(ImageFolderDataModule, "_decode", refuse)
    reused = make_module(root, cache="disk", cache_dir=str(cache_dir))
    assert reused.splits.notes["bad_file_count"] == 3
    for split in ("train", "val"):
        assert dataset_files(reused, split) == dataset_files(first, split)
    monkeypatch.undo()

    changed = root / "honey bees" / "img_000.jpg"
    write_photo(changed, (250, 250, 0), seed=99)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    rebuilt = make_module(root, cache="disk", cache_dir=str(cache_dir))
    assert [path.name for path in cache_dir.glob("*.pt")] != [path.name for path in cache_files]
    assert len(list(cache_dir.glob("*.pt"))) == 1  # the stale cache is removed
    yellow = decode_square(changed, 32)
    everything = [rebuilt.splits.train[i][0] for i in range(len(rebuilt.splits.train))]
    everything += [rebuilt.splits.val[i][0] for i in range(len(rebuilt.splits.val))]
    assert any(torch.equal(image, yellow) for image in everything)


def test_disk_cache_is_rebuilt_when_the_decoder_changes(tmp_path, monkeypatch) -> None:
    from transfer_lightning.data import image_cache

    root, cache_dir = tmp_path / "photos", tmp_path / "cache"
    write_class_folders(root, {"ants": 2, "honey bees": 2})
    make_module(root, cache="disk", cache_dir=str(cache_dir))
    built = [path.name for path in cache_dir.glob("*.pt")]
    assert len(built) == 1 and f"pillow={PIL.__version__} torchvision={torchvision.__version__}" in decoder_version()
    monkeypatch.setattr(image_cache, "decoder_version", lambda: "an edited decoder")  # e.g. after a git pull
    make_module(root, cache="disk", cache_dir=str(cache_dir))
    assert [path.name for path in cache_dir.glob("*.pt")] not in ([], built)  # a new cache, the stale one removed


# -- the user's mistakes ------------------------------------------------------------------------
def _missing_root(root: Path) -> None:
    pass


def _no_images(root: Path) -> None:
    (root / "ants").mkdir(parents=True)
    (root / "bees").mkdir()
    (root / "ants" / "notes.txt").write_text("no photos yet")


def _one_class(root: Path) -> None:
    write_class_folders(root, {"ants": 3})


def _class_missing_in_val(root: Path) -> None:
    write_class_folders(root / "train", {"ants": 3, "honey bees": 3})
    write_class_folders(root / "val", {"ants": 2})


def _empty_class_folder(root: Path) -> None:
    write_class_folders(root, {"ants": 3, "honey bees": 3})
    (root / "wasps").mkdir()


def _every_image_of_a_class_broken(root: Path) -> None:
    write_class_folders(root, {"ants": 3})
    write_broken_files(root / "honey bees")


def _images_without_class_folders(root: Path) -> None:
    write_photo(root / "a.jpg", (1, 2, 3))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_missing_root, "does not exist"),
        (_no_images, "no images under"),
        (_one_class, r"only one class folder \('ants'\)"),
        (_class_missing_in_val, r"missing: \['honey bees'\]"),
        (_empty_class_folder, "class folders hold no images: .*wasps"),
        (_every_image_of_a_class_broken, r"no images of \['honey bees'\]"),
        (_images_without_class_folders, "no class folders"),
    ],
)
def test_bad_folders_are_one_clear_user_error_before_training(tmp_path, make, message) -> None:
    root = tmp_path / "photos"
    make(root)
    with pytest.raises(UserError, match=message):
        make_module(root)


def test_image_folder_without_a_root_is_refused_by_the_config_rules() -> None:
    with pytest.raises(UserError, match="data.root=None"):
        check_training_config(compose_config(["data=image_folder"]))
    with pytest.raises(UserError, match="data.cache='ram'"):
        check_training_config(compose_config(["data=image_folder", "data.root=/x", "data.cache=ram"]))


# -- training-time augmentation -----------------------------------------------------------------
def test_photos_are_augmented_with_random_resized_crops_and_evaluated_without() -> None:
    torch.manual_seed(0)
    preprocessor = ImageFolderDataModule(root="unused", image_size=32, augment="standard").preprocessor
    assert preprocessor.augmentation.settings.train_crop == "random_resized"  # photos: not CIFAR's padded crop
    batch = (torch.rand(6, 3, 32, 32) * 255).to(torch.uint8)
    assert preprocessor(batch, train=True).shape == (6, 3, 32, 32)
    assert not torch.equal(preprocessor(batch, train=True), preprocessor(batch, train=False))
    assert torch.equal(preprocessor(batch, train=False), preprocessor(batch, train=False))


# -- the CLI, end to end ------------------------------------------------------------------------
def test_a_messy_folder_trains_from_the_cli_and_the_summary_reports_skipped_files(tmp_path) -> None:
    root = tmp_path / "phone dump"
    write_class_folders(root, {"ants": 6, "honey bees": 6, "ünïcode wasps": 6})
    Image.new("RGBA", (50, 70), (255, 0, 0, 128)).save(root / "ants" / "sticker.png")
    Image.new("CMYK", (90, 30), (0, 255, 255, 0)).save(root / "ants" / "print.jpg")
    Image.fromarray(np.full((20, 30), 40000, dtype=np.uint16)).save(root / "honey bees" / "scan16.png")
    Image.new("RGB", (30, 30), (0, 0, 255)).convert("P").save(root / "ünïcode wasps" / "anim.gif")
    (root / "ants" / "notes.txt").write_text("field notes")
    (root / ".DS_Store").write_bytes(b"\x00")
    broken = write_broken_files(root / "honey bees")
    run = tmp_path / "run"
    args = [a for a in TINY if a != "data=synthetic"]
    result = run_cli(
        *args, "data=image_folder", f"data.root={root}", "data.image_size=32", "data.augment=standard",
        "data.batch_size=8", f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["class_names"] == ["ants", "honey bees", "ünïcode wasps"]
    assert summary["test_split"] == "val" and summary["data"]["test_split"] == "val"
    assert summary["data"]["bad_file_count"] == 3
    assert {entry.split(" (")[0] for entry in summary["data"]["bad_files"]} == {str(p) for p in broken}
    assert summary["data"]["class_counts"]["train"]["ants"] + summary["data"]["class_counts"]["val"]["ants"] == 8
    assert set(summary["test_per_class_acc"]) == set(summary["class_names"])
    checkpoint = torch.load(summary["best_ckpt"], map_location="cpu", weights_only=True)
    assert checkpoint["transfer_lightning"]["class_names"] == summary["class_names"]
    assert checkpoint["transfer_lightning"]["preprocessing"]["image_size"] == 32
    log = (run / "train.log").read_text()
    assert "Skipping 3 broken image file(s)" in log and "images/s" in log


@pytest.mark.slow  # fast cover: test_imbalance_is_reported_and_the_weighted_sampler_... and tests/test_ddp.py
def test_the_weighted_sampler_balances_classes_across_two_ddp_processes(tmp_path) -> None:
    root, run = tmp_path / "photos", tmp_path / "run"
    write_class_folders(root, {"ants": 30, "honey bees": 5})  # train: 24 and 4
    args = [a for a in TINY if a != "data=synthetic"]
    result = run_cli(
        *args, "data=image_folder", f"data.root={root}", "data.image_size=32", "data.batch_size=4",
        "data.balance=weighted_sampler", "trainer.max_epochs=3", "trainer=ddp", "trainer.accelerator=cpu",
        "trainer.devices=2", "trainer.sync_batchnorm=false", f"hydra.run.dir={run}", f"paths.data_dir={tmp_path}",
        "+callbacks.record_labels._target_=tests.record_labels.RecordTrainingLabels",
        env={"PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "run_summary.json").read_text())["status"] == "completed"
    per_rank = [json.loads((run / f"training_labels_rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [len(labels) for labels in per_rank] == [3 * 14, 3 * 14]  # each process: half of 28 draws per epoch
    drawn = Counter(label for labels in per_rank for label in labels)
    assert 0.3 < drawn[1] / sum(drawn.values()) < 0.7, drawn  # unweighted it would be 4/28 = 0.14


def test_a_missing_root_is_one_sentence_from_the_cli_without_traceback(tmp_path) -> None:
    args = [a for a in TINY if a != "data=synthetic"]
    result = run_cli(*args, "data=image_folder", f"data.root={tmp_path / 'nope'}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr + result.stdout


def test_a_data_module_built_in_code_keeps_both_caches_out_of_its_data_root(tmp_path, monkeypatch) -> None:
    """Without data.cache_dir / data.feature_cache_dir (built in code, not by the CLI), from the parent of
    root=data: neither cache lands in the data root, where it would be read as a class next time."""
    monkeypatch.chdir(tmp_path)
    for name in ("cats", "dogs"):
        (tmp_path / "data" / name).mkdir(parents=True)
    datamodule = ImageFolderDataModule(root="data")
    for folder in (datamodule.cache_dir, Path(datamodule.feature_cache_dir)):
        assert folder.is_absolute() and not folder.is_relative_to(tmp_path / "data"), folder


def test_a_sweeps_jobs_decode_unchanged_images_once_and_a_changed_image_again(tmp_path, monkeypatch) -> None:
    from transfer_lightning.data import scan

    write_class_folders(tmp_path, {"cat": 3, "dog": 3})
    decoded: list[Path] = []

    def counting_decode(path: Path) -> torch.Tensor:
        decoded.append(path)
        return decode_square(path, 32)

    files = sorted(tmp_path.rglob("*.jpg"))
    first = scan.decode_into_tensor(files, counting_decode, 32, "Decoding", decode_key="square 32")
    again = scan.decode_into_tensor(files, counting_decode, 32, "Decoding", decode_key="square 32")
    assert again is first and len(decoded) == 6  # the second job decoded nothing
    scan.decode_into_tensor(files, counting_decode, 32, "Decoding", decode_key="square 40")
    assert len(decoded) == 12  # other decode settings: decoded again
    write_photo(files[0], (0, 0, 255), seed=99)  # the file changes (the same name)
    changed = scan.decode_into_tensor(files, counting_decode, 32, "Decoding", decode_key="square 32")
    assert len(decoded) == 18 and not torch.equal(changed.images[0], first.images[0])
    scan.decode_into_tensor(files, counting_decode, 32, "Decoding")
    assert len(decoded) == 24  # no key: always decoded
    monkeypatch.setattr(scan, "KEPT_DECODE_BYTES", changed.images.nbytes - 1)  # more than a process keeps
    scan.decode_into_tensor(files, counting_decode, 32, "Decoding", decode_key="square 48")
    scan.decode_into_tensor(files, counting_decode, 32, "Decoding", decode_key="square 48")
    assert len(decoded) == 36  # decoded each time, never held
