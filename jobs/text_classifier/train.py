"""The training loop: AdamW + cross-entropy with gradient clipping, per-epoch validation,
checkpoints (timed, per epoch, at the end, on SIGTERM or --max-steps), exact mid-epoch
resume, metrics and loss/accuracy curves; under torchrun the same loop runs as DDP
(jobs/common/distributed.py): each rank trains on its shard of the epoch's order, rank 0
validates, logs and checkpoints."""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
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
from jobs.common.errors import DataError
from jobs.common.metrics import MetricsWriter, read_metrics
from jobs.common.plots import classifier_charts
from jobs.common.progress import (
    StepLog,
    Totals,
    agreed_checks,
    agreed_stop,
    find_checkpoint,
    report_end,
    restore_classifier,
    save_on_main,
    start_run,
)
from jobs.common.signals import StopFlag
from jobs.common.summary import classifier_summary, write_summary
from jobs.text_classifier.cli import DEFAULT_EMBED_DIM, text_columns
from jobs.text_classifier.data import (
    Encoded,
    TextData,
    class_counts,
    epoch_order,
    load_text_data,
    prepare_synthetic,
    synthetic_glove,
)
from jobs.text_classifier.glove import Embeddings, glove_embeddings, random_embeddings
from jobs.text_classifier.layout import find_layout
from jobs.text_classifier.model import ModelConfig, build_model

# Arguments that define the data, its order, the model or the optimizer: changing one
# between a run and its resume would make the result differ from an unbroken run.
RESUME_KEYS = (
    "seed",
    "batch_size",
    "lr",
    "weight_decay",
    "clip",
    "synthetic",
    "val_fraction",
    "train_file",
    "label_column",
    "text_columns",
    "max_len",
    "min_freq",
    "max_vocab",
    "model",
    "glove",
    "embed_dim",
    "freeze_embeddings",
    "hidden",
    "layers",
    "unidirectional",
    "pool",
    "dropout",
)
EVAL_BATCH = 256


@dataclass(frozen=True)
class Batch:
    tokens: torch.Tensor  # on the device, trimmed to the batch's longest sequence
    lengths: torch.Tensor  # on the CPU
    labels: torch.Tensor  # on the device


class DeviceSplit:
    """One split on the device, cut into batches by index without host-device syncs: the
    lengths (and so the trim width) are read on the CPU copy."""

    def __init__(self, data: Encoded, device: torch.device) -> None:
        self.tokens = data.tokens.to(device)
        self.labels = data.labels.to(device)
        self.lengths = data.lengths
        self.device = device

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, rows_cpu: torch.Tensor, rows_device: torch.Tensor) -> Batch:
        lengths = self.lengths[rows_cpu]
        width = int(lengths.max())  # a CPU tensor: no device sync
        return Batch(self.tokens[rows_device, :width], lengths, self.labels[rows_device])


def train(args: argparse.Namespace, stop: StopFlag) -> int:
    """Train per args; ``stop`` (set by SIGTERM) ends the run early with a checkpoint."""
    device, amp = start_run(args)
    with join_group(device) as group:
        if group.active:
            print(f"text_classifier: {group.describe()}", flush=True)
        # Read before the data is prepared, so a refused resume fails in seconds. Only rank 0's
        # --out counts (the others' may be empty or stale): it reads, the others receive.
        checkpoint = group.from_main(lambda: find_checkpoint(args, RESUME_KEYS, group.world_size))
        with MetricsWriter(args.out, enabled=group.is_main) as metrics:
            return _run(args, group, amp, stop, metrics, checkpoint)


def load_data(args: argparse.Namespace) -> tuple[TextData, Path | None]:
    """The encoded splits and the GloVe file to use (--glove, or the synthetic one)."""
    data_dir, glove = args.data, args.glove
    if args.synthetic is not None:
        data_dir = prepare_synthetic(args.data, args.out, args.synthetic, args.seed)
        glove = glove or synthetic_glove(data_dir)
    data = load_text_data(
        find_layout(data_dir, args.train_file, args.label_column),
        text_columns=text_columns(args),
        val_fraction=args.val_fraction,
        seed=args.seed,
        min_freq=args.min_freq,
        max_vocab=args.max_vocab,
        max_len=args.max_len,
    )
    return data, glove


def initial_embeddings(data: TextData, glove: Path | None, args: argparse.Namespace) -> Embeddings:
    generator = torch.Generator().manual_seed(args.seed)
    if glove is None:
        return random_embeddings(data.vocab, args.embed_dim or DEFAULT_EMBED_DIM, generator)
    embeddings = glove_embeddings(glove, data.vocab, generator)
    print(
        f"GloVe covers {embeddings.coverage:.1%} of the vocabulary "
        f"({embeddings.found} of {embeddings.words} words, {embeddings.weight.shape[1]}-d, "
        f"{glove})",
        flush=True,
    )
    return embeddings


def model_config(args: argparse.Namespace, data: TextData, embed_dim: int) -> ModelConfig:
    return ModelConfig(
        kind=args.model,
        vocab_size=len(data.vocab),
        embed_dim=embed_dim,
        num_classes=len(data.labels),
        hidden=args.hidden,
        layers=args.layers,
        bidirectional=not args.unidirectional,
        pool=args.pool,
        dropout=args.dropout,
    )


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
    # The ranks of one machine share --data: one writes the synthetic files, the rest read them.
    data, glove = group.node_leaders_first(lambda: load_data(args))
    if checkpoint is not None and list(checkpoint[1]["extra"]["vocab"]) != list(data.vocab.itos):
        raise DataError(
            f"the training data changed since {checkpoint[0]} (its vocabulary differs); "
            "restore the original CSV or use a new --out"
        )
    if group.is_main:
        for note in data.notes:
            print(note, flush=True)
    train_split, val_split = DeviceSplit(data.train, device), DeviceSplit(data.val, device)
    # Per rank: --batch-size is each process's batch, as in any DDP run.
    steps_per_epoch = math.ceil(group.shard_size(len(train_split)) / args.batch_size)
    sharing = (
        f" per rank (global batch {args.batch_size * group.world_size})" if group.active else ""
    )
    print(
        f"text_classifier: device {describe(device, amp)}; data {data.source}: "
        f"{len(train_split)} train / {len(val_split)} val, classes {class_counts(data)}, "
        f"vocabulary {len(data.vocab)}, {steps_per_epoch} steps/epoch{sharing}, "
        f"ready in {time.perf_counter() - started:.1f} s",
        flush=True,
    )

    torch.manual_seed(args.seed)  # model init independent of what data preparation drew
    embeddings = initial_embeddings(data, glove, args)
    config = model_config(args, data, embeddings.weight.shape[1])
    net = build_model(config, embeddings.weight, args.freeze_embeddings).to(device)
    group.split_rng(args.seed)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    scaler = amp.grad_scaler()
    pos, totals, last_val, last_path = restore_classifier(
        checkpoint, net, optimizer, scaler, device, group=group
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
            scaler=scaler,
            extra={
                "last_val": last_val,
                # What predict needs to rebuild the model and read new text.
                "model_config": config.to_plain(),
                "vocab": list(data.vocab.itos),
                "labels": list(data.labels),
                "text_columns": list(text_columns(args)),
                "max_len": args.max_len,
            },
            weights=net if weights else None,
        )

    def stopped(path: Path | None) -> int:
        return report_end(group, "text_classifier", pos, net, path, stopped=stop)

    if agreed_checks(group, args, pos, stop, schedule)[0]:
        return stopped(last_path)

    while pos.epoch < args.epochs:
        order = group.shard(epoch_order(len(train_split), args.seed, pos.epoch))
        order_device = order.to(device)
        step_log = StepLog(device, group)
        epoch_start = step_log.started
        run_seen = 0
        model.train()
        while pos.batch < steps_per_epoch:
            rows = slice(pos.batch * args.batch_size, (pos.batch + 1) * args.batch_size)
            batch = train_split.batch(order[rows], order_device[rows])
            loss, correct = _train_step(model, params, optimizer, scaler, amp, batch, args.clip)
            count = len(batch.lengths)
            totals.add(loss, correct, count)
            step_log.interval.add(loss, correct, count)
            run_seen += count
            pos.batch += 1
            pos.step += 1
            step_log.maybe_log(args, pos, metrics, optimizer)
            halt, due = agreed_checks(group, args, pos, stop, schedule)
            if halt:
                path = save()
                if group.is_main:
                    classifier_charts(read_metrics(args.out), args.out)
                return stopped(path)
            if due:
                last_path = save(weights=False)

        end = finish_epoch(
            group,
            totals,
            run_seen,
            epoch_start,
            lambda: evaluate(net, amp, val_split, len(data.labels)),
        )
        if group.is_main:
            log_epoch(metrics, args, pos, optimizer, end)
            publish_epoch(args.out, pos, end, data.labels)
        last_val = {**end.last_val, "epoch": pos.epoch + 1}
        pos.epoch, pos.batch = pos.epoch + 1, 0
        totals = Totals.zeros(device)
        last_path = save()
        if agreed_stop(group, stop) and pos.epoch < args.epochs:  # stopped during validation
            return stopped(last_path)

    if group.is_main:
        summary = classifier_summary(
            read_metrics(args.out),
            workload="text_classifier",
            num_classes=len(data.labels),
            per_class=read_class_report(args.out),
        )
        write_summary(args.out, summary)
    return report_end(group, "text_classifier", pos, net, last_path, last_val=last_val)


def _train_step(
    model: nn.Module,
    params: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    amp: AmpSettings,
    batch: Batch,
    clip: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    with amp.autocast():
        logits = model(batch.tokens, batch.lengths)
        loss = F.cross_entropy(logits, batch.labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # clip the true gradients, not fp16-scaled ones
    # LSTMs on long articles get occasional gradient spikes; the norm stays on the device.
    nn.utils.clip_grad_norm_(params, clip, foreach=True)
    scaler.step(optimizer)
    scaler.update()
    return loss, (logits.argmax(1) == batch.labels).sum()


@torch.inference_mode()
def evaluate(
    model: nn.Module, amp: AmpSettings, split: DeviceSplit, num_classes: int
) -> Validation:
    """Mean loss, accuracy, samples/s and the confusion matrix over a whole split."""
    model.eval()
    start = time.perf_counter()
    totals = Totals.zeros(split.device)
    confusion = ConfusionCounter(num_classes, split.device)
    rows = torch.arange(len(split))
    rows_device = rows.to(split.device)
    for first in range(0, len(split), EVAL_BATCH):
        part = slice(first, first + EVAL_BATCH)
        batch = split.batch(rows[part], rows_device[part])
        with amp.autocast():
            logits = model(batch.tokens, batch.lengths)
        loss = F.cross_entropy(logits.float(), batch.labels)
        totals.add(loss, (logits.argmax(1) == batch.labels).sum(), len(batch.lengths))
        confusion.add(logits, batch.labels)
    model.train()
    rate = len(split) / max(time.perf_counter() - start, 1e-9)
    return Validation(totals.mean_loss(), totals.accuracy(), rate, confusion.matrix())
