"""Command-line arguments every workload takes, and the wrapper that turns user errors into
one ``error: ...`` line on stderr with exit code 2.

This module deliberately does not import torch, so that a bad flag is reported in
milliseconds rather than after the multi-second torch import.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NoReturn, TypeVar

from jobs.common.errors import JobError, UsageError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
T = TypeVar("T")


class JobArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line: orchestrators capture stderr and
    show its last line, so the usage banner argparse prints by default would hide the cause."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (run with --help for usage)\n")


def positive_int(text: str) -> int:
    return _bounded_int(text, minimum=1)


def non_negative_int(text: str) -> int:
    return _bounded_int(text, minimum=0)


def positive_float(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A float strictly between 0 and 1, e.g. a validation split."""
    value = _float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text!r}")
    return value


def share(text: str) -> float:
    """A float from 0 to 1 inclusive, e.g. a tolerated share of bad files."""
    value = _float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}")
    return value


def _bounded_int(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):  # NaN or infinite
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def make_parser(prog: str, description: str) -> JobArgumentParser:
    """A parser holding the common arguments; the workload adds its own on top."""
    parser = JobArgumentParser(prog=prog, description=description)
    add_common_args(parser)
    return parser


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", type=Path, required=True, metavar="DIR", help="directory holding the input data"
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="directory for checkpoints (ckpt-*.pt) and metrics.jsonl",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=1,
        metavar="N",
        help="number of epochs to train (default: %(default)s)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in --out; starts fresh when there is none",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        metavar="S",
        help="seed for model init and data order (default: %(default)s)",
    )
    parser.add_argument(
        "--device",
        choices=DEVICE_CHOICES,
        default="auto",
        help="auto = cuda when available, else cpu (default: %(default)s)",
    )
    parser.add_argument(
        "--amp",
        action="store_true",
        help="mixed precision on cuda (bf16 where supported, else fp16); ignored on cpu",
    )
    parser.add_argument(
        "--checkpoint-every-minutes",
        type=positive_float,
        default=10.0,
        metavar="M",
        help="also save a checkpoint every M minutes; one is always saved at "
        "the end of each epoch and on SIGTERM (default: %(default)s)",
    )
    parser.add_argument(
        "--keep",
        type=positive_int,
        default=3,
        metavar="K",
        help="keep only the newest K checkpoints (default: %(default)s)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="T",
        help="torch CPU threads (default: torch's own choice)",
    )
    parser.add_argument(
        "--max-steps",
        type=positive_int,
        default=None,
        metavar="N",
        help="stop after global step N, saving a checkpoint as on SIGTERM "
        "(smoke tests, simulated preemption)",
    )
    parser.add_argument(
        "--log-every",
        type=non_negative_int,
        default=100,
        metavar="N",
        help="write a train_step row to metrics.jsonl every N steps; "
        "0 = only per epoch (default: %(default)s)",
    )


# -- the parser as data, for orchestrators that check a job's flags before starting it ----------

ArgKind = Literal["flag", "int", "float", "str", "path", "choice"]
_KIND_OF_TYPE: dict[object, ArgKind] = {int: "int", float: "float", str: "str", Path: "path"}
# `type` callables that read a comma-separated list; see comma_list.
_COMMA_LIST_TYPES: set[Callable[[str], object]] = set()


def comma_list(parse: Callable[[str], T]) -> Callable[[str], T]:
    """Mark an argparse `type` that reads a comma-separated list (``0.1,0,1``): an
    orchestrator may then give the flag a list, which it joins with commas."""
    _COMMA_LIST_TYPES.add(parse)
    return parse


@dataclass(frozen=True)
class ArgInfo:
    """One option of a workload's parser as plain data: what a spec may set and how it is
    checked. `parse` is the option's argparse `type` (None: the text as it is); the
    checker calls it so the workload's own rules (positive_int, fraction, ...) apply."""

    name: str  # as a spec key: image_size for --image-size
    flag: str
    kind: ArgKind
    default: object
    help: str
    choices: tuple[object, ...] = ()
    comma_list: bool = False
    parse: Callable[[str], object] | None = field(default=None, repr=False, compare=False)


def describe_parser(parser: argparse.ArgumentParser) -> list[ArgInfo]:
    """Every option of `parser` but --help, in the parser's order.

    Only switches and one-value options are described; anything else (a positional, nargs='+',
    append) raises ValueError, so a workload that adds one finds out in its tests rather than
    having a spec set it wrongly.
    """
    described = []
    for action in parser._actions:  # argparse keeps no public list of its actions
        if isinstance(action, argparse._HelpAction):
            continue
        long_flags = [flag for flag in action.option_strings if flag.startswith("--")]
        if not long_flags or action.nargs not in (None, 0):
            raise ValueError(
                f"{parser.prog}: cannot describe {action.option_strings or action.dest} "
                f"(nargs={action.nargs!r}); give it one --long-flag taking one value or none"
            )
        flag = long_flags[0]
        described.append(
            ArgInfo(
                name=flag[2:].replace("-", "_"),
                flag=flag,
                kind=_kind(action),
                default=action.default,
                help=_help_text(parser, action),
                choices=tuple(action.choices) if action.choices is not None else (),
                comma_list=action.type in _COMMA_LIST_TYPES,
                parse=action.type,
            )
        )
    return described


def _kind(action: argparse.Action) -> ArgKind:
    if action.nargs == 0:
        return "flag"
    if action.choices is not None:
        return "choice"
    parse = action.type
    if parse is None or parse in _KIND_OF_TYPE:
        return _KIND_OF_TYPE.get(parse, "str")
    # A checking function (positive_int, fraction, ...): its return annotation says the kind.
    try:
        returns = typing.get_type_hints(parse).get("return")
    except Exception:  # an unannotated or unresolvable callable is read as text
        returns = None
    return _KIND_OF_TYPE.get(returns, "str")


def _help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help as --help prints it, %(default)s filled in."""
    text = action.help or ""
    if "%" not in text:
        return text
    try:
        return text % {**vars(action), "prog": parser.prog}
    except (KeyError, TypeError, ValueError):
        return text


def add_picture_args(parser: argparse.ArgumentParser) -> None:
    """Flags of the workloads that read folders of pictures."""
    parser.add_argument(
        "--max-bad-fraction",
        type=share,
        default=0.5,
        metavar="F",
        help="unreadable picture files (empty, truncated, not an image, too large) are skipped "
        "and named in one warning, as are hidden files (.DS_Store, ._*, __MACOSX/); fail "
        "when more than this share of the picture files is unreadable; 0 = fail on any "
        "(default: %(default)s)",
    )


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out}: exists and is not a directory; pass a directory path")
    return args


def require_dir(path: Path, flag: str, hint: str) -> None:
    """Raise a one-line UsageError when a directory flag points nowhere."""
    if not path.is_dir():
        raise UsageError(f"{flag} {path}: directory not found; {hint}")


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a workload's main, reporting user errors as one line and exit code 2.

    Argparse's own exits (bad flag, --help) become return values too, so an in-process
    caller always gets an int. Anything else is a bug and keeps its traceback on purpose.
    """
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C); resume with --resume", file=sys.stderr, flush=True)
        return 130
