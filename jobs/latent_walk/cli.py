"""``python -m jobs.latent_walk``: flags and entry point. The checkpoint is located before
torch is imported, so a missing one fails fast."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from jobs.common.cli import (
    JobArgumentParser,
    make_parser,
    parse_args,
    positive_int,
    run_cli,
)
from jobs.common.errors import UsageError
from jobs.common.signals import stop_on_signals
from jobs.latent_walk.find import newest_checkpoint


def at_least_two(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be an integer >= 2, got {text!r}")
    return value


def build_parser() -> JobArgumentParser:
    # The common flags too: the orchestrator passes --resume, --keep etc. to every workload.
    parser = make_parser(
        "python -m jobs.latent_walk",
        "Walk through the latent space of a dcgan checkpoint (the newest ckpt-*.pt under "
        "--data, or --checkpoint): PNG frames, walk.gif and contact-sheet.png in --out.",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        metavar="PATH",
        help="dcgan checkpoint to use (default: the newest ckpt-*.pt below --data)",
    )
    parser.add_argument(
        "--points",
        type=at_least_two,
        default=8,
        metavar="K",
        help="random latent points visited in order (default: %(default)s)",
    )
    parser.add_argument(
        "--frames-per-step",
        type=positive_int,
        default=12,
        metavar="F",
        help="frames from one point to the next; the walk has (K-1)*F+1 frames "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--frame-ms",
        type=positive_int,
        default=80,
        metavar="MS",
        help="GIF frame duration in milliseconds (default: %(default)s)",
    )
    parser.add_argument(
        "--synthetic-steps",
        type=positive_int,
        default=None,
        metavar="N",
        help="when --data holds no checkpoint, first train a small dcgan on generated shapes "
        "for N steps (in --out/synthetic-dcgan, resumable) and walk through that",
    )
    return parser


def locate_checkpoint(args: argparse.Namespace) -> Path | None:
    """The checkpoint to walk through; None means: train one (--synthetic-steps)."""
    if args.checkpoint is not None:
        if not args.checkpoint.is_file():
            raise UsageError(
                f"--checkpoint {args.checkpoint}: file not found; pass a dcgan ckpt-*.pt"
            )
        return args.checkpoint
    found = newest_checkpoint(args.data)
    if found is None and args.synthetic_steps is None:
        raise UsageError(
            f"--data {args.data}: no dcgan checkpoint (ckpt-*.pt) found; point --data at a "
            "dcgan --out folder, pass --checkpoint PATH, or add --synthetic-steps N to train "
            "a small one first"
        )
    return found


def _main(argv: Sequence[str] | None) -> int:
    args: argparse.Namespace = parse_args(build_parser(), argv)
    checkpoint = locate_checkpoint(args)
    with stop_on_signals() as stop:
        from jobs.latent_walk.walk import run  # heavy: imports torch

        return run(args, checkpoint, stop)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)
