"""The training loop: two stages (frozen backbone, then fine-tuning), per-epoch validation,
checkpoints (timed, per epoch, at the end, on SIGTERM or --max-steps) and exact resume; under
torchrun the same loop runs as DDP (jobs/common/distributed.py): each rank trains on its shard
of the epoch's order, rank 0 validates, logs and checkpoints."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from jobs.common.checkpoint import (
    SaveSchedule,
    restore_training_state,
    save_weights,
)
from jobs.common.confusion import ConfusionCounter, padded_names, read_class_report
from jobs.common.device import AmpSettings, describe
from jobs.common.distributed import Group, join_group
from jobs.common.epochs import Validation, finish_epoch, log_epoch, publish_epoch
from jobs.common.errors import DataError
from jobs.common.metrics import MetricsWriter, read_metrics
from jobs.common.progress import (
    Position,
    StepLog,
    Totals,
    agreed_checks,
    agreed_stop,
    classification_step,
    current_lr,
    find_checkpoint,
    report_end,
    resume_rank,
    resumed_position,
    save_on_main,
    start_run,
)
from jobs.common.signals import StopFlag
from jobs.common.summary import classifier_summary, write_summary
from jobs.transfer.data import (
    ImageSplits,
    Normalizer,
    augment,
    ensure_synthetic,
    epoch_order,
    load_splits,
)
from jobs.transfer.models import MEMORY_FORMAT, build_model
from jobs.transfer.stages import clip_norm, enter_stage, rates, set_train_mode, stage_of
from jobs.transfer.weights import (
    default_cache_dir,
    load_backbone,
    read_state_dict,
    resolve_weights,
)

# Arguments that define the data, its order, the model or the optimizers: changing one between
# a run and its resume would make the result differ from an unbroken run.
RESUME_KEYS = (
    "seed",
    "batch_size",
    "lr",
    "finetune_lr",
    "clip",
    "optimizer",
    "arch",
    "image_size",
    "synthetic",
    "val_fraction",
    "frozen_epochs",
    "augment",
    "num_classes",
)


def train(args: argparse.Namespace, stop: StopFlag) -> int:
    """Train per args; ``stop`` (set by SIGTERM) ends the run early with a checkpoint."""
    device, amp = start_run(args)
    with join_group(device) as group:
        if group.active:
            print(f"transfer: {group.describe()}", flush=True)
        # Read before the data is prepared, so a refused resume fails in seconds. Only rank 0's
        # --out counts (the others' may be empty or stale): it reads, the others receive.
        checkpoint = group.from_main(lambda: find_checkpoint(args, RESUME_KEYS, group.world_size))
        with MetricsWriter(args.out, enabled=group.is_main) as metrics:
            return _run(args, group, amp, stop, metrics, checkpoint)


def _prepare_data(args: argparse.Namespace) -> ImageSplits:
    if args.synthetic is not None and ensure_synthetic(
        args.data, args.synthetic, args.image_size, args.seed
    ):
        print(f"data: wrote {args.synthetic} generated pictures into {args.data}", flush=True)
    return load_splits(
        args.data, args.image_size, args.val_fraction, args.seed, args.max_bad_fraction
    )


def _num_classes(args: argparse.Namespace, data: ImageSplits) -> int:
    found = len(data.class_names)
    if args.num_classes is None:
        return found
    if args.num_classes < found:
        raise DataError(
            f"--num-classes {args.num_classes}: --data {args.data} has {found} class folders "
            f"({', '.join(data.class_names)}); pass --num-classes {found} or leave it out"
        )
    return args.num_classes


def _init_backbone(args: argparse.Namespace, model: nn.Module) -> str:
    """Pretrained weights into the backbone; returns a label for the start-up line."""
    if args.weights is None:
        print(
            f"warning: no --weights: the {args.arch} backbone starts from random init, so "
            "this is training from scratch, not transfer learning",
            file=sys.stderr,
            flush=True,
        )
        return "random init"
    cache = args.weights_cache or default_cache_dir()
    path = resolve_weights(args.weights, cache, args.weights_sha256)
    state = read_state_dict(path, args.weights)
    count = load_backbone(model, args.arch, state, args.weights)
    return f"weights {path.name} ({count} tensors)"


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
    # The ranks of one machine share --data and the weights cache: one writes, the rest read.
    data = group.node_leaders_first(lambda: _prepare_data(args))
    if data.warning is not None and group.is_main:  # every rank read the same files
        print(data.warning, file=sys.stderr, flush=True)
    num_classes = _num_classes(args, data)
    if checkpoint is not None and checkpoint[1]["extra"]["class_names"] != data.class_names:
        raise DataError(
            f"--data {args.data}: classes {data.class_names} differ from the checkpoint's "
            f"{checkpoint[1]['extra']['class_names']}; resume on the same data or use a new --out"
        )
    # Kept as uint8 on the device (4x smaller than floats); normalised batch by batch.
    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    val_x, val_y = data.val_x.to(device), data.val_y.to(device)
    normalize = Normalizer(device)
    # Per rank: --batch-size is each process's batch, as in any DDP run.
    steps_per_epoch = math.ceil(group.shard_size(len(train_y)) / args.batch_size)

    torch.manual_seed(args.seed)  # model init independent of what data preparation drew
    net = build_model(args.arch, num_classes)
    # A resumed run takes every tensor from the checkpoint: no weights download needed.
    origin = (
        group.node_leaders_first(lambda: _init_backbone(args, net))
        if checkpoint is None
        else "from checkpoint"
    )
    net.to(device=device, memory_format=MEMORY_FORMAT)
    group.split_rng(args.seed)
    sharing = (
        f" per rank (global batch {args.batch_size * group.world_size})" if group.active else ""
    )
    chosen = rates(args)
    print(
        f"transfer: device {describe(device, amp)}; {args.arch} ({origin}), "
        f"{num_classes} classes ({', '.join(data.class_names)}); data {data.source}: "
        f"{len(train_y)} train / {len(val_y)} val at {args.image_size} px, "
        f"{steps_per_epoch} steps/epoch{sharing}; {args.optimizer} lr {chosen.head:g} for the "
        f"head, {chosen.finetune:g} to fine-tune ({chosen.source}); "
        f"ready in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    class_names = padded_names(data.class_names, num_classes)

    scaler = amp.grad_scaler()
    stage = stage_of(args, 0)
    optimizer = enter_stage(net, stage, args)
    pos, totals, last_val, last_path = Position(), Totals.zeros(device), None, None
    if checkpoint is not None:
        stage, optimizer, pos, totals, last_val, last_path = _restore(
            checkpoint, args, net, scaler, device
        )
        totals = resume_rank(group, checkpoint[1], totals)
    set_train_mode(net, stage)
    # `net` is what is saved and validated; `model` (DDP under torchrun) is what trains. DDP
    # learns which parameters train when it wraps them, so each stage wraps anew.
    model = group.wrap(net)
    schedule = SaveSchedule(args.checkpoint_every_minutes)
    saved_step = pos.step if last_path is not None else None
    weights_step: int | None = None  # the step model_weights.pt was last written at

    def save(weights: bool = True) -> Path | None:
        """A checkpoint; with `weights`, model_weights.pt too (every save but the timed ones,
        which are for resuming only)."""
        nonlocal saved_step, weights_step
        path = save_on_main(
            group,
            args,
            pos,
            totals,
            schedule,
            models={"model": net},
            optimizers={"optimizer": optimizer},
            scaler=scaler,
            extra={
                "stage": stage,
                "last_val": last_val,
                # What predict needs to rebuild and label the model without the training args.
                "arch": args.arch,
                "num_classes": num_classes,
                "class_names": data.class_names,
                "image_size": args.image_size,
            },
            weights=net if weights else None,
        )
        saved_step = pos.step
        weights_step = pos.step if weights else weights_step
        return path

    def stopped() -> int:
        # saved_step is the same on every rank (last_path is None except on rank 0), so all
        # ranks agree on whether to save, which is a collective.
        path = last_path if saved_step == pos.step else save()
        if group.is_main and weights_step != pos.step:  # that step's save was a timed one
            save_weights(args.out, net)
        if group.is_main:
            print(
                f"stopped by {stop.reason} at epoch {pos.epoch + 1}, step {pos.step} ({stage} "
                f"stage); checkpoint {path}; continue with --resume",
                flush=True,
            )
        return report_end(group, "transfer", pos, net, path, stopped=stop, report=False)

    if agreed_checks(group, args, pos, stop, schedule)[0]:
        return stopped()

    while pos.epoch < args.epochs:
        order = group.shard(epoch_order(len(train_y), args.seed, pos.epoch)).to(device)
        step_log = StepLog(device, group)
        epoch_start = step_log.started
        run_seen = 0
        while pos.batch < steps_per_epoch:
            batch = order[pos.batch * args.batch_size : (pos.batch + 1) * args.batch_size]
            # The batch is gathered as uint8 (4x less to copy) and normalised after.
            x = normalize(train_x.index_select(0, batch))
            if args.augment:
                x = augment(x).contiguous(memory_format=MEMORY_FORMAT)
            y = train_y.index_select(0, batch)
            loss, correct = classification_step(
                model, optimizer, scaler, amp, x, y, clip_norm(args, stage)
            )
            count = batch.shape[0]
            totals.add(loss, correct, count)
            step_log.interval.add(loss, correct, count)
            run_seen += count
            pos.batch += 1
            pos.step += 1
            step_log.maybe_log(args, pos, metrics, optimizer, stage=stage)
            halt, due = agreed_checks(group, args, pos, stop, schedule)
            if halt:
                return stopped()
            if due:
                last_path = save(weights=False)

        end = finish_epoch(
            group,
            totals,
            run_seen,
            epoch_start,
            lambda: evaluate(net, amp, normalize, val_x, val_y, args.batch_size, num_classes),
        )
        set_train_mode(net, stage)
        if group.is_main:
            log_epoch(metrics, args, pos, optimizer, end, rate_format=".1f", stage=stage)
            publish_epoch(args.out, pos, end, class_names)
        last_val = {**end.last_val, "epoch": pos.epoch + 1}
        pos.epoch, pos.batch = pos.epoch + 1, 0
        totals = Totals.zeros(device)
        # Switch before saving, so the epoch-end checkpoint already holds the next stage's
        # optimizer and a resume from it continues in the right stage.
        if stage_of(args, pos.epoch) != stage and pos.epoch < args.epochs:
            stage = stage_of(args, pos.epoch)
            optimizer = enter_stage(net, stage, args)
            set_train_mode(net, stage)
            # The old DDP's hooks go with it (no cycles keep it alive) before the new one
            # registers its own on the parameters that now train.
            del model
            model = group.wrap(net)
            if group.is_main:
                print(
                    f"stage: {stage} from epoch {pos.epoch + 1}, lr {current_lr(optimizer):g}",
                    flush=True,
                )
        last_path = save()
        if agreed_stop(group, stop) and pos.epoch < args.epochs:  # stopped during validation
            return stopped()

    if group.is_main:
        summary = classifier_summary(
            read_metrics(args.out),
            workload="transfer",
            num_classes=num_classes,
            per_class=read_class_report(args.out),
        )
        write_summary(args.out, summary)
    return report_end(group, "transfer", pos, net, last_path, last_val=last_val)


def _restore(
    checkpoint: tuple[Path, dict[str, Any]],
    args: argparse.Namespace,
    model: nn.Module,
    scaler: torch.amp.GradScaler,
    device: torch.device,
) -> tuple[str, torch.optim.Optimizer, Position, Totals, dict[str, Any] | None, Path]:
    """Stage and its optimizer, position, partial-epoch totals, last validation result."""
    path, state = checkpoint
    stage = state["extra"]["stage"]
    # The optimizer must be the saved stage's (same parameter groups) for its state to load.
    optimizer = enter_stage(model, stage, args)
    restore_training_state(
        state, models={"model": model}, optimizers={"optimizer": optimizer}, scaler=scaler
    )
    pos, totals, last_val = resumed_position(path, state, device, note=f"{stage} stage")
    return stage, optimizer, pos, totals, last_val, path


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    amp: AmpSettings,
    normalize: Normalizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    num_classes: int,
) -> Validation:
    """Mean loss, accuracy, samples/s and the confusion matrix over a whole split; leaves the
    model in eval mode."""
    model.eval()
    start = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    confusion = ConfusionCounter(num_classes, x.device)
    for first in range(0, len(y), batch_size):
        xb, yb = normalize(x[first : first + batch_size]), y[first : first + batch_size]
        with amp.autocast():
            logits = model(xb)
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum").double()
        correct += (logits.argmax(1) == yb).sum()
        confusion.add(logits, yb)
    n = max(len(y), 1)
    rate = len(y) / max(time.perf_counter() - start, 1e-9)
    return Validation(loss_sum.item() / n, correct.item() / n, rate, confusion.matrix())
