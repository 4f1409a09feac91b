"""The end of a classifier's epoch, shared by mnist_cnn, text_classifier and transfer: the
group's training sums, rank 0's validation handed to every rank, the two metrics rows, the line
a person reads, and the pictures and per-class files a person looks at. Each workload keeps its
own validation and its own extras (transfer's stage) and calls these in the same order, so a
single process and a torchrun group log alike."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from jobs.common.confusion import ClassReport, Matrix, write_class_report
from jobs.common.confusion_plot import write_confusion_png
from jobs.common.distributed import Group
from jobs.common.metrics import MetricsWriter, read_metrics
from jobs.common.plots import classifier_charts
from jobs.common.progress import Position, Totals, current_lr, global_totals


@dataclass(frozen=True)
class Validation:
    """One pass over the validation split."""

    loss: float  # mean
    accuracy: float
    rate: float  # samples/s
    confusion: Matrix  # [true class][predicted class] -> count


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
    confusion: Matrix

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
    val = group.from_main(validate)
    return EpochEnd(
        train.mean_loss(),
        train.accuracy(),
        train_rate,
        val.loss,
        val.accuracy,
        val.rate,
        time.perf_counter() - started,
        val.confusion,
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


def publish_epoch(
    out: Path, pos: Position, end: EpochEnd, class_names: Sequence[str]
) -> ClassReport:
    """What a person opens after an epoch (rank 0, after log_epoch): loss.png, accuracy.png
    and lr.png from metrics.jsonl, and this epoch's confusion_matrix.png, per_class.json and
    per_class.csv, each replacing the previous epoch's."""
    report = ClassReport(pos.epoch + 1, pos.step, list(class_names), end.confusion)
    write_class_report(out, report)
    try:
        classifier_charts(read_metrics(out), out)
        write_confusion_png(out, report)
    except Exception as exc:  # a picture is worth a warning, not the hours of a run
        print(f"warning: could not draw the epoch's pictures: {exc!r}", file=sys.stderr, flush=True)
    return report
