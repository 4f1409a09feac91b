"""jobs.common.cli.describe_parser: a workload's argparse parser as plain data, which an
orchestrator checks a job's flags against before it starts anything."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from jobs.common.cli import (
    JobArgumentParser,
    comma_list,
    describe_parser,
    fraction,
    make_parser,
    positive_int,
)


@comma_list
def _sizes(text: str) -> list[int]:
    return [positive_int(part) for part in text.split(",")]


def _unannotated(text):  # a type without hints is read as text
    return text


def test_each_option_is_described_by_kind_default_choices_and_help() -> None:
    parser = JobArgumentParser(prog="demo")
    parser.add_argument("--fast", action="store_true", help="go fast")
    parser.add_argument("--steps", type=positive_int, default=5, help="(default: %(default)s)")
    parser.add_argument("--split", type=fraction, default=0.1)
    parser.add_argument("--count", type=int)
    parser.add_argument("--root", type=Path)
    parser.add_argument("--label")
    parser.add_argument("--size", type=int, choices=(64, 128), default=64)
    parser.add_argument("--sizes", type=_sizes, metavar="A,B")
    parser.add_argument("--raw", type=_unannotated)
    found = {info.name: info for info in describe_parser(parser)}
    assert list(found) == [
        "fast", "steps", "split", "count", "root", "label", "size", "sizes", "raw",
    ]  # fmt: skip
    kinds = {name: info.kind for name, info in found.items()}
    assert kinds == {
        "fast": "flag", "steps": "int", "split": "float", "count": "int", "root": "path",
        "label": "str", "size": "choice", "sizes": "str", "raw": "str",
    }  # fmt: skip
    assert found["steps"].help == "(default: 5)" and found["steps"].default == 5
    assert found["steps"].flag == "--steps" and found["steps"].parse is positive_int
    assert found["size"].choices == (64, 128) and found["size"].parse is int
    assert found["sizes"].comma_list and not found["steps"].comma_list
    assert found["fast"].default is False


def test_dashed_flags_become_underscored_names_and_help_is_left_out() -> None:
    parser = make_parser("demo", "a workload")
    parser.set_defaults(epochs=3)
    found = {info.name: info for info in describe_parser(parser)}
    assert "help" not in found
    assert found["checkpoint_every_minutes"].flag == "--checkpoint-every-minutes"
    assert found["epochs"].default == 3, "set_defaults is what the workload runs with"


@pytest.mark.parametrize(
    "add",
    [
        lambda parser: parser.add_argument("images", nargs="+"),
        lambda parser: parser.add_argument("--tags", nargs="+"),
        lambda parser: parser.add_argument("-q", action="store_true"),
    ],
    ids=["positional", "many-values", "short-only"],
)
def test_options_a_spec_cannot_set_are_refused_by_name(add) -> None:
    parser = argparse.ArgumentParser(prog="demo")
    add(parser)
    with pytest.raises(ValueError, match="demo: cannot describe"):
        describe_parser(parser)


def test_mnist_class_weights_reads_a_comma_list() -> None:
    from jobs.mnist_cnn.cli import build_parser

    found = {info.name: info for info in describe_parser(build_parser())}
    assert found["class_weights"].comma_list
    assert [name for name, info in found.items() if info.comma_list] == ["class_weights"]
