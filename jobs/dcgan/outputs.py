"""The pictures a person looks at in --out: the fixed-noise sample grid of each epoch and the
loss / fid_proxy charts, all written atomically so they can be opened while training runs."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from jobs.common.images import save_image_grid
from jobs.common.metrics import read_metrics
from jobs.common.plots import line_chart, loss_curves
from jobs.dcgan.data import to_unit
from jobs.dcgan.sampling import generate

LATEST_SAMPLES = "samples-latest.png"


def write_samples(generator: nn.Module, noise: torch.Tensor, out: Path, epoch: int) -> Path:
    """``samples-epoch-NNN.png`` and a copy as ``samples-latest.png``, from an eval-mode
    generator whose BatchNorm statistics were just calibrated (see sampling.py)."""
    pictures = to_unit(generate(generator, noise))
    path = save_image_grid(pictures, out / f"samples-epoch-{epoch:03d}.png", nrow=8)
    save_image_grid(pictures, out / LATEST_SAMPLES, nrow=8)
    return path


def write_charts(out: Path) -> None:
    """``losses.png`` (D and G loss by step) and ``fid_proxy.png`` from metrics.jsonl."""
    rows = read_metrics(out)
    # train_step rows when logged, else the per-epoch rows, so a chart is never empty.
    split = "train_step" if any(r["split"] == "train_step" for r in rows) else "train"
    series = {
        key: [(float(r["step"]), r[key]) for r in rows if r["split"] == split and key in r]
        for key in ("loss_d", "loss_g")
    }
    line_chart(series, out / "losses.png", title="loss by step")
    loss_curves(rows, out / "fid_proxy.png", key="fid_proxy")
