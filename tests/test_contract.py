"""The preprocessing contract: one decoder and one set of numbers from training to predict and export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from hydra.utils import instantiate
from PIL import Image, ImageOps

from tests.conftest import TINY, compose_config
from tests.contract_images import write_contract_images
from transfer_lightning.data.contract import (
    Preprocessing,
    default_preprocessing,
    preprocessor_for,
    resolve_preprocessing,
)
from transfer_lightning.data.image_files import ImageFileDataset
from transfer_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from transfer_lightning.export import preprocessing_contract
from transfer_lightning.run.builders import build_datamodule, classifier_for
from transfer_lightning.run.checkpoint import load_classifier
from transfer_lightning.utils.errors import UserError

# which split folder and class each contract image goes to (every split needs both classes)
PLACES = {
    "exif6": "train/a", "rgba": "train/a", "png16": "train/a",
    "exif8": "train/b", "gray": "train/b", "cmyk": "train/b",
    "palette": "val/a", "wide_4_3": "val/a",
    "tall_1_3": "val/b",
}  # fmt: skip


def test_old_checkpoint_contract_reads_with_resize_size_and_interpolation_defaults() -> None:
    old = Preprocessing.from_dict({"image_size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    assert old == Preprocessing(64, 64, "bilinear", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert Preprocessing.from_dict(old.to_dict()) == old
    native = default_preprocessing(224).stored_natively(32)
    assert native.to_dict()["crop_size"] == 32 and Preprocessing.from_dict(native.to_dict()) == native


def test_resolve_preprocessing_applies_only_the_data_keys_that_are_set() -> None:
    defaults = Preprocessing(224, 256, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    unset = {"image_size": None, "resize_size": None, "interpolation": None, "mean": None, "std": None}
    assert resolve_preprocessing(unset, defaults) == defaults
    resolved = resolve_preprocessing({**unset, "image_size": 112, "mean": [0.1, 0.2, 0.3]}, defaults)
    assert resolved == Preprocessing(112, 128, "bicubic", (0.1, 0.2, 0.3), (0.5, 0.5, 0.5))  # 256/224 kept
    assert resolve_preprocessing({"resize_size": 300, "interpolation": "bilinear"}, defaults).resize_size == 300
    with pytest.raises(UserError, match="data.resize_size=100 is smaller"):
        resolve_preprocessing({"resize_size": 100}, defaults)


def test_synthetic_and_cifar_refuse_a_resize_size_their_native_images_do_not_use(tmp_path: Path) -> None:
    cfg = compose_config([*TINY, "data.resize_size=40", f"paths.data_dir={tmp_path}"])
    with pytest.raises(UserError, match="data.resize_size=40 does not apply to data=synthetic"):
        build_datamodule(cfg.data)


def _place_contract_images(tmp_path: Path) -> Path:
    files = write_contract_images(tmp_path / "loose")
    root = tmp_path / "photos"
    for name, place in PLACES.items():
        (root / place).mkdir(parents=True, exist_ok=True)
        shutil.copy(files[name], root / place / files[name].name)
    return root


def test_every_file_gives_the_same_input_and_logits_in_training_and_in_predict(tmp_path: Path) -> None:
    """EXIF 6/8, RGBA, 16-bit, grayscale, CMYK, palette, 4:3 and 1:3 files: the training data module's
    tensor for each file equals predict's, and so do the logits of the checkpointed model."""
    root = _place_contract_images(tmp_path)
    cfg = compose_config(
        [*TINY, "data=image_folder", f"data.root={root}", "data.image_size=32", "data.resize_size=36",
         "data.interpolation=bicubic", "data.cache=memory", f"paths.data_dir={tmp_path / 'cache'}"],
    )  # fmt: skip
    preprocessing = resolve_preprocessing(cfg.data, default_preprocessing(cfg.data.image_size))  # as train.py
    datamodule = instantiate(cfg.data, preprocessing=preprocessing)
    datamodule.setup("fit")
    module = classifier_for(cfg, datamodule).eval()
    checkpoint = tmp_path / "model.ckpt"
    torch.save({"state_dict": module.state_dict(), "transfer_lightning": module.checkpoint_record()}, checkpoint)
    loaded = load_classifier(checkpoint)
    assert loaded.record.preprocessing.to_dict()["resize_size"] == 36
    assert loaded.record.preprocessing.to_dict()["interpolation"] == "bicubic"

    seen = []
    for split in ("train", "val"):
        dataset = getattr(datamodule.splits, split)
        files = datamodule.split_files[split]
        predict_items = ImageFileDataset(files, Preprocessing.from_dict(loaded.record.preprocessing.to_dict()))
        for index, path in enumerate(files):
            training_input = datamodule.preprocessor(dataset[index][0].unsqueeze(0), train=False)
            predict_input, key = predict_items[index]
            assert key == index, f"predict could not read {path.name}"
            assert torch.equal(training_input[0], predict_input), f"{path.name}: predict sees another tensor"
            with torch.no_grad():
                assert torch.equal(module(training_input), loaded(predict_input.unsqueeze(0))), path.name
            seen.append(path.stem)
    assert sorted(seen) == sorted(PLACES)


def _reimplemented_from_json(path: Path, contract: dict) -> torch.Tensor:
    """A user's own preprocessing written from the exported JSON alone (plain PIL + torchvision)."""
    with Image.open(path) as image:
        image.draft(None, (contract["resize_size"], contract["resize_size"]))
        image = ImageOps.exif_transpose(image).convert("RGB")
    interpolation = T.InterpolationMode(contract["interpolation"])
    crop = T.CenterCrop(contract["crop_size"])(T.Resize(contract["resize_size"], interpolation)(image))
    pixels = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean, std = torch.tensor(contract["mean"]).view(3, 1, 1), torch.tensor(contract["std"]).view(3, 1, 1)
    return (pixels - mean) / std


def test_exported_json_describes_the_contract_exactly_enough_to_reimplement(tmp_path: Path) -> None:
    files = write_contract_images(tmp_path)
    contract = Preprocessing(32, 40, "bicubic", (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    described = json.loads(json.dumps(preprocessing_contract(contract.to_dict(), ["a", "b"])))
    assert described["input"]["shape"] == ["batch", 3, 32, 32]
    assert "shorter side to 40" in described["preprocessing"] and "centre 32x32 crop" in described["preprocessing"]
    for name in ("exif6", "wide_4_3", "tall_1_3"):
        predicted, _ = ImageFileDataset([files[name]], contract)[0]
        assert torch.allclose(_reimplemented_from_json(files[name], described), predicted, atol=1e-6), name


def test_normalised_pixel_values_are_pinned(trained_run: Path, tmp_path: Path) -> None:
    """A solid (255, 128, 0) photo through the trained checkpoint's contract: ImageNet's
    (x - mean) / std, so swapping mean and std (or dropping either) fails here."""
    photo = tmp_path / "orange.png"
    Image.fromarray(np.full((30, 50, 3), (255, 128, 0), dtype=np.uint8)).save(photo)
    module = load_classifier(trained_run / "checkpoints" / "best.ckpt")
    image, _ = ImageFileDataset([photo], Preprocessing.from_dict(module.record.preprocessing.to_dict()))[0]
    assert image.shape == (3, 32, 32)
    pinned = torch.tensor([2.2489083, 0.2051821, -1.8044444])  # (1-.485)/.229, (128/255-.456)/.224, -.406/.225
    assert torch.allclose(image[:, 16, 16], pinned, atol=1e-5), image[:, 16, 16]


def test_the_shared_fixture_model_learns_the_synthetic_colours(trained_run: Path) -> None:
    summary = json.loads((trained_run / "run_summary.json").read_text())
    assert summary["test_acc"] > 0.9, summary["test_per_class_acc"]
    assert min(summary["test_per_class_acc"].values()) > 0.5


@pytest.mark.parametrize(
    ("values", "mode", "expected"),
    [
        ([[0, 50_000], [100_000, 25_000]], "I", [[0, 128], [255, 64]]),  # 32-bit: stretched from its range
        ([[3.5, 3.5], [3.5, 3.5]], "F", [[0, 0], [0, 0]]),  # one float value: nothing to stretch
        ([[-1.0, 0.0], [1.0, 0.5]], "F", [[0, 128], [255, 191]]),  # float: stretched from its range
        ([[0, 65_535], [257, 200]], "I", [[0, 255], [1, 1]]),  # 16-bit range in 32 bits: / 257
        ([[100, 65_535], [257, 200]], "I", [[0, 255], [1, 1]]),  # / 257, not stretched from 100 (200 -> 0)
        ([[0, 255], [100, 7]], "I", [[0, 255], [100, 7]]),  # 8-bit range: as it is
        ([[257, 65_536], [257, 65_536]], "I", [[0, 255], [0, 255]]),  # above 16 bits: stretched from 257
        ([[0, 256], [0, 256]], "I", [[0, 1], [0, 1]]),  # above 8 bits: / 257
        ([[-5, 100], [-5, 250]], "I", [[0, 105], [0, 255]]),  # negative: stretched from its range
        ([[0.0, 3.5], [7.0, 7.0]], "F", [[0, 128], [255, 255]]),  # the middle, in double precision: 127.5 -> 128
    ],
)
def test_wide_grayscale_pixels_are_scaled_to_8_bits_not_clipped(values: list, mode: str, expected: list) -> None:
    from transfer_lightning.data.decode import to_rgb

    dtype = np.float32 if mode == "F" else np.int32
    rgb = np.asarray(to_rgb(Image.fromarray(np.array(values, dtype=dtype), mode=mode)))
    assert rgb.shape == (2, 2, 3) and (rgb == np.array(expected, dtype=np.uint8)[..., None]).all()


# each value's own range (interpolation, three means, positive stds) is its schema's: tests/test_validation.py
def test_contract_sentence_for_a_resize_below_the_crop() -> None:
    with pytest.raises(UserError) as refused:
        Preprocessing(64, 48)
    assert str(refused.value) == (
        "data.resize_size=48 is smaller than the crop of 64 px; set it to at least data.image_size (or null)"
    )


def test_the_contract_as_plain_containers_and_back_and_an_old_checkpoints_defaults() -> None:
    contract = Preprocessing(64, 72, "bicubic", (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert contract.to_dict() == {
        "image_size": 64, "resize_size": 72, "interpolation": "bicubic", "mean": [0.1, 0.2, 0.3],
        "std": [0.4, 0.5, 0.6], "crop_size": 64,
    }  # fmt: skip
    assert Preprocessing.from_dict(contract.to_dict()) == contract
    old = Preprocessing.from_dict({"image_size": 32})  # recorded before mean/std were part of it: ImageNet's
    assert (old.resize_size, old.interpolation, old.mean, old.std) == (32, "bilinear", IMAGENET_MEAN, IMAGENET_STD)
    native = contract.stored_natively(32)
    assert (native.resize_size, native.crop_size, native.decoded_size) == (32, 32, 32)
    assert default_preprocessing().image_size == 224 and default_preprocessing(64) == Preprocessing(64, 64)


def test_the_described_contract_names_the_device_resize_only_when_there_is_one() -> None:
    same = Preprocessing(32, 36, "bicubic")
    assert same.describe() == (
        "decode upright RGB (EXIF orientation applied, transparency over white, 16-bit scaled to 8-bit; JPEGs with "
        "PIL Image.draft(None, (36, 36))), resize the shorter side to 36 px (torchvision Resize, PIL bicubic, "
        "uint8), take the centre 32x32 crop (torchvision CenterCrop); scale to [0, 1] (x / 255) as float32; then "
        "(x - mean) / std per channel"
    )
    upscaled = Preprocessing(64, 64).stored_natively(32)
    assert (
        "; resize to 64x64 (torch.nn.functional.interpolate mode=bilinear, align_corners=False, antialias=False); then"
        in upscaled.describe()
    )
    downscaled = Preprocessing(16, 32, crop_size=32)
    assert (
        "resize to 16x16 (torch.nn.functional.interpolate mode=bilinear, align_corners=False, antialias=True)"
        in downscaled.describe()
    )


def test_typed_mean_and_std_become_float_tuples_and_inference_preprocessing_follows_the_contract() -> None:
    resolved = resolve_preprocessing({"mean": [0, 0, 1], "std": [1, 2, 3]}, Preprocessing(32, 32))
    assert resolved.mean == (0.0, 0.0, 1.0) and resolved.std == (1.0, 2.0, 3.0)
    contract = Preprocessing(32, 40, "bicubic", (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    for given in (contract, contract.to_dict()):
        step = preprocessor_for(given)
        assert (step.image_size, step.augmentation, step.interpolation) == (32, None, "bicubic")
        assert torch.allclose(step.mean.flatten(), torch.tensor([0.1, 0.2, 0.3]))
        assert torch.allclose(step.std.flatten(), torch.tensor([0.4, 0.5, 0.6]))


def test_the_run_log_says_the_preprocessing_in_one_line_a_stored_size_included() -> None:
    assert Preprocessing(224, 256).summary() == (
        "224 px (resize 256, centre crop 224, bilinear), mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)"
    )
    cifar_at_64 = Preprocessing(64, 64, "bicubic", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).stored_natively(32)
    assert cifar_at_64.summary() == (
        "64 px (stored at 32 px, resized to 64 on the device, bicubic), mean (0.5, 0.5, 0.5), std (0.25, 0.25, 0.25)"
    )
