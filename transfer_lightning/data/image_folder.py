"""A user's own images in class folders: messy real-world folders in, clean splits out."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from transfer_lightning.data.base import ClassificationDataModule, Splits
from transfer_lightning.data.contract import Preprocessing
from transfer_lightning.data.decode import decode_for, unreadable_reason
from transfer_lightning.data.fingerprint import rows_fingerprint, text_fingerprint
from transfer_lightning.data.image_cache import CachedImages, DiskCache, available_memory_bytes
from transfer_lightning.data.layout import FolderLayout, read_layout, stratified_split
from transfer_lightning.data.listing import skipped_summary
from transfer_lightning.data.scan import (
    BadFile,
    apply_bad_file_policy,
    bad_file_notes,
    decode_into_tensor,
    scan_files,
    scan_threads,
)
from transfer_lightning.data.transforms import BatchPreprocessor
from transfer_lightning.utils.errors import UserError

log = logging.getLogger(__name__)

AUTO_CACHE_MEMORY_SHARE = 0.25  # "fits comfortably": decoded set <= this share of available RAM
IMBALANCE_WARNING_RATIO = 3.0  # largest / smallest class in train
_DECODE_FASTER = "data.cache=disk keeps the decoded images for the next runs"
_CHECK_FASTER = "data.cache=disk decodes once and skips this check in later runs"


class TensorSubset(Dataset):
    """Rows ``positions`` of one shared uint8 image tensor (in RAM or memory-mapped), no copy."""

    def __init__(self, images: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.positions = positions
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[int(self.positions[index])], int(self.labels[index])

    def fingerprint(self) -> str:
        """The content of the rows this split takes, in its order, with its labels."""
        return rows_fingerprint(self.images, self.positions, self.labels)


def folder_outside(root: Path, folder: Path, key: str) -> Path:
    """``folder`` made absolute; one inside ``root`` moves beside it (``<root>_<folder name>``) with a
    warning, so a cache never becomes a class folder of the next run."""
    folder, data_root = folder.expanduser().absolute(), root.expanduser().absolute()
    if folder != data_root and not folder.is_relative_to(data_root):
        return folder
    moved = data_root.parent / f"{data_root.name}_{folder.name}"
    log.warning("%s=%s lies inside data.root=%s; using %s instead (set %s elsewhere)", key, folder, data_root, moved, key)
    return moved


class DecodingDataset(Dataset):
    """Decodes each image from its file when asked (``data.cache=none``), at the stored size."""

    def __init__(self, paths: list[Path], labels: torch.Tensor, contract: Preprocessing) -> None:
        self.paths = paths
        self.labels = labels
        self.contract = contract

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            image = decode_for(self.paths[index], self.contract)
        except Exception as error:  # the scan passed it: the file changed during the run
            reason = unreadable_reason(self.paths[index], error)
            raise RuntimeError(f"{self.paths[index]} became unreadable during the run ({reason})") from error
        return image, int(self.labels[index])

    def fingerprint(self) -> str:
        """Its files (path, size, modification time), in order, with their labels and the decode step."""
        lines = [repr(self.contract.to_dict())]
        for path, label in zip(self.paths, self.labels.tolist(), strict=True):
            stat = path.stat()
            lines.append(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{label}")
        return text_fingerprint(lines)


class ImageFolderDataModule(ClassificationDataModule):
    """Class folders of any images: ``ROOT/train/<class>`` + ``ROOT/val/<class>`` (+ ``ROOT/test``),
    or ``ROOT/<class>`` split by seeded, stratified ``val_fraction`` / ``test_fraction``.

    Every image is checked before training (broken files skipped or fatal, ``on_bad_file``),
    converted to RGB, resized (shorter side to ``image_size``) and centre-cropped; with
    ``cache=memory``/``disk`` that happens once, and epochs are served from a uint8 tensor.
    Augmented training crops are random resized crops of that square (``train_crop``), batched on
    the training device. ``balance="weighted_sampler"`` is the earlier name of ``sampler="balanced"``.
    """

    def __init__(
        self,
        root: str,
        val_fraction: float = 0.2,
        test_fraction: float | None = None,
        split_seed: int = 42,
        on_bad_file: str = "skip",
        balance: str = "none",
        cache: str = "auto",
        cache_dir: str = "data/image_folder_cache",
        train_crop: str = "random_resized",
        **common: Any,
    ) -> None:
        # photos of any shape: augmented crops are random resized crops, not CIFAR's padded crops
        super().__init__(train_crop=train_crop, **common)
        if balance == "weighted_sampler":
            self.sampler = "balanced"
        self.root = Path(root).expanduser()
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.on_bad_file = on_bad_file
        self.balance = balance
        self.cache = cache
        # nothing the framework writes may land inside the data root, whatever the working directory
        self.split_files: dict[str, list[Path]] = {}  # per split, the files it serves in order (after setup)
        self.cache_dir = folder_outside(self.root, Path(cache_dir), "data.cache_dir")
        # unset (a data module built in code): beside the image cache, never the working directory's data/
        feature_cache_dir = self.feature_cache_dir or self.cache_dir.parent / "feature_cache"
        self.feature_cache_dir = str(folder_outside(self.root, Path(feature_cache_dir), "data.feature_cache_dir"))

    # -- splits --------------------------------------------------------------------------------
    def load_splits(self) -> Splits:
        layout = read_layout(self.root)
        if layout.ignored_files:
            log.info("%s under %s", skipped_summary(layout.ignored_files), self.root)
        if layout.loose_images:
            log.warning(
                "Skipped %d images that lie directly in data.root=%s, in no class folder; move them into their "
                "class's folder to train on them", len(layout.loose_images), self.root,
            )  # fmt: skip
        alone = self.needed_splits[0] if len(self.needed_splits) == 1 else None
        if alone in layout.splits and alone != "train":  # evaluate on a split folder: the others are not decoded
            layout = replace(layout, splits={alone: layout.splits[alone]})
        files = layout.all_files()
        labels_of = {path: label for items in layout.splits.values() for path, label in items}
        cache = self._resolve_cache(len(files))
        self.in_memory = cache != "none"
        images, good, bad = self._read_images(files, cache)
        apply_bad_file_policy(bad, self.on_bad_file)
        index_of = {path: i for i, path in enumerate(good)}
        by_split = {
            split: [index_of[path] for path, _ in items if path in index_of] for split, items in layout.splits.items()
        }
        if "train" in by_split:
            by_split, notes = self._complete_splits(layout, by_split, [labels_of[path] for path in good])
        else:
            by_split, notes = {"train": [], "val": [], "test": [], **by_split}, {}
        labels = torch.tensor([labels_of[path] for path in good], dtype=torch.long)
        datasets = {split: self._dataset(images, good, labels, indices) for split, indices in by_split.items()}
        if notes.get("test_split") == "val":
            datasets["test"] = datasets["val"]
        self.split_files = {split: [good[i] for i in indices] for split, indices in by_split.items()}
        counts = {split: self._class_counts(labels[indices], layout.class_names) for split, indices in by_split.items()}
        self._report_counts({split: count for split, count in counts.items() if by_split[split]})
        notes.update(
            data_root=str(self.root),
            layout=layout.kind,
            cache=cache,
            image_size=self.image_size,
            class_counts=counts,
            ignored_non_image_files=len(layout.ignored_files) + len(layout.loose_images),
            **bad_file_notes(bad),
        )
        splits = Splits(
            train=datasets["train"], val=datasets["val"], test=datasets["test"],
            class_names=layout.class_names, notes=notes,
        )  # fmt: skip
        notes["loader_images_per_s"] = self._measure_loader(splits.train) if len(splits.train) else None
        return splits

    def _complete_splits(
        self, layout: FolderLayout, by_split: dict[str, list[int]], labels: list[int]
    ) -> tuple[dict[str, list[int]], dict[str, Any]]:
        """Carve the splits that are not folders out of train; test falls back to val."""
        fractions = {}
        if "val" not in by_split:
            fractions["val"] = self.val_fraction
        if "test" not in by_split and self.test_fraction:
            fractions["test"] = self.test_fraction
        self._require_every_class(layout, by_split, labels)
        notes: dict[str, Any] = {"split_seed": self.split_seed} if fractions else {}
        if fractions:
            train = by_split["train"]
            carved = stratified_split([labels[i] for i in train], layout.class_names, fractions, self.split_seed)
            by_split.update({split: [train[i] for i in indices] for split, indices in carved.items()})
            notes["split_fractions"] = fractions
        if "test" not in by_split:
            by_split["test"] = by_split["val"]
            notes["test_split"] = "val"
            notes["test_note"] = "no test split (no test/ folder, data.test_fraction=null): the final test used val"
            if "test" in self.needed_splits:  # evaluate split=val asked for no test
                log.warning("No test split: the final test uses the val split (set data.test_fraction or add test/)")
        return by_split, notes

    def _require_every_class(self, layout: FolderLayout, by_split: dict[str, list[int]], labels: list[int]) -> None:
        # a class whose every image was broken has nothing left to learn or test from
        for split, indices in by_split.items():
            present = {labels[i] for i in indices}
            missing = [name for label, name in enumerate(layout.class_names) if label not in present]
            if missing:
                raise UserError(
                    f"after skipping broken files the {split} split has no images of {missing}; "
                    "add readable images to those class folders"
                )

    # -- reading and caching -------------------------------------------------------------------
    def _resolve_cache(self, num_files: int) -> str:
        if self.cache != "auto":
            return self.cache
        needed = num_files * 3 * self.image_size**2
        available = available_memory_bytes()
        if available is not None and needed <= AUTO_CACHE_MEMORY_SHARE * available:
            log.info("data.cache=auto -> memory (%.2f GB decoded, %.1f GB available)", needed / 1e9, available / 1e9)
            return "memory"
        log.info(
            "data.cache=auto -> none: %.2f GB decoded is more than %d%% of the available memory; images are "
            "decoded every epoch (data.cache=disk keeps them on disk instead)",
            needed / 1e9,
            100 * AUTO_CACHE_MEMORY_SHARE,
        )
        return "none"

    def _read_images(self, files: list[Path], cache: str) -> tuple[torch.Tensor | None, list[Path], list[BadFile]]:
        """Scan every file (decoding into the cache where there is one): images, good files, bad files."""
        decode = f"{self.contract.resize_size} {self.contract.interpolation}"
        disk = DiskCache(self.cache_dir, self.root, self.image_size, decode) if cache == "disk" else None
        cached = disk.load(files) if disk else None
        if cached is not None:
            return cached.images, cached.good, cached.bad
        if cache == "none":
            scan = scan_files(files, description=f"Checking the images of {self.root}", faster=_CHECK_FASTER)
            broken = {item.path for item in scan.bad}
            images, good = None, [path for path in files if path not in broken]
        else:  # decoding into the cache is the scan: one pass over the files
            decoded = decode_into_tensor(
                files,
                self._decode,
                self.image_size,
                description=f"Decoding the images of {self.root} to {self.image_size} px",
                faster=_DECODE_FASTER if cache == "memory" else "",
                decode_key=("decode_for", self.contract.resize_size, self.contract.interpolation),
            )
            images, good, scan = decoded.images, decoded.good, decoded.scan
        log.info(
            "%s %d images in %.1fs (%.0f images/s, %d threads)",
            "Checked" if cache == "none" else f"Decoded to {self.image_size} px",
            len(files),
            scan.seconds,
            scan.images_per_s,
            scan_threads(),
        )
        if disk and images is not None:
            disk.save(files, CachedImages(images, good, scan.bad))
        return images, good, scan.bad

    def _decode(self, path: Path) -> torch.Tensor:
        return decode_for(path, self.contract)

    def _dataset(
        self, images: torch.Tensor | None, good: list[Path], labels: torch.Tensor, indices: list[int]
    ) -> Dataset:
        index = torch.tensor(indices, dtype=torch.long)
        if images is None:
            return DecodingDataset([good[i] for i in indices], labels[index], self.contract)
        return TensorSubset(images, index, labels[index])

    # -- class balance -------------------------------------------------------------------------
    @staticmethod
    def _class_counts(labels: torch.Tensor, class_names: list[str]) -> dict[str, int]:
        counts = Counter(labels.tolist())
        return {name: counts.get(label, 0) for label, name in enumerate(class_names)}

    def _report_counts(self, counts: dict[str, dict[str, int]]) -> None:
        for split, per_class in counts.items():
            log.info("Images per class (%s): %s", split, ", ".join(f"{name}: {n}" for name, n in per_class.items()))
        if "train" not in counts:  # evaluate: no training split served
            return
        train = counts["train"].values()
        ratio = max(train) / max(1, min(train))
        if ratio >= IMBALANCE_WARNING_RATIO and self.sampler == "none":
            log.warning(
                "Classes are imbalanced (largest/smallest = %.1f in train); data.sampler=balanced draws every "
                "class equally often, loss.class_weights=balanced weights them, and the reports add balanced accuracy",
                ratio,
            )

    # -- throughput ----------------------------------------------------------------------------
    def _measure_loader(self, dataset: Dataset, max_batches: int = 10, max_seconds: float = 2.0) -> float | None:
        """Images/s the training loader delivers (worker start-up excluded), logged once at start."""
        workers = self.resolved_num_workers()
        loader = DataLoader(dataset, batch_size=self.batch_size, shuffle=True, num_workers=workers)
        iterator = iter(loader)
        if workers > 0:
            next(iterator)  # the first batch waits for the workers to start
        images, start = 0, time.perf_counter()
        for batch_number, (batch, _) in enumerate(iterator, start=1):
            images += len(batch)
            if batch_number >= max_batches or time.perf_counter() - start > max_seconds:
                break
        elapsed = time.perf_counter() - start
        if images == 0 or elapsed <= 0:
            log.info("Loader: too few training batches to measure images/s")
            return None
        rate = images / elapsed
        log.info(
            "Loader: %.0f images/s at %d px (data.cache=%s, data.num_workers=%d, batch %d)",
            rate, self.image_size, "memory/disk" if self.in_memory else "none", workers, self.batch_size,
        )  # fmt: skip
        return round(rate, 1)
