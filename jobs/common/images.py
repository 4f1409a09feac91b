"""Image files on disk <-> tensors, with Pillow only (no torchvision on these machines).

- `load_images(paths, size)`: the readable pictures as one uint8 tensor, and which files were
  not readable and why (picture_decode.py); finding the files is picture_files.py, reporting
  what was skipped picture_report.py.
- `ImageFolder`: a class-per-subfolder labelled set (`root/<class>/*.jpg`), as transfer learning
  expects; `class_names` is the sorted list of subfolders (hidden ones are not classes).
- `save_image_grid(images, path, nrow)`: a grid PNG a person looks at (GAN samples, walks).
- `write_shapes_dataset(root, ...)`: a small learnable set of generated pictures (coloured
  discs vs squares on noise) written as real PNG files, so offline runs and tests go through
  the same loading code as real data.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from jobs.common.errors import DataError
from jobs.common.picture_decode import BadPicture, decode_picture
from jobs.common.picture_files import HIDDEN, PictureScan, Skipped, is_hidden, scan_pictures


@dataclass(frozen=True)
class LoadedImages:
    images: torch.Tensor  # uint8, N x 3 x S x S: the readable pictures, in the order given
    kept: list[int]  # for each image, its index in the paths given
    failed: list[Skipped]  # the unreadable ones, with the reason


def load_images(paths: Sequence[Path], size: int) -> LoadedImages:
    """All readable pictures as one uint8 tensor: small enough to keep in memory for the data
    sets these workloads train on, and 4x smaller than floats."""
    stacked = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    # A numpy view of the same memory: each picture is written once, straight into place.
    pixels = stacked.numpy()
    kept: list[int] = []
    failed: list[Skipped] = []
    for index, path in enumerate(paths):
        try:
            picture = decode_picture(path, size)
        except BadPicture as bad:
            failed.append(Skipped(path, bad.reason, bad=True))
            continue
        pixels[len(kept)] = picture.transpose(2, 0, 1)
        kept.append(index)
    if failed:  # drop the unused tail rather than keep its memory behind a view
        stacked = stacked[: len(kept)].clone()
    return LoadedImages(stacked, kept, failed)


@dataclass(frozen=True)
class ImageFolder:
    """`root/<class name>/<picture>`: paths, integer labels, and the class names in order.
    A subfolder with no picture files is not a class; a hidden one (`.ipynb_checkpoints`,
    `__MACOSX`) is not looked into."""

    root: Path
    paths: list[Path]
    labels: list[int]
    class_names: list[str]
    scans: list[PictureScan]  # root's own hidden entries first, then one per class

    @classmethod
    def scan(cls, root: Path) -> ImageFolder:
        if not root.is_dir():
            raise DataError(f"{root}: no such folder")
        # root's own hidden entries (.DS_Store, __MACOSX/ ...), so they are reported too.
        top = [
            Skipped(path, HIDDEN, bad=False, folder=path.is_dir())
            for path in sorted(root.iterdir())
            if is_hidden(path.name)
        ]
        scans = [PictureScan(root, [], top, [])]
        paths: list[Path] = []
        labels: list[int] = []
        names: list[str] = []
        for class_dir in class_folders(root):
            found = scan_pictures(class_dir)
            if not found.pictures:
                continue
            scans.append(found)
            names.append(class_dir.name)
            paths += found.pictures
            labels += [len(names) - 1] * len(found.pictures)
        if len(names) < 2:
            raise DataError(
                f"{root}: expected one subfolder of pictures per class (at least two), "
                f"found {len(names)}"
            )
        return cls(root, paths, labels, names, scans)

    def classes_without(self, kept: Sequence[int]) -> list[str]:
        """The classes none of whose pictures is among `kept` (indices into paths)."""
        present = {self.labels[index] for index in kept}
        return [name for label, name in enumerate(self.class_names) if label not in present]


def class_folders(root: Path) -> list[Path]:
    """root's subfolders that may be classes: not hidden, in name order."""
    return sorted(path for path in root.iterdir() if path.is_dir() and not is_hidden(path.name))


def save_image_grid(images: torch.Tensor, path: Path, nrow: int = 8, padding: int = 2) -> Path:
    """(N, C, H, W) images in [0, 1] as one PNG (written atomically); C is 1 or 3."""
    images = images.detach().float().clamp(0, 1).cpu()
    count, channels, height, width = images.shape
    ncol = min(nrow, count)
    nrows = math.ceil(count / ncol)
    grid = torch.ones((3, nrows * (height + padding) + padding, ncol * (width + padding) + padding))
    for index in range(count):
        row, col = divmod(index, ncol)
        top, left = padding + row * (height + padding), padding + col * (width + padding)
        picture = images[index] if channels == 3 else images[index].expand(3, height, width)
        grid[:, top : top + height, left : left + width] = picture
    array = grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array).save(temp, format="PNG")
    temp.replace(path)
    return path


def write_shapes_dataset(
    root: Path,
    count: int,
    *,
    size: int = 64,
    classes: Sequence[str] = ("disc", "square"),
    seed: int = 0,
) -> Path:
    """Generated pictures, `count` in all, balanced over `classes` (disc, square, triangle),
    each in root/<class>/ as PNG: colour, position, size and background noise vary."""
    rng = random.Random(seed)
    for index in range(count):
        name = classes[index % len(classes)]
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        _shape_picture(name, size, rng).save(folder / f"{name}-{index:06d}.png")
    return root


def _shape_picture(kind: str, size: int, rng: random.Random) -> Image.Image:
    noise = np.random.default_rng(rng.getrandbits(32)).integers(0, 60, (size, size, 3))
    image = Image.fromarray(noise.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    radius = rng.uniform(0.18, 0.32) * size
    cx = rng.uniform(radius, size - radius)
    cy = rng.uniform(radius, size - radius)
    colour = tuple(rng.randint(120, 255) for _ in range(3))
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if kind == "disc":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    elif kind == "triangle":
        draw.polygon(
            [(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=colour
        )
    else:
        raise ValueError(f"unknown shape {kind!r}")
    return image
