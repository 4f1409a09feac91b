"""Labelled pictures for transfer learning: class folders in --data (optionally split into
train/ and val/), generated shapes with --synthetic, the seeded validation split, ImageNet
normalisation and batch augmentation on tensors. Unreadable and hidden files are skipped and
named in one warning; too many unreadable ones (--max-bad-fraction), or a class left with
none readable, stop the run."""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from jobs.common.errors import DataError
from jobs.common.images import (
    ImageFolder,
    LoadedImages,
    class_folders,
    load_images,
    write_shapes_dataset,
)
from jobs.common.picture_files import scan_pictures
from jobs.common.picture_report import SkipReport

# The statistics the torchvision backbones were trained with; pretrained features expect them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageSplits:
    train_x: torch.Tensor  # uint8, N x 3 x S x S
    train_y: torch.Tensor  # int64, N
    val_x: torch.Tensor
    val_y: torch.Tensor
    class_names: list[str]
    source: str  # human-readable origin, for the start-up line
    warning: str | None  # the one line naming the files skipped, if any


NO_PICTURES_HINT = "put one folder of pictures per class there, or pass --synthetic N"


def has_class_folders(root: Path) -> bool:
    return root.is_dir() and any(scan_pictures(child).pictures for child in class_folders(root))


def ensure_synthetic(root: Path, count: int, size: int, seed: int) -> bool:
    """Write `count` shape pictures into root unless it already holds class folders (so a
    resumed run reuses them). Returns whether pictures were written.

    They are generated in a temp folder and moved in class by class, so an interrupted run
    leaves either nothing or whole classes of a deterministic set."""
    if has_class_folders(root):
        return False
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root, prefix=".synthetic-") as temp:
            write_shapes_dataset(Path(temp), count, size=size, seed=seed)
            for class_dir in sorted(Path(temp).iterdir()):
                shutil.rmtree(root / class_dir.name, ignore_errors=True)
                class_dir.rename(root / class_dir.name)
    except OSError as exc:
        raise DataError(
            f"--data {root}: cannot write the --synthetic pictures ({exc.strerror}); "
            "pass a writable --data folder"
        ) from None
    return True


def load_splits(
    root: Path, size: int, val_fraction: float, seed: int, max_bad_fraction: float = 0.5
) -> ImageSplits:
    """root/train + root/val when both exist; otherwise root/<class>/ with a seeded split."""
    where = f"--data {root}"
    report = SkipReport(root)
    train_dir, val_dir = root / "train", root / "val"
    if has_class_folders(train_dir) and has_class_folders(val_dir):
        train, val = ImageFolder.scan(train_dir), ImageFolder.scan(val_dir)
        if train.class_names != val.class_names:
            raise DataError(
                f"{where}: train/ has classes {train.class_names} but val/ has "
                f"{val.class_names}; give both the same class folders"
            )
        train_set, train_y = _load_folder(train, size, report)
        val_set, val_y = _load_folder(val, size, report)
        report.check(where, max_bad_fraction, NO_PICTURES_HINT)
        _require_every_class(train, train_set, report, where)
        _require_every_class(val, val_set, report, where)
        return ImageSplits(
            train_set.images,
            train_y,
            val_set.images,
            val_y,
            train.class_names,
            f"{root} (train/ and val/)",
            report.warning(where),
        )
    folder = ImageFolder.scan(root)
    loaded, y = _load_folder(folder, size, report)
    report.check(where, max_bad_fraction, NO_PICTURES_HINT)
    _require_every_class(folder, loaded, report, where)
    n = len(loaded.kept)
    n_val = round(n * val_fraction)
    if n_val < 1 or n - n_val < 1:
        raise DataError(
            f"{where}: {n} pictures cannot be split with --val-fraction {val_fraction}; "
            "add pictures or change --val-fraction"
        )
    x = loaded.images
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = order[:n_val], order[n_val:]
    return ImageSplits(
        x[train],
        y[train],
        x[val],
        y[val],
        folder.class_names,
        f"{root} (validation split {val_fraction:g})",
        report.warning(where),
    )


def _load_folder(
    folder: ImageFolder, size: int, report: SkipReport
) -> tuple[LoadedImages, torch.Tensor]:
    """The readable pictures and their labels; what was skipped goes into report."""
    for scan in folder.scans:
        report.add_scan(scan)
    loaded = load_images(folder.paths, size)
    report.add_failed(loaded.failed)
    labels = torch.tensor([folder.labels[index] for index in loaded.kept], dtype=torch.int64)
    return loaded, labels


def _require_every_class(
    folder: ImageFolder, loaded: LoadedImages, report: SkipReport, where: str
) -> None:
    """A class whose pictures are all unreadable cannot be learnt, and dropping it would
    change the classes the model is built for: say which class, and why."""
    empty = folder.classes_without(loaded.kept)
    if not empty:
        return
    dirs = [folder.root / name for name in empty]
    failed = [entry for entry in loaded.failed if any(d in entry.path.parents for d in dirs)]
    shown = ", ".join(f"{_relative(d, report.root)}/" for d in dirs)
    raise DataError(
        f"{where}: class folder{'s' if len(dirs) > 1 else ''} {shown} "
        f"{'have' if len(dirs) > 1 else 'has'} no readable picture: {report.names(failed)}; "
        "fix or replace them, or remove the folder to train without that class"
    )


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


class Normalizer:
    """uint8 batches -> ImageNet-normalised floats, on the batch's device."""

    def __init__(self, device: torch.device) -> None:
        # (x / 255 - mean) / std folded into one multiply-add.
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        # One copy does the dtype and the channels-last layout the models run in (see
        # models.MEMORY_FORMAT); the arithmetic is then in place on that copy.
        floats = images.to(dtype=torch.float32, memory_format=torch.channels_last)
        return floats.mul_(self.scale).add_(self.shift)


def augment(images: torch.Tensor) -> torch.Tensor:
    """Random horizontal flip and random resized crop (35%-100% of the area, aspect 3/4-4/3;
    torchvision's 8% floor loses the object in pictures this small), done as one batched
    affine resample instead of a per-picture loop. ``images``: floats, N x C x S x S. Draws
    from torch's global RNG, which checkpoints capture, so a resumed run augments alike."""
    n, device = images.shape[0], images.device
    rand = torch.rand((n, 5), device=device)
    area = 0.35 + 0.65 * rand[:, 0]
    log_ratio = (rand[:, 1] * 2 - 1) * math.log(4 / 3)
    ratio = torch.exp(log_ratio)
    width = torch.sqrt(area * ratio).clamp(max=1.0)  # crop size as a share of the side
    height = torch.sqrt(area / ratio).clamp(max=1.0)
    centre_x = (rand[:, 2] * 2 - 1) * (1 - width)  # keeps the crop inside the picture
    centre_y = (rand[:, 3] * 2 - 1) * (1 - height)
    flip = torch.where(rand[:, 4] < 0.5, -1.0, 1.0)
    theta = torch.zeros((n, 2, 3), device=device)
    theta[:, 0, 0] = width * flip
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = centre_y
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of an epoch as a pure function of (seed, epoch), so a resumed run
    rebuilds it and skips the batches already done."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
