"""``python -m jobs.text_classifier`` (train) and ``python -m jobs.text_classifier predict``:
flags and entry points. Imports torch only after the flags are checked, so a bad invocation
fails fast."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from jobs.common.cli import (
    DEVICE_CHOICES,
    JobArgumentParser,
    fraction,
    make_parser,
    parse_args,
    positive_float,
    positive_int,
    require_dir,
    run_cli,
)
from jobs.common.errors import UsageError
from jobs.common.signals import stop_on_signals
from jobs.text_classifier.text import DEFAULT_TEXT_COLUMNS

PROG = "python -m jobs.text_classifier"
DEFAULT_EMBED_DIM = 100


def build_parser() -> JobArgumentParser:
    parser = make_parser(
        PROG,
        "Train a fake-news classifier (LSTM or EmbeddingBag, optional GloVe) on the CSV "
        "files in --data (a label column, or one CSV per class such as Kaggle's Fake.csv "
        "and True.csv), or on --synthetic articles. "
        f"Predict with: {PROG} predict --help",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--train-file",
        metavar="NAME",
        default=None,
        help="the one training CSV, relative to --data (default: train.csv, else every "
        "*.csv there other than val.csv/test.csv: concatenated when they have the label "
        "column, one CSV per class when none has it)",
    )
    data.add_argument(
        "--label-column",
        type=_column_name,
        default=None,
        metavar="NAME",
        help="the column holding each row's class, e.g. label, class or is_fake; integers "
        "(0/1) keep their order, other values are sorted (FAKE, REAL). Default: label, "
        "and a folder of CSVs none of which has it is read as one CSV per class named "
        "after the file, lowercased and sorted (Fake.csv -> fake, True.csv -> true)",
    )
    data.add_argument(
        "--text-columns",
        type=_column_names,
        default=",".join(DEFAULT_TEXT_COLUMNS),
        metavar="NAMES",
        help="comma-separated columns joined, in this order, into each article; each must "
        "exist, and a row with no words in any of them is skipped (default: %(default)s)",
    )
    data.add_argument(
        "--val-fraction",
        type=fraction,
        default=0.2,
        metavar="F",
        help="share held out for validation when there is no val.csv/test.csv "
        "beside the training file (default: %(default)s)",
    )
    data.add_argument(
        "--synthetic",
        type=positive_int,
        default=None,
        metavar="N",
        help="when --data holds no CSV, write N generated articles and a small "
        "GloVe file there (used as --glove unless given) and train on them",
    )
    data.add_argument(
        "--max-len",
        type=positive_int,
        default=256,
        metavar="L",
        help="tokens kept per article, title first (default: %(default)s)",
    )
    data.add_argument(
        "--min-freq",
        type=positive_int,
        default=2,
        metavar="F",
        help="vocabulary: words seen at least F times in the training split (default: %(default)s)",
    )
    data.add_argument(
        "--max-vocab",
        type=positive_int,
        default=50_000,
        metavar="V",
        help="vocabulary size cap incl. <pad> and <unk> (default: %(default)s)",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        choices=("lstm", "bag"),
        default="lstm",
        help="lstm: (bi)LSTM + pooling; bag: mean EmbeddingBag (default: %(default)s)",
    )
    model.add_argument(
        "--glove",
        type=Path,
        default=None,
        metavar="PATH",
        help="GloVe text file (word v1 ... vd) to initialise the embeddings; its dimension is used",
    )
    model.add_argument(
        "--embed-dim",
        type=positive_int,
        default=None,
        metavar="D",
        help=f"embedding size without --glove (default: {DEFAULT_EMBED_DIM})",
    )
    model.add_argument(
        "--freeze-embeddings", action="store_true", help="do not train the embeddings"
    )
    model.add_argument(
        "--hidden",
        type=positive_int,
        default=128,
        metavar="H",
        help="LSTM hidden size per direction (default: %(default)s)",
    )
    model.add_argument(
        "--layers",
        type=positive_int,
        default=1,
        metavar="N",
        help="LSTM layers (default: %(default)s)",
    )
    model.add_argument(
        "--unidirectional", action="store_true", help="one LSTM direction instead of two"
    )
    model.add_argument(
        "--pool",
        choices=("max", "mean", "last"),
        default="max",
        help="LSTM outputs -> features: max or mean over time, or the last "
        "hidden state (default: %(default)s)",
    )
    model.add_argument(
        "--dropout",
        type=_dropout,
        default=0.2,
        metavar="P",
        help="dropout on embeddings and features (default: %(default)s)",
    )
    optim = parser.add_argument_group("optimisation")
    optim.add_argument(
        "--lr", type=positive_float, default=1e-3, help="AdamW learning rate (default: %(default)s)"
    )
    optim.add_argument(
        "--weight-decay",
        type=_non_negative_float,
        default=0.01,
        metavar="W",
        help="AdamW weight decay (default: %(default)s)",
    )
    optim.add_argument(
        "--batch-size",
        type=positive_int,
        default=64,
        metavar="B",
        help="training batch size (default: %(default)s)",
    )
    optim.add_argument(
        "--clip",
        type=positive_float,
        default=1.0,
        metavar="NORM",
        help="gradient norm clipping (default: %(default)s)",
    )
    return parser


def build_predict_parser() -> JobArgumentParser:
    parser = JobArgumentParser(
        prog=f"{PROG} predict",
        description="Classify articles with a trained checkpoint. Prints one line per "
        "article: LABEL<TAB>CONFIDENCE (the softmax probability of LABEL), in input order.",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        metavar="PATH",
        help="a ckpt-*.pt file, or a training --out directory (its newest)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="the article text")
    source.add_argument(
        "--csv",
        type=Path,
        metavar="FILE",
        help="a CSV with the columns the model was trained on (--text-columns; default "
        "title,text, where title may be absent); other columns are ignored",
    )
    parser.add_argument(
        "--title", default="", help="the headline, with --text (the article is title then text)"
    )
    parser.add_argument(
        "--device", choices=DEVICE_CHOICES, default="cpu", help="(default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=256,
        metavar="B",
        help="articles per forward pass with --csv (default: %(default)s)",
    )
    return parser


def text_columns(args: argparse.Namespace) -> tuple[str, ...]:
    """--text-columns as names; the flag is kept as one string so that checkpoints store it,
    and resume errors print it, as the user typed it."""
    return tuple(args.text_columns.split(","))


def _column_name(text: str) -> str:
    """CSV headers are matched case-insensitively, so names are compared lowercased."""
    name = text.strip().lower()
    if not name:
        raise argparse.ArgumentTypeError("must name a column, got an empty name")
    if "," in name:
        raise argparse.ArgumentTypeError(f"must name one column, got {text!r}")
    return name


def _column_names(text: str) -> str:
    names = [_column_name(part) for part in text.split(",")]
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"names a column twice: {text!r}")
    return ",".join(names)


def _dropout(text: str) -> float:
    value = _non_negative_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    if text.strip() in ("0", "0.0"):
        return 0.0
    return positive_float(text)


def _train_main(argv: Sequence[str] | None) -> int:
    args: argparse.Namespace = parse_args(build_parser(), argv)
    if args.synthetic is None:
        require_dir(args.data, "--data", "put the CSV files there or pass --synthetic N")
    if args.glove is not None and not args.glove.is_file():
        raise UsageError(f"--glove {args.glove}: file not found; pass a GloVe .txt file")
    if args.glove is not None and args.embed_dim is not None:
        raise UsageError("--embed-dim: the GloVe file sets the dimension; drop --embed-dim")
    # SIGTERM handling starts before the slow torch import, so an early stop exits 0 too.
    with stop_on_signals() as stop:
        from jobs.text_classifier.train import train  # heavy: imports torch

        return train(args, stop)


def _predict_main(argv: Sequence[str]) -> int:
    args = build_predict_parser().parse_args(argv)
    if not args.checkpoint.exists():
        raise UsageError(f"--checkpoint {args.checkpoint}: not found; pass a ckpt-*.pt file")
    if args.csv is not None and not args.csv.is_file():
        raise UsageError(f"--csv {args.csv}: file not found")
    from jobs.text_classifier.predict import predict  # heavy: imports torch

    return predict(args)


def _main(argv: Sequence[str] | None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["predict"]:
        return _predict_main(arguments[1:])
    return _train_main(arguments)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)
