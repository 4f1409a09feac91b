"""``python -m jobs.dcgan``: flags and entry point. Imports torch only after the flags are
checked, so a bad invocation fails fast."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from jobs.common.cli import (
    JobArgumentParser,
    add_picture_args,
    make_parser,
    parse_args,
    positive_float,
    positive_int,
    require_dir,
    run_cli,
)
from jobs.common.signals import StopFlag, stop_on_signals
from jobs.dcgan.policy import DEFAULT_POLICY, parse_policy, policy_text

# Kept here rather than imported from model.py, which would pull in torch.
IMAGE_SIZES = (64, 128)


def beta(text: str) -> float:
    """An Adam beta: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 <= value < 1:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def smoothing(text: str) -> float:
    """A label smoothing share: a number in [0, 0.5)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 <= value < 0.5:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be a number in [0, 0.5), got {text!r}")
    return value


def augment_policy(text: str) -> str:
    """``color,translation,cutout`` (any of them, in any order) or ``none``."""
    try:
        parse_policy(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return policy_text(text)


def build_parser() -> JobArgumentParser:
    parser = make_parser(
        "python -m jobs.dcgan",
        "Train a DCGAN on every picture under --data, or on --synthetic generated shapes.",
    )
    parser.add_argument(
        "--synthetic",
        type=positive_int,
        default=None,
        metavar="N",
        help="when --data holds no pictures, first write N generated shape pictures into it "
        "(created if missing)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        choices=IMAGE_SIZES,
        default=64,
        help="training picture size in px; 128 adds one block to each net (default: %(default)s)",
    )
    parser.add_argument(
        "--nz", type=positive_int, default=100, help="noise vector length (default: %(default)s)"
    )
    parser.add_argument(
        "--ngf", type=positive_int, default=64, help="generator base width (default: %(default)s)"
    )
    parser.add_argument(
        "--ndf",
        type=positive_int,
        default=64,
        help="discriminator base width (default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        metavar="B",
        help="real pictures per step (default: %(default)s)",
    )
    parser.add_argument(
        "--lr",
        type=positive_float,
        default=2e-4,
        help="Adam lr of the generator (default: %(default)s)",
    )
    parser.add_argument(
        "--lr-d",
        type=positive_float,
        default=4e-4,
        help="Adam lr of the discriminator: twice the generator's (two time-scale update "
        "rule), since spectral norm and augmentation slow it down (default: %(default)s)",
    )
    parser.add_argument(
        "--beta1", type=beta, default=0.5, help="Adam beta1 of both nets (default: %(default)s)"
    )
    parser.add_argument(
        "--augment",
        type=augment_policy,
        default=DEFAULT_POLICY,
        metavar="POLICY",
        help="DiffAugment: random changes applied to real and generated pictures alike before "
        "the discriminator (differentiable, so the generator does not learn them): any of "
        "color, translation, cutout, comma-separated, or none (default: %(default)s)",
    )
    parser.add_argument(
        "--no-spectral-norm",
        action="store_true",
        help="the paper's discriminator with BatchNorm, instead of spectral norm on every conv",
    )
    parser.add_argument(
        "--label-smoothing",
        type=smoothing,
        default=0.1,
        metavar="S",
        help="one-sided: the discriminator's target for real pictures is 1 - S "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--samples",
        type=positive_int,
        default=64,
        metavar="N",
        help="pictures in each sample grid, drawn from fixed seeded noise (default: %(default)s)",
    )
    parser.add_argument(
        "--samples-every",
        type=positive_int,
        default=10,
        metavar="E",
        help="write samples-epoch-NNN.png after epoch 1, every E-th epoch and the last "
        "(samples-latest.png and progress.png follow every epoch) (default: %(default)s)",
    )
    add_picture_args(parser)
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args: argparse.Namespace = parse_args(build_parser(), argv)
    if args.synthetic is None:
        require_dir(
            args.data,
            "--data",
            "put pictures there (any size, any subfolders) or pass --synthetic N",
        )
    # SIGTERM handling starts before the slow torch import, so an early stop exits 0 too.
    with stop_on_signals() as stop:
        return run_training(args, stop)


def run_training(args: argparse.Namespace, stop: StopFlag) -> int:
    from jobs.dcgan.train import train  # heavy: imports torch

    return train(args, stop)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)
