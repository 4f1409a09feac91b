"""The pictures a person looks at in --out: the fixed-noise sample grids (samples-latest.png
every epoch, samples-epoch-NNN.png every --samples-every epochs, stacked into progress.png) and
the loss / quality charts, all written atomically so they can be opened while training runs."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from jobs.common.images import save_image_grid
from jobs.common.metrics import read_metrics
from jobs.common.plots import line_chart, loss_curves
from jobs.dcgan.data import to_unit
from jobs.dcgan.progress_image import write_progress
from jobs.dcgan.sampling import generate

LATEST_SAMPLES = "samples-latest.png"
QUALITY_CHARTS = {
    "fid_proxy": "fid_proxy.png",
    "fid_conv": "fid_conv.png",
    "diversity": "diversity.png",
}


def grid_due(epoch: int, every: int, last_epoch: int) -> bool:
    """Whether epoch (1-based) gets a numbered grid: the first, every `every`-th, the last."""
    return epoch == 1 or epoch % every == 0 or epoch == last_epoch


def write_samples(
    generator: nn.Module, noise: torch.Tensor, out: Path, epoch: int, numbered: bool
) -> Path:
    """``samples-latest.png``, and when `numbered` also ``samples-epoch-NNN.png`` and a new
    ``progress.png``; returns the grid written last. The generator must be in eval mode with
    freshly calibrated BatchNorm statistics (see sampling.py)."""
    pictures = to_unit(generate(generator, noise))
    path = save_image_grid(pictures, out / LATEST_SAMPLES, nrow=8)
    if numbered:
        path = save_image_grid(pictures, out / f"samples-epoch-{epoch:03d}.png", nrow=8)
        write_progress(out, pictures.shape[-1])
    return path


def write_charts(out: Path) -> None:
    """``losses.png`` (D and G loss by step) and the quality charts from metrics.jsonl."""
    rows = read_metrics(out)
    # train_step rows when logged, else the per-epoch rows, so a chart is never empty.
    split = "train_step" if any(r["split"] == "train_step" for r in rows) else "train"
    series = {
        key: [(float(r["step"]), r[key]) for r in rows if r["split"] == split and key in r]
        for key in ("loss_d", "loss_g")
    }
    line_chart(series, out / "losses.png", title="loss by step")
    for key, name in QUALITY_CHARTS.items():
        loss_curves(rows, out / name, key=key)
