"""The training loop: Adam on both nets, a fixed-noise sample grid and the quality figures
(quality.py) each epoch, checkpoints with a generator-only generator.pt beside them (timed, per
epoch, at the end, on SIGTERM or --max-steps) and exact mid-epoch resume."""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from jobs.common.checkpoint import (
    SaveSchedule,
    check_resume_compatible,
    restore_training_state,
)
from jobs.common.device import describe
from jobs.common.distributed import single_process_only
from jobs.common.metrics import MetricsWriter, read_metrics
from jobs.common.progress import (
    Position,
    find_checkpoint,
    limit_reached,
    report_stopped,
    save_progress,
    start_run,
)
from jobs.common.signals import StopFlag
from jobs.common.summary import gan_summary, write_summary
from jobs.dcgan.augment import DiffAugment
from jobs.dcgan.data import epoch_order, load_pictures, steps_per_epoch, to_inputs
from jobs.dcgan.export import save_generator
from jobs.dcgan.model import Discriminator, Generator
from jobs.dcgan.outputs import grid_due, write_charts, write_samples
from jobs.dcgan.policy import parse_policy
from jobs.dcgan.quality import QualityProbe
from jobs.dcgan.sampling import calibrate_batchnorm, calibration_noise
from jobs.dcgan.step import GanStep, Totals

# Arguments that define the data, its order, the nets or the optimizers: changing one between
# a run and its resume would make the result differ from an unbroken run.
RESUME_KEYS = (
    "seed",
    "batch_size",
    "lr",
    "beta1",
    "synthetic",
    "image_size",
    "nz",
    "ngf",
    "ndf",
    "augment",
    "no_spectral_norm",
    "label_smoothing",
    "lr_d",
)
# What a checkpoint written before these flags existed was trained with: it is resumed only
# with them (one error line says which flag to pass otherwise).
# (lr_d: the checkpoint's own --lr, which both nets used then.)
LEGACY_RECIPE = {"augment": "none", "no_spectral_norm": True, "label_smoothing": 0.0}
BETA2 = 0.999
# Fewer steps than this in all, and the samples will still be blobs: said at the start, with
# the --epochs that gives STEPS_TO_SUGGEST (an epoch of a few hundred pictures is a few steps).
FEW_STEPS = 1000
STEPS_TO_SUGGEST = 3000
QUALITY_FIELDS = ("fid_proxy", "fid_conv", "diversity")
# The figure the summary names the best epoch by (see quality.py).
SUMMARY_QUALITY = "fid_conv"
_GRID_SEED_OFFSET = 104_729  # keeps the grid noise apart from the fid_proxy noise


@dataclass
class Nets:
    generator: Generator
    discriminator: Discriminator
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam

    def models(self) -> dict[str, torch.nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "discriminator": self.opt_d}


def build_nets(args: argparse.Namespace, device: torch.device) -> Nets:
    torch.manual_seed(args.seed)  # init independent of what data preparation drew
    generator = Generator(args.nz, args.ngf, args.image_size).to(device)
    discriminator = Discriminator(args.ndf, args.image_size, not args.no_spectral_norm).to(device)
    betas = (args.beta1, BETA2)
    return Nets(
        generator,
        discriminator,
        torch.optim.Adam(generator.parameters(), lr=args.lr, betas=betas),
        torch.optim.Adam(discriminator.parameters(), lr=args.lr_d, betas=betas),
    )


def check_legacy_recipe(checkpoint: tuple[Path, dict[str, Any]] | None, args: Any) -> None:
    """A checkpoint from before --augment/--no-spectral-norm/--label-smoothing/--lr-d names none
    of them; it was trained without all four, and resumes only that way."""
    if checkpoint is None:
        return
    saved = checkpoint[1]["args"]
    legacy = {**LEGACY_RECIPE, "lr_d": saved.get("lr")}
    check_resume_compatible({**legacy, **saved}, args, legacy)


def fixed_noise(count: int, nz: int, seed: int) -> torch.Tensor:
    """The sample grid's noise: the same every epoch and on every resume."""
    return torch.randn(count, nz, generator=torch.Generator().manual_seed(seed + _GRID_SEED_OFFSET))


def train(args: argparse.Namespace, stop: StopFlag) -> int:
    """Train per args; ``stop`` (set by SIGTERM) ends the run early with a checkpoint."""
    single_process_only("dcgan")
    device, amp = start_run(args)
    # Read before the data is prepared, so a refused resume fails in seconds.
    checkpoint = find_checkpoint(args, RESUME_KEYS)
    check_legacy_recipe(checkpoint, args)
    started = time.perf_counter()
    pictures = load_pictures(
        args.data, args.image_size, args.synthetic, args.seed, args.max_bad_fraction
    )
    if pictures.warning is not None:
        print(pictures.warning, file=sys.stderr, flush=True)
    images = pictures.images.to(device)  # uint8: 4x smaller than floats, converted per batch
    batch_size = min(args.batch_size, len(images))
    per_epoch = steps_per_epoch(len(images), args.batch_size)
    probe = QualityProbe(pictures.images, args.nz, args.seed, device)
    print(
        f"dcgan: device {describe(device, amp)}; data {pictures.source} at {args.image_size} px, "
        f"{per_epoch} steps/epoch of {batch_size}, ready in {time.perf_counter() - started:.1f} s",
        flush=True,
    )

    if per_epoch * args.epochs < FEW_STEPS:
        print(
            f"note: {per_epoch * args.epochs} training steps in all ({args.epochs} epochs of "
            f"{per_epoch}): a GAN needs thousands before its samples are more than blobs; "
            f"--epochs {math.ceil(STEPS_TO_SUGGEST / per_epoch)} gives about {STEPS_TO_SUGGEST}",
            flush=True,
        )
    nets = build_nets(args, device)
    scaler = amp.grad_scaler()
    step = GanStep(
        nets.generator,
        nets.discriminator,
        nets.opt_g,
        nets.opt_d,
        scaler,
        amp,
        args.nz,
        augment=DiffAugment(parse_policy(args.augment)),
        label_smoothing=args.label_smoothing,
    )
    grid_noise = fixed_noise(args.samples, args.nz, args.seed).to(device)
    calib_noise = calibration_noise(args.nz, args.seed).to(device)

    calibrated_at: list[int] = []  # the step of the last calibration, if any

    def calibrate() -> None:
        # Standing BatchNorm statistics for eval-mode pictures and for checkpoints that
        # other tools (latent_walk) run in eval mode; training never reads them. Once per
        # step at most: the epoch end logs, draws samples and saves at the same step.
        if calibrated_at != [pos.step]:
            calibrate_batchnorm(nets.generator, calib_noise)
            calibrated_at[:] = [pos.step]

    pos, totals, last_epoch, last_path = _restore(checkpoint, nets, scaler, device)
    schedule = SaveSchedule(args.checkpoint_every_minutes)

    def save() -> Path:
        calibrate()
        save_generator(args.out, nets.generator, args, pos.step)
        return save_progress(
            args,
            pos,
            totals,
            schedule,
            models=nets.models(),
            optimizers=nets.optimizers(),
            scaler=scaler,
            extra={"last_epoch": last_epoch},
        )

    with MetricsWriter(args.out) as metrics:
        if checkpoint is None:
            # The untrained generator's figures: the baseline the epochs should improve on.
            calibrate()
            metrics.log(step=0, epoch=0, split="init", **probe.measure(nets.generator).as_dict())
        if limit_reached(args, pos, stop):
            return report_stopped(stop, last_path, pos)

        while pos.epoch < args.epochs:
            order = epoch_order(len(images), args.seed, pos.epoch).to(device)
            interval = Totals(device)
            epoch_start = interval_start = time.perf_counter()
            run_seen = 0
            while pos.batch < per_epoch:
                batch = order[pos.batch * batch_size : (pos.batch + 1) * batch_size]
                stats = step(to_inputs(images[batch]))
                totals.add(stats, len(batch))
                interval.add(stats, len(batch))
                run_seen += len(batch)
                pos.batch += 1
                pos.step += 1
                if args.log_every and pos.step % args.log_every == 0:
                    rate = interval.seen / max(time.perf_counter() - interval_start, 1e-9)
                    calibrate()
                    _log(metrics, "train_step", pos, interval, nets, probe, rate)
                    # The probe's own time is not training time: restart the clock after it.
                    interval, interval_start = Totals(device), time.perf_counter()
                if limit_reached(args, pos, stop):
                    return report_stopped(stop, save(), pos)
                if schedule.due():
                    last_path = save()

            train_rate = run_seen / max(time.perf_counter() - epoch_start, 1e-9)
            calibrate()
            row = _log(metrics, "train", pos, totals, nets, probe, train_rate)
            numbered = grid_due(pos.epoch + 1, args.samples_every, args.epochs)
            grid = write_samples(nets.generator, grid_noise, args.out, pos.epoch + 1, numbered)
            write_charts(args.out)
            print(
                f"epoch {pos.epoch + 1}/{args.epochs}: loss D {row['loss_d']:.3f} "
                f"G {row['loss_g']:.3f} | D(x) {row['d_real']:.2f} D(G(z)) {row['d_fake']:.2f} | "
                f"fid_proxy {row['fid_proxy']:.3f} fid_conv {row['fid_conv']:.4f} "
                f"diversity {row['diversity']:.2f} | {train_rate:.0f} samples/s, "
                f"{time.perf_counter() - epoch_start:.1f} s | {grid.name}",
                flush=True,
            )
            last_epoch = {"epoch": pos.epoch + 1, **{k: row[k] for k in QUALITY_FIELDS}}
            pos.epoch, pos.batch = pos.epoch + 1, 0
            totals = Totals(device)
            last_path = save()
            if stop and pos.epoch < args.epochs:  # signal arrived during the epoch-end work
                return report_stopped(stop, last_path, pos)

    rows = [row for row in read_metrics(args.out) if row.get("split") == "train"]
    summary = gan_summary(
        rows,
        workload="dcgan",
        diversity_field="diversity",
        quality_field=SUMMARY_QUALITY,
        fake_field="d_fake",
    )
    write_summary(args.out, summary)
    _print_done(last_epoch, last_path)
    return 0


def _log(
    metrics: MetricsWriter,
    split: str,
    pos: Position,
    totals: Totals,
    nets: Nets,
    probe: QualityProbe,
    rate: float,
) -> dict[str, Any]:
    """One metrics row: loss = the generator's loss, accuracy = the discriminator's on real
    and fake, plus both losses, mean D outputs and the quality figures (see quality.py)."""
    means = totals.mean()
    return metrics.log(
        step=pos.step,
        epoch=pos.epoch + 1,
        split=split,
        loss=means["loss_g"],
        accuracy=means["accuracy"],
        lr=float(nets.opt_g.param_groups[0]["lr"]),
        samples_per_s=rate,
        loss_d=means["loss_d"],
        loss_g=means["loss_g"],
        d_real=means["d_real"],
        d_fake=means["d_fake"],
        **probe.measure(nets.generator).as_dict(),
    )


def _restore(
    checkpoint: tuple[Path, dict[str, Any]] | None,
    nets: Nets,
    scaler: torch.amp.GradScaler,
    device: torch.device,
) -> tuple[Position, Totals, dict[str, Any] | None, Path | None]:
    """Position, partial-epoch totals, last epoch summary and path of the checkpoint."""
    if checkpoint is None:
        return Position(), Totals(device), None, None
    path, state = checkpoint
    restore_training_state(state, models=nets.models(), optimizers=nets.optimizers(), scaler=scaler)
    extra = state["extra"]
    pos = Position(epoch=state["epoch"], batch=extra["batch_in_epoch"], step=state["step"])
    print(f"resume: {path} (epoch {pos.epoch + 1}, batch {pos.batch}, step {pos.step})", flush=True)
    return pos, Totals.from_plain(extra["epoch_totals"], device), extra["last_epoch"], path


def _print_done(last_epoch: dict[str, Any] | None, path: Path | None) -> None:
    if last_epoch is None:
        print(f"done: last checkpoint {path}", flush=True)
        return
    print(
        f"done: epoch {last_epoch['epoch']} fid_proxy {last_epoch['fid_proxy']:.3f}, "
        f"fid_conv {last_epoch.get('fid_conv', float('nan')):.4f}, last checkpoint {path}",
        flush=True,
    )
