"""Benchmark hooks for mnist_cnn: the workload's own loop vs a plain hand-written PyTorch loop of
the same model and batch (used by tests/bench/workloads.py)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from jobs.common.metrics import read_metrics
from jobs.mnist_cnn.cli import main
from jobs.mnist_cnn.model import MnistCnn

BATCH = 32


def workload_samples_per_s(tmp: Path, device: str, steps: int) -> float:
    """The real training loop: its own samples/s over the second half of `steps` steps."""
    half = max(steps // 2, 1)
    digits = int(steps * BATCH / 0.9) + BATCH
    code = main(
        [
            "--data",
            str(tmp / "none"),
            "--out",
            str(tmp / "out"),
            "--device",
            device,
            "--synthetic",
            str(digits),
            "--epochs",
            "1",
            "--max-steps",
            str(2 * half),
            "--log-every",
            str(half),
        ]
    )
    assert code == 0, "the mnist workload failed"
    rows = [r for r in read_metrics(tmp / "out") if r["split"] == "train_step"]
    return float(rows[-1]["samples_per_s"])


def plain_samples_per_s(device: str, steps: int) -> float:
    torch.manual_seed(0)
    model = MnistCnn().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    x = torch.randn(steps, BATCH, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (steps, BATCH), device=device)
    half = max(steps // 2, 1)
    for step in range(steps):
        if step == half:  # time the second half, as the workload's figure does
            _sync(device)
            started = time.perf_counter()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x[step]), y[step])
        loss.backward()
        optimizer.step()
    _sync(device)
    return (steps - half) * BATCH / (time.perf_counter() - started)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
