"""Read the folder layout of a user's image set: which files, which classes, which splits.

Two layouts: ``ROOT/train/<class>/`` with ``ROOT/val/<class>/`` (and optional ``ROOT/test``), or
one ``ROOT/<class>/`` folder. Files and class folders are listed by ``data/listing.py``, the one
lister of every command (images by extension, in sub-folders too; hidden and system files such as
``.DS_Store``, ``._IMG_0001.jpg`` and ``__MACOSX/`` skipped). Every mistake a user can make with
the folders is a ``UserError`` naming the folders.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from transfer_lightning.data.listing import IMAGE_EXTENSIONS, class_folders, is_image_name, list_images
from transfer_lightning.utils.errors import UserError

SPLIT_FOLDERS = ("train", "val", "test")


@dataclass
class FolderLayout:
    """The image files per split folder, as ``(path, label)`` lists, and the sorted class names.

    ``splits`` holds the splits present as folders: ``{"train": [...], "val": [...]}`` for the
    split layout, ``{"train": [...]}`` (all images) for a single class-folder root.
    """

    root: Path
    kind: str  # "split folders" | "class folders"
    class_names: list[str]
    splits: dict[str, list[tuple[Path, int]]]
    ignored_files: list[Path] = field(default_factory=list)  # not images (data/listing.py)
    loose_images: list[Path] = field(default_factory=list)  # images directly in the root, in no class folder

    def all_files(self) -> list[Path]:
        return [path for items in self.splits.values() for path, _ in items]


def read_layout(root: Path) -> FolderLayout:
    """List the classes and images under ``root`` (no image is opened here)."""
    if not root.exists():
        raise UserError(
            f"data.root={root} does not exist; point it at a folder of class folders "
            "(ROOT/<class>/*.jpg) or at ROOT with train/ and val/ class folders"
        )
    if not root.is_dir():
        raise UserError(f"data.root={root} is a file, not a folder; point it at the folder holding the class folders")
    if (root / "train").is_dir():
        return _read_split_folders(root)
    class_names = class_folders(root)
    loose = [path for path in root.iterdir() if path.is_file() and is_image_name(path.name)]
    if not class_names:
        hint = f" ({len(loose)} images lie directly in it)" if loose else ""
        raise UserError(
            f"no class folders under data.root={root}{hint}; put the images in one folder per class "
            "(ROOT/<class>/*.jpg), the folder names become the class names"
        )
    files, ignored = _read_classes(root, class_names)
    _require_two_classes(root, class_names)
    return FolderLayout(root, "class folders", class_names, {"train": files}, ignored, loose)


def _read_split_folders(root: Path) -> FolderLayout:
    present = [name for name in SPLIT_FOLDERS if (root / name).is_dir()]
    class_names = class_folders(root / "train")
    if not class_names:
        raise UserError(f"{root / 'train'} holds no class folders; put its images in train/<class>/ folders")
    _require_two_classes(root / "train", class_names)
    splits, ignored = {}, []
    for split in present:
        found = class_folders(root / split)
        missing = [name for name in class_names if name not in found]
        extra = [name for name in found if name not in class_names]
        if missing or extra:
            raise UserError(
                f"the class folders of {root / split} differ from {root / 'train'} "
                f"(missing: {missing or 'none'}, not in train: {extra or 'none'}); "
                "every split needs the same class folders, each with images"
            )
        splits[split], skipped = _read_classes(root / split, class_names)
        ignored += skipped
    return FolderLayout(root, "split folders", class_names, splits, ignored)


def _read_classes(folder: Path, class_names: list[str]) -> tuple[list[tuple[Path, int]], list[Path]]:
    files, ignored, empty = [], [], []
    for label, name in enumerate(class_names):
        listing = list_images(folder / name)
        files += [(path, label) for path in listing.images]
        ignored += listing.skipped
        if not listing.images:
            empty.append(str(folder / name))
    if len(empty) == len(class_names):
        raise UserError(f"no images under {folder} (looked for {', '.join(IMAGE_EXTENSIONS)} in its class folders)")
    if empty:
        raise UserError(f"these class folders hold no images: {', '.join(empty)}; add images or remove the folders")
    return files, ignored


def _require_two_classes(folder: Path, class_names: list[str]) -> None:
    if len(class_names) < 2:
        raise UserError(
            f"only one class folder ({class_names[0]!r}) under {folder}; a classifier needs at least two "
            "class folders, one per class"
        )


def stratified_split(
    labels: list[int], class_names: list[str], fractions: dict[str, float], seed: int
) -> dict[str, list[int]]:
    """Indices per split: each class's images shuffled (seeded by ``seed`` and the class name, so
    one class's split does not depend on the others) and cut by ``fractions``; the rest is train.

    Every split gets at least one image of every class.
    """
    split_indices: dict[str, list[int]] = {"train": [], **{name: [] for name in fractions}}
    for label, name in enumerate(class_names):
        members = [index for index, value in enumerate(labels) if value == label]
        needed = len(fractions) + 1
        if len(members) < needed:
            asked = " and ".join(f"data.{split}_fraction={value}" for split, value in fractions.items())
            raise UserError(
                f"class {name!r} has {len(members)} usable image(s); {asked} need at least {needed} "
                "(one per split); add images to that class"
            )
        generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode("utf-8")))
        order = [members[i] for i in torch.randperm(len(members), generator=generator).tolist()]
        start = 0
        for position, (split, fraction) in enumerate(fractions.items()):
            still_needed = len(fractions) - position  # one image for each later split and train
            count = min(max(1, round(fraction * len(members))), len(members) - start - still_needed)
            split_indices[split] += order[start : start + count]
            start += count
        split_indices["train"] += order[start:]
    return {split: sorted(indices) for split, indices in split_indices.items()}
