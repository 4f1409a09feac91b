"""Which files under a folder are pictures to load, decided from names alone.

Nothing is opened or stat'ed here: whatever depends on a file's content (empty, truncated, not
an image, too large) is found when the picture is decoded, which reads it anyway, so a folder
of thousands of pictures is read once. What can be told from names is settled here, before
any file is opened:

- hidden entries (a name starting with ".", e.g. `.DS_Store`, macOS's `._cover.jpg`
  AppleDouble twins, `.ipynb_checkpoints/`; and the `__MACOSX/` and `@eaDir/` folders) are
  skipped, and a hidden folder is not entered at all;
- files without a picture suffix (notes.txt, labels.csv) are not candidates; they are only
  named when a folder turns out to hold no pictures, to say what it holds instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from jobs.common.errors import DataError

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)
# Not dot-names, but folders that tools put beside real pictures: __MACOSX holds the AppleDouble
# twin (`._name.jpg`, not a picture) of every file of a zip made on a Mac, @eaDir holds a
# Synology NAS's thumbnails (real pictures, but copies).
HIDDEN_FOLDERS = frozenset({"__MACOSX", "@eaDir"})

HIDDEN = "hidden"


def is_hidden(name: str) -> bool:
    return name.startswith(".") or name in HIDDEN_FOLDERS


@dataclass(frozen=True)
class Skipped:
    """A file (or folder) left out, and why. `bad`: a picture file that could not be used,
    which counts towards --max-bad-fraction; hidden entries are left out by design and do not
    (a folder copied from a Mac can hold a `._` twin of every picture)."""

    path: Path
    reason: str
    bad: bool
    folder: bool = False


@dataclass(frozen=True)
class PictureScan:
    root: Path
    pictures: list[Path]  # files with a picture suffix, sorted (a reproducible order)
    skipped: list[Skipped]  # hidden entries, unreadable subfolders
    others: list[Path]  # files without a picture suffix


def scan_pictures(root: Path) -> PictureScan:
    """Every picture file below root, however deep; entries are judged by their path below
    root only, so a root inside a dot-folder (`~/.cache/pictures`) is read as usual."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    pictures: list[Path] = []
    skipped: list[Skipped] = []
    others: list[Path] = []
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            # scandir rather than rglob: the entry types come with the listing (no stat per
            # file), and a hidden folder, e.g. a .git of thousands of files, is never entered.
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError as exc:
            if folder == root:
                raise DataError(f"{root}: cannot list the folder ({exc.strerror})") from None
            skipped.append(Skipped(folder, f"unreadable folder: {exc.strerror}", False, True))
            continue
        for entry in entries:
            path = folder / entry.name
            # Symlinked folders are not followed, as rglob did not: they can form loops.
            is_folder = entry.is_dir(follow_symlinks=False)
            if is_hidden(entry.name):
                skipped.append(Skipped(path, HIDDEN, False, is_folder))
            elif is_folder:
                pending.append(path)
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                pictures.append(path)
            elif entry.is_file():
                others.append(path)
    return PictureScan(root, sorted(pictures), sorted(skipped, key=_by_path), sorted(others))


def _by_path(skipped: Skipped) -> Path:
    return skipped.path
