"""The one image-file lister of every command: which files are images, which are skipped.

Training on a user's class folders (``data/layout.py``), a CIFAR-10 class-folder copy
(``data/folder_reader.py``) and ``predict`` (``data/image_files.py``) all list files here, so the
same file is treated the same way by every command:

- an image is a file with one of ``IMAGE_EXTENSIONS``, found in sub-folders too;
- hidden and system files are never images: names starting with a dot (``.DS_Store``, macOS's
  AppleDouble ``._IMG_0001.jpg``), ``Thumbs.db``, ``desktop.ini``; hidden and system folders
  (``.git``, ``__MACOSX/``, ``$RECYCLE.BIN``) and the framework's own cache folders are not entered;
- every skipped file is counted and said once, in one summary line (``skipped_summary``).

Whether an image file decodes is the next step's: the scan of a training set (``data/scan.py``,
``data.on_bad_file``) and the ``error`` column of predict, both worded by ``data/decode.py``
``unreadable_reason``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})  # Windows writes them in any case
# __MACOSX: zip residue; then Windows' bins; then the framework's own cache folders
# (data.cache_dir, data.feature_cache_dir), never data even where an older run left one inside a root
_SKIPPED_FOLDERS = frozenset(
    {"__MACOSX", "$RECYCLE.BIN", "System Volume Information", "feature_cache", "image_folder_cache"}
)
_NAMED_IN_SUMMARY = 10  # kinds of skipped files named in the summary line; the count covers all


def is_skipped(name: str) -> bool:
    """True for a hidden or system file or folder name: never an image, never a class."""
    return name.startswith(".") or name.lower() in _SYSTEM_FILES or name in _SKIPPED_FOLDERS


def is_image_name(name: str) -> bool:
    """True for a file name with an image extension that is not a hidden or system file."""
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS and not is_skipped(name)


@dataclass
class ImageListing:
    """The image files found (sorted) and the files skipped as not images."""

    images: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)

    def extend(self, other: ImageListing) -> None:
        self.images += other.images
        self.skipped += other.skipped


def list_images(folder: Path) -> ImageListing:
    """Image files under ``folder``, recursively and sorted, and the other files found there.

    Files inside hidden or system folders are neither listed nor counted.
    """
    listing = ImageListing()
    for path in sorted(folder.rglob("*")):
        if any(is_skipped(part) for part in path.relative_to(folder).parts[:-1]) or not path.is_file():
            continue
        if is_image_name(path.name):
            listing.images.append(path)
        else:
            listing.skipped.append(path)
    return listing


def class_folders(folder: Path) -> list[str]:
    """The sorted names of the class folders directly under ``folder`` (hidden and system ones left out)."""
    return sorted(child.name for child in folder.iterdir() if child.is_dir() and not is_skipped(child.name))


def skipped_summary(skipped: Sequence[Path]) -> str | None:
    """One line for the log: how many files were skipped and of which kinds, or ``None`` for none.

    ``Skipped 5 files that are not images: ._* (2), .DS_Store (1), Thumbs.db (1), *.txt (1)``.
    """
    if not skipped:
        return None
    kinds = sorted(Counter(_kind(path) for path in skipped).items(), key=lambda item: (-item[1], item[0]))
    named = ", ".join(f"{kind} ({count})" for kind, count in kinds[:_NAMED_IN_SUMMARY])
    more = f" and {len(kinds) - _NAMED_IN_SUMMARY} more kinds" if len(kinds) > _NAMED_IN_SUMMARY else ""
    noun = "file that is not an image" if len(skipped) == 1 else "files that are not images"
    return f"Skipped {len(skipped)} {noun}: {named}{more}"


def _kind(path: Path) -> str:
    if path.name.startswith("._"):
        return "._*"  # macOS AppleDouble: one per file copied from a Mac, named after that file
    if is_skipped(path.name) or not path.suffix:
        return path.name
    return f"*{path.suffix.lower()}"
