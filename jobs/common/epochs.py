"""The end of a classifier's epoch, shared by mnist_cnn, text_classifier and transfer: the
group's training sums, rank 0's validation handed to every rank, the two metrics rows and the
line a person reads. Each workload keeps its own validation and its own extras (transfer's stage)
and calls these in the same order, so a single process and a torchrun group log alike."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from jobs.common.distributed import Group
from jobs.common.metrics import MetricsWriter
from jobs.common.progress import Position, Totals, current_lr, global_totals

# (mean loss, accuracy, samples/s) over the validation split
Validation = tuple[float, float, float]


@dataclass(frozen=True)
class EpochEnd:
    """One finished epoch, the same on every rank."""

    train_loss: float
    train_accuracy: float
    train_rate: float  # samples/s over the whole group
    val_loss: float
    val_accuracy: float
    val_rate: float
    seconds: float

    @property
    def last_val(self) -> dict[str, float]:
        return {"loss": self.val_loss, "accuracy": self.val_accuracy}


def finish_epoch(
    group: Group,
    totals: Totals,
    seen_here: int,
    started: float,
    validate: Callable[[], Validation],
) -> EpochEnd:
    """Sum the epoch over the group, then validate. Rank 0 validates on the whole split and the
    others wait for its numbers: every rank then holds the same result, equal to a single
    process's. Every rank must call it (it holds collectives)."""
    (seen,) = group.sum_ints(seen_here)
    train_rate = seen / max(time.perf_counter() - started, 1e-9)
    train = global_totals(group, totals)
    val_loss, val_accuracy, val_rate = group.from_main(validate)
    return EpochEnd(
        train.mean_loss(),
        train.accuracy(),
        train_rate,
        val_loss,
        val_accuracy,
        val_rate,
        time.perf_counter() - started,
    )


def log_epoch(
    metrics: MetricsWriter,
    args: argparse.Namespace,
    pos: Position,
    optimizer: torch.optim.Optimizer,
    end: EpochEnd,
    *,
    rate_format: str = ".0f",
    **extra: Any,
) -> None:
    """The train and val rows of metrics.jsonl, and the epoch's line in the log (rank 0 only).
    `extra` goes into both rows and, as `(value)`, into the line."""
    common = {"step": pos.step, "epoch": pos.epoch + 1, "lr": current_lr(optimizer), **extra}
    metrics.log(
        split="train",
        loss=end.train_loss,
        accuracy=end.train_accuracy,
        samples_per_s=end.train_rate,
        **common,
    )
    metrics.log(
        split="val",
        loss=end.val_loss,
        accuracy=end.val_accuracy,
        samples_per_s=end.val_rate,
        **common,
    )
    label = "".join(f" ({value})" for value in extra.values())
    print(
        f"epoch {pos.epoch + 1}/{args.epochs}{label}: train loss {end.train_loss:.4f} "
        f"acc {end.train_accuracy:.2%} | val loss {end.val_loss:.4f} "
        f"acc {end.val_accuracy:.2%} | "
        f"{end.train_rate:{rate_format}} samples/s, {end.seconds:.1f} s",
        flush=True,
    )
