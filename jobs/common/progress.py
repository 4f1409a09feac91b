"""What every workload's training loop keeps track of, in one place: running loss/accuracy sums,
the position within the run, which checkpoint to resume from, and how an early stop (SIGTERM,
--max-steps) is detected and reported. The group-aware helpers (``global_totals``,
``agreed_checks``, ``save_on_main``, ``report_end``) make the same loop correct under torchrun
and are the identity for a single process."""

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
    save_weights,
)
from jobs.common.device import AmpSettings, amp_settings, select_device
from jobs.common.distributed import Group, saved_world_size, state_digest
from jobs.common.errors import UsageError
from jobs.common.metrics import MetricsWriter, rewind_metrics
from jobs.common.seeding import capture_rng_state, restore_rng_state, seed_everything
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


def global_totals(group: Group, totals: Totals) -> Totals:
    """The sums over every rank (the same object in a group of one), so what is logged, printed
    and saved describes the whole group's samples. One all-reduce for all three."""
    if not group.active:
        return totals
    seen = torch.tensor(float(totals.seen), dtype=torch.float64, device=totals.loss_sum.device)
    # float64 holds the correct count exactly (below 2**53).
    packed = torch.stack([totals.loss_sum, totals.correct.double(), seen])
    loss_sum, correct, seen_all = group.all_sum(packed).unbind()
    return Totals(loss_sum, correct.round().long(), int(seen_all.item()))


def resume_rank(group: Group, state: dict[str, Any], totals: Totals) -> Totals:
    """What of a group's checkpoint is this rank's own, after restore_training_state gave every
    rank rank 0's: its RNG state (ranks draw different amounts, e.g. dropout over batches of
    other shapes) and its share of the partial-epoch totals. Those are the group's sums, so
    rank 0 carries them on and the others start from zero, and the epoch's all-reduce counts
    every sample once."""
    if not group.active:
        return totals
    rank_rng = state["extra"].get("rank_rng")
    if rank_rng is not None and len(rank_rng) == group.world_size:
        restore_rng_state(rank_rng[group.rank])
    return totals if group.is_main else Totals.zeros(totals.loss_sum.device)


class StepLog:
    """The `train_step` line every `--log-every` steps: loss, accuracy, lr and throughput since
    the previous line. The loop adds each batch to `interval`. With a group, every rank calls
    ``maybe_log`` (it sums the interval over the group) and rank 0's writer records it."""

    def __init__(self, device: torch.device, group: Group | None = None) -> None:
        self.device = device
        self.group = group
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
        interval = global_totals(self.group, self.interval) if self.group else self.interval
        loss, accuracy = interval.mean_loss(), interval.accuracy()
        now = time.perf_counter()
        metrics.log(
            step=pos.step,
            epoch=pos.epoch + 1,
            split="train_step",
            loss=loss,
            accuracy=accuracy,
            lr=current_lr(optimizer),
            samples_per_s=interval.seen / max(now - self.started, 1e-9),
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
    args: argparse.Namespace, resume_keys: Iterable[str], world_size: int = 1
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to continue from, if any; refuses unsafe reuse of --out. Under torchrun
    only rank 0 calls it (its --out is the one that counts) and broadcasts the answer."""
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
    check_world_size(found, world_size)
    # A run stopped without warning (a reclaimed spot machine) logged past its checkpoint.
    if dropped := rewind_metrics(args.out, found[1]["step"]):
        print(f"resume: dropped {dropped} metrics row(s) logged after that checkpoint", flush=True)
    return found


def check_world_size(checkpoint: tuple[Path, dict[str, Any]], world_size: int) -> None:
    """Refuse to resume with another number of processes: each one's data shard, the steps per
    epoch (and so the position and the lr schedule) depend on it, as on --batch-size."""
    saved = saved_world_size(checkpoint[1])
    if saved != world_size:
        raise UsageError(
            f"{checkpoint[0]} was written by {saved} training process(es) and this run has "
            f"{world_size}; resume with as many (torchrun --nnodes x --nproc-per-node), "
            "or use a new --out"
        )


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def limit_reached(args: argparse.Namespace, pos: Position, stop: StopFlag) -> bool:
    if args.max_steps is not None and pos.step >= args.max_steps:
        stop.set("--max-steps")
    return bool(stop)


def agreed_checks(
    group: Group, args: argparse.Namespace, pos: Position, stop: StopFlag, schedule: SaveSchedule
) -> tuple[bool, bool]:
    """(stop now, save now), the same on every rank: a SIGTERM reaches one machine, and each
    rank's clock decides on its own when a timed checkpoint is due. One small all-reduce per
    step, on the CPU, keeps all ranks at the same step and in the same collectives."""
    halt, due = group.any_of(limit_reached(args, pos, stop), schedule.due())
    if halt and not stop:
        stop.set("a signal on another rank")
    return halt, due


def agreed_stop(group: Group, stop: StopFlag) -> bool:
    """Whether any rank was asked to stop (e.g. during validation); see agreed_checks."""
    (halt,) = group.any_of(bool(stop))
    if halt and not stop:
        stop.set("a signal on another rank")
    return halt


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
    group: Group | None = None,
) -> tuple[Position, Totals, dict[str, Any] | None, Path | None]:
    """A one-model classifier's run from its checkpoint (or from the start when there is none):
    position, partial-epoch totals, last validation result and the checkpoint's path. With a
    group, each rank takes its own share (resume_rank)."""
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
    if group is not None:
        totals = resume_rank(group, state, totals)
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


def report_end(
    group: Group,
    prog: str,
    pos: Position,
    model: torch.nn.Module,
    path: Path | None,
    *,
    stopped: StopFlag | None = None,
    last_val: dict[str, Any] | None = None,
    report: bool = True,
) -> int:
    """A classifier's last lines: rank 0 reports the result (or the stop) and its checkpoint,
    unless the workload printed its own (``report=False``); under torchrun every rank also
    prints its step and a digest of its parameters, which must be the same on all ranks (a
    quick check in the log, and what the tests compare). Buffers are left out: batch-norm
    statistics are each rank's own under DDP (rank 0's are broadcast before every forward,
    and rank 0's are the ones saved)."""
    if group.is_main and report:
        if stopped is not None:
            report_stopped(stopped, path, pos)
        else:
            report_done(last_val, path)
    if group.active:
        print(
            f"{prog}: rank {group.rank}/{group.world_size} finished at step {pos.step}, "
            f"weights sha256 {state_digest(dict(model.named_parameters()))}",
            flush=True,
        )
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
    clip_norm: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One cross-entropy step; returns the loss and the count of correct predictions as device
    tensors (no sync), for Totals. `clip_norm`: scale the gradients of the parameters the
    optimizer trains down to this total norm first (one spike then cannot wreck the weights)."""
    with amp.autocast():
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if clip_norm is not None:
        scaler.unscale_(optimizer)  # clip the true gradients, not fp16-scaled ones
        trained = [p for group in optimizer.param_groups for p in group["params"]]
        # The norm stays on the device: no sync.
        torch.nn.utils.clip_grad_norm_(trained, clip_norm, foreach=True)
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
    weights: torch.nn.Module | None = None,
) -> Path:
    """Checkpoint the run where it stands (mid-epoch too: the batch and the partial sums travel
    with it, so a resume is exact), keep the newest --keep, and restart the timed schedule.
    With `weights`, that model's state_dict alone is also written as model_weights.pt."""
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
    if weights is not None:
        save_weights(args.out, weights)
    schedule.mark_saved()
    return path


def save_on_main(
    group: Group,
    args: argparse.Namespace,
    pos: Position,
    totals: Totals,
    schedule: SaveSchedule,
    *,
    models: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    scaler: torch.amp.GradScaler,
    schedulers: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    weights: torch.nn.Module | None = None,
) -> Path | None:
    """save_progress for a group: every rank calls it at the same step (the partial totals are
    summed over the group and every rank's RNG state gathered), rank 0 writes, and every rank
    restarts its timed schedule. The models are the unwrapped ones, so the checkpoint loads
    without DDP too. Returns the path on rank 0, None elsewhere."""
    summed = global_totals(group, totals)
    group_extra = group.checkpoint_extra()
    if group.active:
        group_extra["rank_rng"] = group.gather_object(capture_rng_state())
    if not group.is_main:
        schedule.mark_saved()
        return None
    return save_progress(
        args,
        pos,
        summed,
        schedule,
        models=models,
        optimizers=optimizers,
        scaler=scaler,
        schedulers=schedulers,
        extra={**(extra or {}), **group_extra},
        weights=weights,
    )
