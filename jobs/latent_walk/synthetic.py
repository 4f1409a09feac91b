"""Offline support: train a small DCGAN on generated shapes with jobs.dcgan's own code, so a
template can show a latent walk on a machine with no data and no checkpoint.

The training pictures are made again from the seed whenever they are missing, so by default
they live in a scratch folder on the node rather than in --out (--out comes home, and 512
pictures nobody asked for should not), removed once the training is done. The small DCGAN's
checkpoints do go in --out (a preempted walk resumes its training from them), under the same
--keep as everything else.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import shutil
import tempfile
from pathlib import Path

from jobs.common.images import write_shapes_dataset
from jobs.common.picture_files import scan_pictures
from jobs.common.signals import StopFlag
from jobs.dcgan.cli import build_parser as dcgan_parser
from jobs.dcgan.data import SHAPES
from jobs.dcgan.train import train

FOLDER = "synthetic-dcgan"
PICTURES = 512
BATCH = 64
SIZE = 64
WIDTH = 32  # ngf = ndf: half the paper's 64, for ~4x less work per step on a CPU
SCRATCH = "gpujobs-latent-walk"


def training_pictures_folder(args: argparse.Namespace) -> Path:
    """--out/synthetic-dcgan/shapes with --keep-training-pictures; else a scratch folder of
    this --out and seed in the system's temp folder (two walks on one node never share one)."""
    if args.keep_training_pictures:
        return args.out / FOLDER / "shapes"
    key = hashlib.sha256(f"{args.out.resolve()}\0{args.seed}\0{PICTURES}".encode()).hexdigest()
    return Path(tempfile.gettempdir()) / SCRATCH / key[:16] / "shapes"


def ensure_training_pictures(folder: Path, seed: int) -> Path:
    """The generated pictures in folder, written first when missing. Written into a sibling
    folder and renamed, so a run killed mid-way leaves no half set to train on later."""
    if folder.is_dir() and scan_pictures(folder).pictures:
        return folder
    print(f"latent_walk: writing {PICTURES} generated shape pictures to {folder}", flush=True)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    # The same call (and seed) as dcgan --synthetic makes, so the pictures are the same.
    write_shapes_dataset(partial, PICTURES, size=SIZE, classes=SHAPES, seed=seed)
    shutil.rmtree(folder, ignore_errors=True)  # an empty or foreign leftover
    partial.rename(folder)
    return folder


def train_small_dcgan(args: argparse.Namespace, stop: StopFlag) -> Path:
    """Train (or resume) in --out/synthetic-dcgan for --synthetic-steps steps; returns that
    folder. Always resumes, so a preempted walk job does not start its training over."""
    folder = args.out / FOLDER
    pictures = ensure_training_pictures(training_pictures_folder(args), args.seed)
    steps = args.synthetic_steps
    epochs = math.ceil(steps / (PICTURES // BATCH))
    argv = [
        "--data", str(pictures),
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
        "--keep", str(args.keep),
        "--checkpoint-every-minutes", f"{args.checkpoint_every_minutes:g}",
        "--resume",
    ]  # fmt: skip
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    train(dcgan_parser().parse_args(argv), stop)
    # Done (the training stops itself at --max-steps): the scratch pictures have served. After
    # a SIGTERM they stay for the rerun on this node.
    finished = not stop or stop.reason == "--max-steps"
    if finished and not args.keep_training_pictures:
        shutil.rmtree(pictures.parent, ignore_errors=True)
    return folder
