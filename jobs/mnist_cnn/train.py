"""The training loop: AdamW + cross-entropy, per-epoch validation, checkpoints (timed, per
epoch, at the end, on SIGTERM or --max-steps) and exact mid-epoch resume."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from jobs.common.checkpoint import (
    SaveSchedule,
)
from jobs.common.device import AmpSettings, describe
from jobs.common.metrics import MetricsWriter, read_metrics
from jobs.common.plots import loss_curves
from jobs.common.progress import (
    StepLog,
    Totals,
    classification_step,
    current_lr,
    find_checkpoint,
    limit_reached,
    report_done,
    report_stopped,
    restore_classifier,
    save_progress,
    start_run,
)
from jobs.common.signals import StopFlag
from jobs.mnist_cnn.data import epoch_order, load_digits, to_inputs
from jobs.mnist_cnn.model import MnistCnn
from jobs.mnist_cnn.techniques import (
    augment,
    initialise,
    make_scheduler,
    sample_weights,
    weighted_order,
)

# Arguments that define the data, its order, or the optimizer: changing one between a run
# and its resume would make the result differ from an unbroken run.
RESUME_KEYS = (
    "seed",
    "batch_size",
    "lr",
    "synthetic",
    "val_fraction",
    "class_weights",
    "lr_schedule",
    "step_epochs",
    "gamma",
    "init",
    "augment",
)
EVAL_BATCH = 1000


def train(args: argparse.Namespace, stop: StopFlag) -> int:
    """Train per args; ``stop`` (set by SIGTERM) ends the run early with a checkpoint."""
    device, amp = start_run(args)
    # Read before the data is prepared, so a refused resume fails in seconds.
    checkpoint = find_checkpoint(args, RESUME_KEYS)
    with MetricsWriter(args.out) as metrics:
        return _run(args, device, amp, stop, metrics, checkpoint)


def _run(
    args: argparse.Namespace,
    device: torch.device,
    amp: AmpSettings,
    stop: StopFlag,
    metrics: MetricsWriter,
    checkpoint: tuple[Path, dict[str, Any]] | None,
) -> int:
    started = time.perf_counter()
    data = load_digits(args.data, args.synthetic, args.val_fraction, args.seed)
    train_x, train_y = to_inputs(data.train_x).to(device), data.train_y.to(device)
    val_x, val_y = to_inputs(data.val_x).to(device), data.val_y.to(device)
    steps_per_epoch = math.ceil(len(train_y) / args.batch_size)
    print(
        f"mnist_cnn: device {describe(device, amp)}; data {data.source}: "
        f"{len(train_y)} train / {len(val_y)} val, {steps_per_epoch} steps/epoch, "
        f"ready in {time.perf_counter() - started:.1f} s",
        flush=True,
    )

    torch.manual_seed(args.seed)  # model init independent of what data preparation drew
    model = MnistCnn()
    initialise(model, args.init)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    scheduler = make_scheduler(
        args.lr_schedule,
        optimizer,
        lr=args.lr,
        steps_per_epoch=steps_per_epoch,
        epochs=args.epochs,
        step_epochs=args.step_epochs,
        gamma=args.gamma,
    )
    schedulers = {"scheduler": scheduler} if scheduler is not None else None
    weights = sample_weights(data.train_y, args.class_weights) if args.class_weights else None
    scaler = amp.grad_scaler()
    pos, totals, last_val, last_path = restore_classifier(
        checkpoint, model, optimizer, scaler, device, schedulers
    )

    schedule = SaveSchedule(args.checkpoint_every_minutes)

    def save() -> Path:
        return save_progress(
            args,
            pos,
            totals,
            schedule,
            models={"model": model},
            optimizers={"optimizer": optimizer},
            schedulers=schedulers,
            scaler=scaler,
            extra={"last_val": last_val},
        )

    if limit_reached(args, pos, stop):
        return report_stopped(stop, last_path, pos)

    while pos.epoch < args.epochs:
        if weights is not None:
            order = weighted_order(weights, args.seed, pos.epoch).to(device)
        else:
            order = epoch_order(len(train_y), args.seed, pos.epoch).to(device)
        step_log = StepLog(device)
        epoch_start = step_log.started
        run_seen = 0
        model.train()
        while pos.batch < steps_per_epoch:
            batch = order[pos.batch * args.batch_size : (pos.batch + 1) * args.batch_size]
            inputs = train_x[batch]
            if args.augment:
                inputs = augment(inputs, args.seed, pos.epoch, pos.batch)
            loss, correct = classification_step(
                model, optimizer, scaler, amp, inputs, train_y[batch]
            )
            if scheduler is not None:
                scheduler.step()
            totals.add(loss, correct, len(batch))
            step_log.interval.add(loss, correct, len(batch))
            run_seen += len(batch)
            pos.batch += 1
            pos.step += 1
            step_log.maybe_log(args, pos, metrics, optimizer)
            if limit_reached(args, pos, stop):
                return report_stopped(stop, save(), pos)
            if schedule.due():
                last_path = save()

        train_rate = run_seen / max(time.perf_counter() - epoch_start, 1e-9)
        val_loss, val_acc, val_rate = evaluate(model, amp, val_x, val_y)
        metrics.log(
            step=pos.step,
            epoch=pos.epoch + 1,
            split="train",
            loss=totals.mean_loss(),
            accuracy=totals.accuracy(),
            lr=current_lr(optimizer),
            samples_per_s=train_rate,
        )
        metrics.log(
            step=pos.step,
            epoch=pos.epoch + 1,
            split="val",
            loss=val_loss,
            accuracy=val_acc,
            lr=current_lr(optimizer),
            samples_per_s=val_rate,
        )
        print(
            f"epoch {pos.epoch + 1}/{args.epochs}: train loss {totals.mean_loss():.4f} "
            f"acc {totals.accuracy():.2%} | val loss {val_loss:.4f} acc {val_acc:.2%} | "
            f"{train_rate:.0f} samples/s, {time.perf_counter() - epoch_start:.1f} s",
            flush=True,
        )
        # A picture a person looks at, refreshed every epoch (it comes home with the checkpoints).
        loss_curves(read_metrics(args.out), args.out / "loss.png")
        last_val = {"loss": val_loss, "accuracy": val_acc, "epoch": pos.epoch + 1}
        pos.epoch, pos.batch = pos.epoch + 1, 0
        totals = Totals.zeros(device)
        last_path = save()
        if stop and pos.epoch < args.epochs:  # signal arrived during validation
            return report_stopped(stop, last_path, pos)

    report_done(last_val, last_path)
    return 0


@torch.inference_mode()
def evaluate(
    model: nn.Module, amp: AmpSettings, x: torch.Tensor, y: torch.Tensor
) -> tuple[float, float, float]:
    """(mean loss, accuracy, samples/s) over a whole split."""
    model.eval()
    start = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for first in range(0, len(y), EVAL_BATCH):
        xb, yb = x[first : first + EVAL_BATCH], y[first : first + EVAL_BATCH]
        with amp.autocast():
            logits = model(xb)
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum").double()
        correct += (logits.argmax(1) == yb).sum()
    model.train()
    n = max(len(y), 1)
    rate = len(y) / max(time.perf_counter() - start, 1e-9)
    return loss_sum.item() / n, correct.item() / n, rate
