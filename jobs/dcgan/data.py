"""The picture set: every image under --data (any size, any subfolders), resized and centre-
cropped to the training size, kept in memory as uint8; generated shapes with --synthetic when
--data holds none; and the per-epoch order. Unreadable and hidden files are skipped and named
in one warning; too many unreadable ones (--max-bad-fraction) stop the run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from jobs.common.images import load_images, write_shapes_dataset
from jobs.common.picture_files import PictureScan, scan_pictures
from jobs.common.picture_report import SkipReport

SHAPES = ("disc", "square", "triangle")


@dataclass(frozen=True)
class Pictures:
    images: torch.Tensor  # uint8, N x 3 x S x S
    source: str  # human-readable origin, for the start-up line
    warning: str | None  # the one line naming the files skipped, if any


def load_pictures(
    data_dir: Path,
    image_size: int,
    synthetic: int | None,
    seed: int,
    max_bad_fraction: float = 0.5,
) -> Pictures:
    where = f"--data {data_dir}"
    scan = scan_pictures(data_dir) if data_dir.is_dir() else PictureScan(data_dir, [], [], [])
    made = ""
    if synthetic is not None and not scan.pictures:
        print(f"dcgan: writing {synthetic} generated shape pictures to {data_dir}", flush=True)
        # Real PNG files, so synthetic runs go through the same loading code as real data.
        write_shapes_dataset(data_dir, synthetic, size=image_size, classes=SHAPES, seed=seed)
        scan = scan_pictures(data_dir)
        made = ", generated"
    report = SkipReport(data_dir)
    report.add_scan(scan)
    hint = "put images there (any size, any subfolders) or pass --synthetic N for generated shapes"
    report.check(where, max_bad_fraction, hint)  # nothing to load: fail before loading
    loaded = load_images(scan.pictures, image_size)
    report.add_failed(loaded.failed)
    report.check(where, max_bad_fraction, hint)
    return Pictures(
        loaded.images,
        f"{data_dir} ({len(loaded.kept)} pictures{made})",
        report.warning(where),
    )


def to_inputs(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1], the range of the generator's tanh."""
    return images.float().div_(127.5).sub_(1.0)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> [0, 1], for saving pictures."""
    return images.add(1.0).div_(2.0).clamp_(0.0, 1.0)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of an epoch as a pure function of (seed, epoch): a resumed run can
    rebuild it and skip the batches already done, with no sampler state to save."""
    # Large odd multiplier keeps (seed, epoch) pairs from colliding, e.g. (0, 1) vs (1, 0).
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches only (a short last batch would give BatchNorm odd statistics); a set
    smaller than one batch is one batch."""
    return max(1, n // batch_size)
