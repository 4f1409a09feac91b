"""``python -m jobs.mnist_cnn``: flags and entry point. Imports torch only after the flags
are checked, so a bad invocation fails fast."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from jobs.common.cli import (
    JobArgumentParser,
    fraction,
    make_parser,
    parse_args,
    positive_float,
    positive_int,
    require_dir,
    run_cli,
)
from jobs.common.signals import stop_on_signals


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
