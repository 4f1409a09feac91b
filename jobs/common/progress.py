"""What every workload's training loop keeps track of, in one place: running loss/accuracy sums,
the position within the run, which checkpoint to resume from, and how an early stop (SIGTERM,
--max-steps) is detected and reported."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from jobs.common.checkpoint import (
    SaveSchedule,
    capture_training_state,
    check_resume_compatible,
    latest_checkpoint,
    load_latest_checkpoint,
    restore_training_state,
    save_checkpoint,
)
from jobs.common.device import AmpSettings, amp_settings, select_device
from jobs.common.errors import UsageError
from jobs.common.metrics import MetricsWriter, rewind_metrics
from jobs.common.seeding import seed_everything
from jobs.common.signals import StopFlag


@dataclass
class Totals:
    """Running loss/accuracy sums, kept as device tensors so the loop never syncs per step."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    seen: int = 0

    @classmethod
    def zeros(cls, device: torch.device) -> Totals:
        return cls(
            torch.zeros((), dtype=torch.float64, device=device),
            torch.zeros((), dtype=torch.int64, device=device),
        )

    def add(self, loss: torch.Tensor, correct: torch.Tensor, count: int) -> None:
        self.loss_sum += loss.detach().double() * count
        self.correct += correct
        self.seen += count

    def mean_loss(self) -> float:
        return self.loss_sum.item() / max(self.seen, 1)

    def accuracy(self) -> float:
        return self.correct.item() / max(self.seen, 1)

    def to_plain(self) -> dict[str, Any]:
        return {
            "loss_sum": self.loss_sum.item(),
            "correct": int(self.correct.item()),
            "seen": self.seen,
        }

    @classmethod
    def from_plain(cls, plain: dict[str, Any], device: torch.device) -> Totals:
        totals = cls.zeros(device)
        totals.loss_sum += plain["loss_sum"]
        totals.correct += plain["correct"]
        totals.seen = plain["seen"]
        return totals


class StepLog:
    """The `train_step` line every `--log-every` steps: loss, accuracy, lr and throughput since
    the previous line. The loop adds each batch to `interval`."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.interval = Totals.zeros(device)
        self.started = time.perf_counter()

    def maybe_log(
        self,
        args: argparse.Namespace,
        pos: Position,
        metrics: MetricsWriter,
        optimizer: torch.optim.Optimizer,
        **extra: Any,
    ) -> None:
        if not args.log_every or pos.step % args.log_every:
            return
        # Read the sums first: the .item() waits for queued GPU work, so the clock below
        # covers the steps' real time, not just their launch.
        loss, accuracy = self.interval.mean_loss(), self.interval.accuracy()
        now = time.perf_counter()
        metrics.log(
            step=pos.step,
            epoch=pos.epoch + 1,
            split="train_step",
            loss=loss,
            accuracy=accuracy,
            lr=current_lr(optimizer),
            samples_per_s=self.interval.seen / max(now - self.started, 1e-9),
            **extra,
        )
        self.interval, self.started = Totals.zeros(self.device), time.perf_counter()


@dataclass
class Position:
    """Where training stands: ``batch`` is the next batch index within ``epoch``."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


def find_checkpoint(
    args: argparse.Namespace, resume_keys: Iterable[str]
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to continue from, if any; refuses unsafe reuse of --out."""
    if not args.resume:
        if latest_checkpoint(args.out) is not None:
            raise UsageError(
                f"--out {args.out} already holds checkpoints; pass --resume to "
                "continue that run or choose a new --out"
            )
        return None
    found = load_latest_checkpoint(args.out)
    if found is None:
        print(f"resume: no checkpoint in {args.out}; starting fresh", flush=True)
        rewind_metrics(args.out, 0)
        return None
    check_resume_compatible(found[1]["args"], args, resume_keys)
    # A run stopped without warning (a reclaimed spot machine) logged past its checkpoint.
    if dropped := rewind_metrics(args.out, found[1]["step"]):
        print(f"resume: dropped {dropped} metrics row(s) logged after that checkpoint", flush=True)
    return found


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def limit_reached(args: argparse.Namespace, pos: Position, stop: StopFlag) -> bool:
    if args.max_steps is not None and pos.step >= args.max_steps:
        stop.set("--max-steps")
    return bool(stop)


def resumed_position(
    path: Path, state: dict[str, Any], device: torch.device, note: str = ""
) -> tuple[Position, Totals, dict[str, Any] | None]:
    """Where a classifier's run stands in a loaded checkpoint: its position, the partial
    epoch's totals and the last validation result, announced on one line."""
    extra = state["extra"]
    pos = Position(epoch=state["epoch"], batch=extra["batch_in_epoch"], step=state["step"])
    suffix = f", {note}" if note else ""
    print(
        f"resume: {path} (epoch {pos.epoch + 1}, batch {pos.batch}, step {pos.step}{suffix})",
        flush=True,
    )
    return pos, Totals.from_plain(extra["epoch_totals"], device), extra["last_val"]


def restore_classifier(
    checkpoint: tuple[Path, dict[str, Any]] | None,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    schedulers: dict[str, Any] | None = None,
) -> tuple[Position, Totals, dict[str, Any] | None, Path | None]:
    """A one-model classifier's run from its checkpoint (or from the start when there is none):
    position, partial-epoch totals, last validation result and the checkpoint's path."""
    if checkpoint is None:
        return Position(), Totals.zeros(device), None, None
    path, state = checkpoint
    restore_training_state(
        state,
        models={"model": model},
        optimizers={"optimizer": optimizer},
        schedulers=schedulers,
        scaler=scaler,
    )
    pos, totals, last_val = resumed_position(path, state, device)
    return pos, totals, last_val, path


def report_done(last_val: dict[str, Any] | None, path: Path | None) -> None:
    """A classifier's last line: its final validation accuracy and where its checkpoint is."""
    if last_val is None:
        print(f"done: last checkpoint {path}", flush=True)
        return
    print(
        f"done: val accuracy {last_val['accuracy']:.2%} (loss {last_val['loss']:.4f}), "
        f"last checkpoint {path}",
        flush=True,
    )


def report_stopped(stop: StopFlag, path: Path | None, pos: Position) -> int:
    where = f"epoch {pos.epoch + 1}, step {pos.step}"
    saved = f"checkpoint {path}" if path is not None else "nothing to save yet"
    print(f"stopped by {stop.reason} at {where}; {saved}; continue with --resume", flush=True)
    return 0


def start_run(args: argparse.Namespace) -> tuple[torch.device, AmpSettings]:
    """Threads, seeds, device and mixed precision, set up the same way for every workload."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    device = select_device(args.device)
    amp = amp_settings(device, args.amp)
    if args.amp and not amp.enabled:
        print("note: --amp ignored: autocast is only used on cuda", flush=True)
    return device, amp


def classification_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    amp: AmpSettings,
    x: torch.Tensor,
    y: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One cross-entropy step; returns the loss and the count of correct predictions as device
    tensors (no sync), for Totals."""
    with amp.autocast():
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, (logits.argmax(1) == y).sum()


class PlainTotals(Protocol):
    """Running sums that travel in a checkpoint (Totals, or a workload's own)."""

    def to_plain(self) -> dict[str, Any]: ...


def save_progress(
    args: argparse.Namespace,
    pos: Position,
    totals: PlainTotals,
    schedule: SaveSchedule,
    *,
    models: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    scaler: torch.amp.GradScaler,
    schedulers: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Checkpoint the run where it stands (mid-epoch too: the batch and the partial sums travel
    with it, so a resume is exact), keep the newest --keep, and restart the timed schedule."""
    state = capture_training_state(
        models=models,
        optimizers=optimizers,
        schedulers=schedulers,
        scaler=scaler,
        epoch=pos.epoch,
        step=pos.step,
        args=args,
        extra={"batch_in_epoch": pos.batch, "epoch_totals": totals.to_plain(), **(extra or {})},
    )
    path = save_checkpoint(args.out, pos.step, state, keep=args.keep)
    schedule.mark_saved()
    return path
