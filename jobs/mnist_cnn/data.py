"""Digit data for the CNN: real MNIST IDX files from --data, or synthetic digits; plus the
validation split, normalisation, and the per-epoch sample order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from jobs.common.errors import DataError
from jobs.common.idx import read_idx
from jobs.mnist_cnn.synthetic import synthesize_digits

# Canonical names first; some mirrors use a dot before "idx".
MNIST_FILES: dict[str, tuple[str, ...]] = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
# The usual MNIST statistics; the synthetic digits are close enough to share them.
MEAN, STD = 0.1307, 0.3081


@dataclass(frozen=True)
class DigitSplits:
    train_x: torch.Tensor  # uint8, N x 28 x 28
    train_y: torch.Tensor  # int64, N
    val_x: torch.Tensor
    val_y: torch.Tensor
    source: str  # human-readable origin, for the start-up line


def load_digits(
    data_dir: Path, synthetic: int | None, val_fraction: float, seed: int
) -> DigitSplits:
    """Synthetic when asked for; otherwise the MNIST files in data_dir (t10k = validation,
    or a seeded split of the training files when there are no t10k files)."""
    if synthetic is not None:
        x, y = synthesize_digits(synthetic, seed)
        return _split(x, y, val_fraction, seed, f"synthetic ({synthetic} rendered digits)")
    train_x, train_y = _load_pair(data_dir, "train")
    test_images = find_file(data_dir, "test_images")
    test_labels = find_file(data_dir, "test_labels")
    if test_images is None and test_labels is None:
        return _split(
            train_x,
            train_y,
            val_fraction,
            seed,
            f"MNIST {data_dir} (validation split off the training files)",
        )
    val_x, val_y = _load_pair(data_dir, "test")
    return DigitSplits(train_x, train_y, val_x, val_y, f"MNIST {data_dir}")


def find_file(data_dir: Path, key: str) -> Path | None:
    for name in MNIST_FILES[key]:
        for candidate in (data_dir / name, data_dir / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _load_pair(data_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    image_path = find_file(data_dir, f"{split}_images")
    label_path = find_file(data_dir, f"{split}_labels")
    if image_path is None or label_path is None:
        missing = MNIST_FILES[f"{split}_images" if image_path is None else f"{split}_labels"][0]
        raise DataError(
            f"--data {data_dir}: {missing}[.gz] not found; put the MNIST IDX "
            "files there or pass --synthetic N for generated digits"
        )
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(
            f"{image_path}: expected uint8 images of shape N x 28 x 28, found "
            f"{images.dtype} {images.shape}; is this an MNIST image file?"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(
            f"{label_path}: expected a uint8 label vector, found "
            f"{labels.dtype} {labels.shape}; is this an MNIST label file?"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{image_path} has {len(images)} images but {label_path} has "
            f"{len(labels)} labels; re-download the pair"
        )
    if len(labels) and labels.max() > 9:
        raise DataError(f"{label_path}: label {labels.max()} is not a digit 0-9")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def _split(
    x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int, source: str
) -> DigitSplits:
    """Seeded random split, so the validation set is the same on every resume."""
    n = len(y)
    n_val = round(n * fraction)
    if n_val < 1 or n - n_val < 1:
        raise DataError(
            f"{source}: {n} samples cannot be split with --val-fraction "
            f"{fraction}; use more data or another --val-fraction"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = order[:n_val], order[n_val:]
    return DigitSplits(x[train], y[train], x[val], y[val], source)


def to_inputs(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x 28 x 28 -> normalised float N x 1 x 28 x 28, done once up front."""
    return ((images.float() / 255.0 - MEAN) / STD).unsqueeze(1)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of an epoch as a pure function of (seed, epoch): a resumed run can
    rebuild it and skip the batches already done, with no sampler state to save."""
    # Large odd multiplier keeps (seed, epoch) pairs from colliding, e.g. (0, 1) vs (1, 0).
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
