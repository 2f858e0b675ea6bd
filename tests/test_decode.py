"""The one decoder (data/decode.py) against independent references: torchvision's own Resize +
CenterCrop, PIL's own EXIF transpose and mode conversions, and hand-computed pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image, ImageOps
from torchvision.transforms import InterpolationMode

from tests.contract_images import write_contract_images
from transfer_lightning.data.contract import Preprocessing
from transfer_lightning.data.decode import decode_for, decode_square, open_rgb, to_rgb


def _reference(image: Image.Image, size: int, resize_size: int, interpolation: str) -> torch.Tensor:
    mode = InterpolationMode(interpolation)
    return T.PILToTensor()(T.CenterCrop(size)(T.Resize(resize_size, interpolation=mode)(image)))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_contract_images(tmp_path_factory.mktemp("decode"))


@pytest.mark.parametrize(("size", "resize_size", "interpolation"), [(16, 20, "bicubic"), (24, 24, "bilinear")])
@pytest.mark.parametrize("name", ["wide_4_3", "palette"])
def test_decode_is_torchvisions_resize_then_centre_crop(files, name, size, resize_size, interpolation) -> None:
    with Image.open(files[name]) as image:
        expected = _reference(image.convert("RGB"), size, resize_size, interpolation)
    decoded = decode_square(files[name], size, resize_size, interpolation)
    assert decoded.dtype == torch.uint8 and decoded.is_contiguous() and torch.equal(decoded, expected)
    contract = Preprocessing(size, resize_size, interpolation)
    assert torch.equal(decode_for(files[name], contract), expected)


def test_without_a_resize_size_the_shorter_side_goes_to_the_crop_and_an_exact_side_is_not_resampled(tmp_path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = tmp_path / "exact.png"
    Image.fromarray(pixels).save(path)
    crop = torch.from_numpy(pixels[:, 5:25]).permute(2, 0, 1)  # shorter side already 20: only the crop
    assert torch.equal(decode_square(path, 20), crop)
    assert torch.equal(decode_square(path, 10), _reference(Image.fromarray(pixels), 10, 10, "bilinear"))


@pytest.mark.parametrize("name", ["exif6", "exif8"])
def test_exif_orientation_is_applied(files, name) -> None:
    with Image.open(files[name]) as image:
        upright = ImageOps.exif_transpose(image).convert("RGB")
        assert image.size[::-1] == upright.size  # orientations 6 and 8 turn the picture a quarter
    assert np.array_equal(np.asarray(open_rgb(files[name])), np.asarray(upright))


def test_transparency_is_laid_over_white(tmp_path) -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (200, 10, 10, 0)  # invisible red: white
    rgba[0, 1] = (0, 0, 0, 255)  # opaque black: black
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black: mid grey
    rgba[1, 1] = (10, 200, 10, 255)
    rgb = np.asarray(to_rgb(Image.fromarray(rgba, mode="RGBA")))
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[0, 1].tolist() == [0, 0, 0]
    assert rgb[1, 0].tolist() == [127, 127, 127] and rgb[1, 1].tolist() == [10, 200, 10]
    gray_alpha = Image.fromarray(np.array([[[0, 0], [0, 255]]], dtype=np.uint8), mode="LA")
    assert np.asarray(to_rgb(gray_alpha)).tolist() == [[[255, 255, 255], [0, 0, 0]]]
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0  # palette entry 0 (black) is transparent
    assert np.asarray(to_rgb(palette)).tolist() == [[[255, 255, 255], [255, 0, 0]]]


def test_a_colour_marked_transparent_in_a_grayscale_or_rgb_png_is_laid_over_white(tmp_path) -> None:
    Image.fromarray(np.array([[0, 100]], dtype=np.uint8)).save(tmp_path / "gray.png", transparency=0)
    rgb = np.array([[[0, 0, 0], [10, 200, 10]]], dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png", transparency=(0, 0, 0))  # PNG tRNS: black is transparent
    for name, kept in (("gray.png", [100, 100, 100]), ("rgb.png", [10, 200, 10])):
        with Image.open(tmp_path / name) as image:
            assert "transparency" in image.info and image.mode in ("L", "RGB")
        assert np.asarray(open_rgb(tmp_path / name)).tolist() == [[[255, 255, 255], kept]]


def test_other_modes_are_converted_by_pil_and_rgb_is_kept_as_it_is(files) -> None:
    for name in ("cmyk", "gray"):
        with Image.open(files[name]) as image:
            assert image.mode in ("CMYK", "L")
            assert np.array_equal(np.asarray(to_rgb(image)), np.asarray(image.convert("RGB")))
    rgb = Image.new("RGB", (1, 1), (1, 2, 3))
    assert to_rgb(rgb) is rgb


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path) -> None:
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert np.asarray(open_rgb(path))[..., 0].tolist() == [[0, 1, 128, 255]]


@pytest.mark.parametrize(
    ("mode", "byte_order"),
    [("I;16", "<"), ("I;16B", ">"), ("I;16L", "<"), ("I;16N", "=")],
    ids=["I16", "I16B", "I16L", "I16N"],
)
def test_every_sixteen_bit_layout_is_scaled_not_clipped(mode: str, byte_order: str) -> None:
    values = np.array([[0, 257, 32896, 65535]], dtype=f"{byte_order}u2")
    image = Image.frombytes(mode, (4, 1), values.tobytes())
    assert np.asarray(image.convert("RGB"))[..., 0].tolist() == [[0, 255, 255, 255]]  # what PIL alone gives
    assert np.asarray(to_rgb(image)).tolist() == [[[v, v, v] for v in (0, 1, 128, 255)]]


def test_palette_with_alpha_and_premultiplied_rgba_are_laid_over_white() -> None:
    palette_alpha = Image.new("PA", (2, 1))
    palette_alpha.putpalette([200, 10, 10] + [0] * 765)
    palette_alpha.putpixel((0, 0), (0, 0))  # the red entry, fully transparent: white
    palette_alpha.putpixel((1, 0), (0, 255))  # the red entry, opaque: red
    assert np.asarray(to_rgb(palette_alpha)).tolist() == [[[255, 255, 255], [200, 10, 10]]]
    premultiplied = Image.frombytes("RGBa", (2, 1), bytes([0, 0, 0, 0, 10, 200, 10, 255]))
    assert np.asarray(to_rgb(premultiplied)).tolist() == [[[255, 255, 255], [10, 200, 10]]]


def test_large_jpegs_are_drafted_down_to_the_resize_size_before_resizing(tmp_path) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (400, 600, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, quality=90)
    assert min(open_rgb(path, min_side=50).size) >= 50 and open_rgb(path, min_side=50).size[0] < 600
    assert open_rgb(path).size == (600, 400)
    with Image.open(path) as image:
        image.draft(None, (50, 50))
        expected = _reference(image.convert("RGB"), 48, 50, "bilinear")
    assert torch.equal(decode_square(path, 48, 50), expected)
