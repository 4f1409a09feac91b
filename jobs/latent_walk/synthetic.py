"""Offline support: train a small DCGAN on generated shapes with jobs.dcgan's own code, so a
template can show a latent walk on a machine with no data and no checkpoint."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from jobs.common.signals import StopFlag
from jobs.dcgan.cli import build_parser as dcgan_parser
from jobs.dcgan.train import train

FOLDER = "synthetic-dcgan"
PICTURES = 512
BATCH = 64
WIDTH = 32  # ngf = ndf: half the paper's 64, for ~4x less work per step on a CPU


def train_small_dcgan(args: argparse.Namespace, stop: StopFlag) -> Path:
    """Train (or resume) in --out/synthetic-dcgan for --synthetic-steps steps; returns that
    folder. Always resumes, so a preempted walk job does not start its training over."""
    folder = args.out / FOLDER
    steps = args.synthetic_steps
    epochs = math.ceil(steps / (PICTURES // BATCH))
    argv = [
        "--data", str(folder / "shapes"),
        "--out", str(folder),
        "--synthetic", str(PICTURES),
        "--batch-size", str(BATCH),
        "--ngf", str(WIDTH),
        "--ndf", str(WIDTH),
        "--epochs", str(epochs),
        "--max-steps", str(steps),
        "--seed", str(args.seed),
        "--device", args.device,
        "--log-every", "0",
        "--resume",
    ]  # fmt: skip
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    train(dcgan_parser().parse_args(argv), stop)
    return folder
