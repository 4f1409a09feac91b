"""Image files on disk <-> tensors, with Pillow only (no torchvision on these machines).

- `find_images(root)`: every picture under a folder (any size, any common format).
- `ImageFolder`: a class-per-subfolder labelled set (`root/<class>/*.jpg`), as transfer learning
  expects; `class_names` is the sorted list of subfolders.
- `load_image(path, size)`: RGB, resized on the short side and centre-cropped to size x size,
  as a float tensor in [0, 1], shape (3, size, size).
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
from PIL import Image, ImageDraw, UnidentifiedImageError

from jobs.common.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def find_images(root: Path) -> list[Path]:
    """Every picture below root, sorted (so an order is reproducible across machines)."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    return sorted(
        path for path in root.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    )


def load_image(path: Path, size: int) -> torch.Tensor:
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc.__class__.__name__})") from None
    image = _resize_center_crop(image, size)
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def _resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize(
        (max(size, round(width * scale)), max(size, round(height * scale))),
        Image.Resampling.BILINEAR,
    )
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def load_images(paths: Sequence[Path], size: int) -> torch.Tensor:
    """All pictures as one uint8 tensor (N, 3, size, size): small enough to keep in memory for
    the data sets these workloads train on, and 4x smaller than floats."""
    if not paths:
        raise DataError("no images to load")
    stacked = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for index, path in enumerate(paths):
        stacked[index] = load_image(path, size).mul_(255).round_().to(torch.uint8)
    return stacked


@dataclass(frozen=True)
class ImageFolder:
    """`root/<class name>/<picture>`: paths, integer labels, and the class names in order."""

    paths: list[Path]
    labels: list[int]
    class_names: list[str]

    @classmethod
    def scan(cls, root: Path) -> ImageFolder:
        if not root.is_dir():
            raise DataError(f"{root}: no such folder")
        class_dirs = sorted(path for path in root.iterdir() if path.is_dir())
        paths: list[Path] = []
        labels: list[int] = []
        names: list[str] = []
        for class_dir in class_dirs:
            images = find_images(class_dir)
            if not images:
                continue
            names.append(class_dir.name)
            paths += images
            labels += [len(names) - 1] * len(images)
        if len(names) < 2:
            raise DataError(
                f"{root}: expected one subfolder of pictures per class (at least two), "
                f"found {len(names)}"
            )
        return cls(paths, labels, names)


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
