"""The training loop: AdamW + cross-entropy, per-epoch validation, checkpoints (timed, per
epoch, at the end, on SIGTERM or --max-steps) and exact mid-epoch resume; under torchrun the
same loop runs as DDP (jobs/common/distributed.py): each rank trains on its shard of the
epoch's order, rank 0 validates, logs and checkpoints."""

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
from jobs.common.confusion import ConfusionCounter, read_class_report
from jobs.common.device import AmpSettings, describe
from jobs.common.distributed import Group, join_group
from jobs.common.epochs import Validation, finish_epoch, log_epoch, publish_epoch
from jobs.common.metrics import MetricsWriter, read_metrics
from jobs.common.progress import (
    StepLog,
    Totals,
    agreed_checks,
    agreed_stop,
    classification_step,
    find_checkpoint,
    report_end,
    restore_classifier,
    save_on_main,
    start_run,
)
from jobs.common.signals import StopFlag
from jobs.common.summary import classifier_summary, write_summary
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
# The classes as the confusion matrix and per_class.csv name them: the digits themselves.
DIGIT_NAMES = tuple(str(digit) for digit in range(10))


def train(args: argparse.Namespace, stop: StopFlag) -> int:
    """Train per args; ``stop`` (set by SIGTERM) ends the run early with a checkpoint."""
    device, amp = start_run(args)
    with join_group(device) as group:
        if group.active:
            print(f"mnist_cnn: {group.describe()}", flush=True)
        # Read before the data is prepared, so a refused resume fails in seconds. Only rank 0's
        # --out counts (the others' may be empty or stale): it reads, the others receive.
        checkpoint = group.from_main(lambda: find_checkpoint(args, RESUME_KEYS, group.world_size))
        with MetricsWriter(args.out, enabled=group.is_main) as metrics:
            return _run(args, group, amp, stop, metrics, checkpoint)


def _run(
    args: argparse.Namespace,
    group: Group,
    amp: AmpSettings,
    stop: StopFlag,
    metrics: MetricsWriter,
    checkpoint: tuple[Path, dict[str, Any]] | None,
) -> int:
    started = time.perf_counter()
    device = group.device
    data = load_digits(args.data, args.synthetic, args.val_fraction, args.seed)
    train_x, train_y = to_inputs(data.train_x).to(device), data.train_y.to(device)
    val_x, val_y = to_inputs(data.val_x).to(device), data.val_y.to(device)
    # Per rank: --batch-size is each process's batch, as in any DDP run.
    steps_per_epoch = math.ceil(group.shard_size(len(train_y)) / args.batch_size)
    sharing = (
        f" per rank (global batch {args.batch_size * group.world_size})" if group.active else ""
    )
    print(
        f"mnist_cnn: device {describe(device, amp)}; data {data.source}: "
        f"{len(train_y)} train / {len(val_y)} val, {steps_per_epoch} steps/epoch{sharing}, "
        f"ready in {time.perf_counter() - started:.1f} s",
        flush=True,
    )

    torch.manual_seed(args.seed)  # model init independent of what data preparation drew
    net = MnistCnn()
    initialise(net, args.init)
    net = net.to(device)
    group.split_rng(args.seed)
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr)
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
        checkpoint, net, optimizer, scaler, device, schedulers, group
    )
    # `net` is what is saved and validated; `model` (DDP under torchrun) is what trains.
    model = group.wrap(net)

    schedule = SaveSchedule(args.checkpoint_every_minutes)

    def save(weights: bool = True) -> Path | None:
        """A checkpoint; with `weights`, model_weights.pt too (every save but the timed ones,
        which are for resuming only)."""
        return save_on_main(
            group,
            args,
            pos,
            totals,
            schedule,
            models={"model": net},
            optimizers={"optimizer": optimizer},
            schedulers=schedulers,
            scaler=scaler,
            extra={"last_val": last_val},
            weights=net if weights else None,
        )

    def stopped(path: Path | None) -> int:
        return report_end(group, "mnist_cnn", pos, net, path, stopped=stop)

    if agreed_checks(group, args, pos, stop, schedule)[0]:
        return stopped(last_path)

    while pos.epoch < args.epochs:
        if weights is not None:
            order = weighted_order(weights, args.seed, pos.epoch)
        else:
            order = epoch_order(len(train_y), args.seed, pos.epoch)
        order = group.shard(order).to(device)
        step_log = StepLog(device, group)
        epoch_start = step_log.started
        run_seen = 0
        model.train()
        while pos.batch < steps_per_epoch:
            batch = order[pos.batch * args.batch_size : (pos.batch + 1) * args.batch_size]
            inputs = train_x[batch]
            if args.augment:
                # The batch's index in the whole group: each rank draws its own warps, and a
                # single process (rank 0 of 1) draws what it always drew.
                at = pos.batch * group.world_size + group.rank
                inputs = augment(inputs, args.seed, pos.epoch, at)
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
            halt, due = agreed_checks(group, args, pos, stop, schedule)
            if halt:
                return stopped(save())
            if due:
                last_path = save(weights=False)

        end = finish_epoch(
            group, totals, run_seen, epoch_start, lambda: evaluate(net, amp, val_x, val_y)
        )
        if group.is_main:
            log_epoch(metrics, args, pos, optimizer, end)
            # Pictures a person looks at, refreshed every epoch (they come home with the
            # checkpoints).
            publish_epoch(args.out, pos, end, DIGIT_NAMES)
        last_val = {**end.last_val, "epoch": pos.epoch + 1}
        pos.epoch, pos.batch = pos.epoch + 1, 0
        totals = Totals.zeros(device)
        last_path = save()
        if agreed_stop(group, stop) and pos.epoch < args.epochs:  # stopped during validation
            return stopped(last_path)

    if group.is_main:
        summary = classifier_summary(
            read_metrics(args.out),
            workload="mnist_cnn",
            num_classes=10,
            per_class=read_class_report(args.out),
        )
        write_summary(args.out, summary)
    return report_end(group, "mnist_cnn", pos, net, last_path, last_val=last_val)


@torch.inference_mode()
def evaluate(model: nn.Module, amp: AmpSettings, x: torch.Tensor, y: torch.Tensor) -> Validation:
    """Mean loss, accuracy, samples/s and the confusion matrix over a whole split."""
    model.eval()
    start = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    confusion = ConfusionCounter(len(DIGIT_NAMES), x.device)
    for first in range(0, len(y), EVAL_BATCH):
        xb, yb = x[first : first + EVAL_BATCH], y[first : first + EVAL_BATCH]
        with amp.autocast():
            logits = model(xb)
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum").double()
        correct += (logits.argmax(1) == yb).sum()
        confusion.add(logits, yb)
    model.train()
    n = max(len(y), 1)
    rate = len(y) / max(time.perf_counter() - start, 1e-9)
    return Validation(loss_sum.item() / n, correct.item() / n, rate, confusion.matrix())
