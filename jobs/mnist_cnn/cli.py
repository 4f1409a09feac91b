"""``python -m jobs.mnist_cnn``: flags and entry point. Imports torch only after the flags
are checked, so a bad invocation fails fast."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from jobs.common.cli import (
    JobArgumentParser,
    comma_list,
    fraction,
    make_parser,
    parse_args,
    positive_float,
    positive_int,
    require_dir,
    run_cli,
)
from jobs.common.signals import stop_on_signals

# The techniques of the study (jobs/mnist_cnn/techniques.py); here so flags parse without torch.
LR_SCHEDULES = ("none", "step", "cosine", "onecycle")
INITS = ("kaiming", "xavier", "orthogonal", "torch")
NUM_CLASSES = 10


@comma_list
def class_weights(text: str) -> list[float] | str:
    """`balanced`, or ten comma-separated non-negative weights, one per digit."""
    if text == "balanced":
        return text
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        weights = []
    if len(weights) != NUM_CLASSES or min(weights) < 0 or sum(weights) <= 0:
        raise argparse.ArgumentTypeError(
            f"give {NUM_CLASSES} non-negative numbers (not all 0), one per digit, "
            f"or balanced; got {text!r}"
        )
    return weights


def build_parser() -> JobArgumentParser:
    parser = make_parser(
        "python -m jobs.mnist_cnn",
        "Train a two-layer CNN on MNIST IDX files in --data, or on --synthetic digits.",
    )
    parser.add_argument(
        "--synthetic",
        type=positive_int,
        default=None,
        metavar="N",
        help="train on N font-rendered digits instead of files in --data "
        "(which then need not exist)",
    )
    parser.add_argument(
        "--lr", type=positive_float, default=0.01, help="AdamW learning rate (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        metavar="B",
        help="training batch size (default: %(default)s)",
    )
    parser.add_argument(
        "--val-fraction",
        type=fraction,
        default=0.1,
        metavar="F",
        help="share of the training set held out for validation when there "
        "are no t10k files, or with --synthetic (default: %(default)s)",
    )
    techniques = parser.add_argument_group("training techniques")
    techniques.add_argument(
        "--class-weights",
        type=class_weights,
        default=None,
        metavar="W0,...,W9|balanced",
        help="sample training digits with these per-class weights (WeightedRandomSampler, "
        "with replacement); balanced = 1/class frequency",
    )
    techniques.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default="none",
        help="learning-rate schedule, stepped every batch (default: %(default)s)",
    )
    techniques.add_argument(
        "--step-epochs",
        type=positive_int,
        default=1,
        metavar="E",
        help="with --lr-schedule step: epochs between decays (default: %(default)s)",
    )
    techniques.add_argument(
        "--gamma",
        type=positive_float,
        default=0.1,
        help="with --lr-schedule step: decay factor (default: %(default)s)",
    )
    techniques.add_argument(
        "--init",
        choices=INITS,
        default="kaiming",
        help="weight initialisation; torch = PyTorch's defaults (default: %(default)s)",
    )
    techniques.add_argument(
        "--augment",
        action="store_true",
        help="random shifts (up to 2 px) and rotations (up to 10 degrees) of training batches",
    )
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args: argparse.Namespace = parse_args(build_parser(), argv)
    if args.synthetic is None:
        require_dir(
            args.data,
            "--data",
            "put the MNIST IDX files there or pass --synthetic N for generated digits",
        )
    # SIGTERM handling starts before the slow torch import, so an early stop exits 0 too.
    with stop_on_signals() as stop:
        from jobs.mnist_cnn.train import train  # heavy: imports torch

        return train(args, stop)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)
