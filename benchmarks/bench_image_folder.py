"""Measure the image_folder data path on generated phone-sized JPEGs (nothing downloaded).

    python benchmarks/bench_image_folder.py [--images 96] [--width 4000] [--height 3000] [--size 224]

Prints images/s for: decoding one JPEG to the stored square with and without JPEG draft (DCT)
scaling; the bad-file scan; building the memory cache; the training loader with the cache and
without it (decoding every epoch); and random resized crop done batched on the device vs per image
from the full-resolution file (torchvision, as a DataLoader worker would).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2

from transfer_lightning.data import ImageFolderDataModule
from transfer_lightning.data.decode import decode_square, to_rgb
from transfer_lightning.data.scan import scan_files
from transfer_lightning.data.transforms import BatchPreprocessor


def write_photos(root: Path, count: int, width: int, height: int) -> list[Path]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    paths = []
    for i in range(count):
        base = (np.sin(x / (50 + i) + i) * 60 + np.cos(y / (70 + i)) * 60 + 128)[..., None]
        pixels = np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
        path = root / f"class_{i % 2}" / f"IMG_{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.1f} images/s"


def timed(function, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        function()
    return time.perf_counter() - start


def decode_without_draft(path: Path, size: int) -> torch.Tensor:
    with Image.open(path) as image:
        image = to_rgb(ImageOps.exif_transpose(image))
        square = ImageOps.fit(image, (size, size), method=Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(square).copy()).permute(2, 0, 1)


def loader_rate(module: ImageFolderDataModule, epochs: int = 1) -> float:
    loader = module.train_dataloader()
    next(iter(loader))  # start workers
    images, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch, _ in loader:
            images += len(batch)
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        paths = write_photos(root, args.images, args.width, args.height)
        mb = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
        print(f"{args.images} JPEGs of {args.width}x{args.height} ({mb:.1f} MB each), stored size {args.size}")
        sample = paths[:8]
        print(
            "decode to square, 1 thread, no draft :",
            rate(8, timed(lambda: [decode_without_draft(p, args.size) for p in sample])),
        )
        print(
            "decode to square, 1 thread, draft    :",
            rate(8, timed(lambda: [decode_square(p, args.size) for p in sample])),
        )
        scan = scan_files(paths)
        print("bad-file scan (quick_check, threads) :", rate(len(paths), scan.seconds))
        common = {"image_size": args.size, "batch_size": 32, "val_fraction": 0.1}
        start = time.perf_counter()
        cached = ImageFolderDataModule(root=str(root), cache="memory", **common)
        cached.setup("fit")
        print("memory cache build (setup, threads)  :", rate(len(paths), time.perf_counter() - start))
        print("train loader, cache=memory           :", f"{loader_rate(cached, epochs=5):8.1f} images/s")
        streamed = ImageFolderDataModule(root=str(root), cache="none", **common)
        streamed.setup("fit")
        print(
            f"train loader, cache=none, {streamed.resolved_num_workers()} workers  :",
            f"{loader_rate(streamed):8.1f} images/s",
        )
        batch = torch.stack([cached.splits.train[i][0] for i in range(32)])
        device = "cuda" if torch.cuda.is_available() else "cpu"
        preprocessor = BatchPreprocessor(args.size, "standard", train_crop="random_resized").to(device)
        on_device = batch.to(device)
        preprocessor(on_device, train=True)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = timed(lambda: preprocessor(on_device, train=True), repeat=20)
        if device == "cuda":
            torch.cuda.synchronize()
        print(f"random resized crop, batched on {device:4s}:", rate(32 * 20, seconds))
        per_image = v2.Compose([v2.RandomResizedCrop(args.size), v2.RandomHorizontalFlip(), v2.PILToTensor()])
        print(
            "random resized crop, per image file  :",
            rate(8, timed(lambda: [per_image(to_rgb(Image.open(p))) for p in sample])),
        )


if __name__ == "__main__":
    main()
