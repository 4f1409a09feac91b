"""The `gpujobs` console entry. `gpujobs status` and `gpujobs budget` are run many times a day,
and by scripts in a loop: in their plain forms they answer without loading the CLI framework
(typer loads pydantic to read its options, several times the rest of the command's cost).
Anything else, help and malformed options included, goes to the full CLI (cli/app.py), which
runs the same functions."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpujobs.api import Controller


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["status"] and (options := quick_status_options(argv[1:])) is not None:
        sys.exit(_quick(lambda controller: _show_status(controller, *options)))
    if argv[:1] == ["budget"] and (flags := quick_budget_options(argv[1:])) is not None:
        sys.exit(_quick(lambda controller: _show_budget(controller, *flags)))
    from gpujobs.cli.app import main as full_cli

    full_cli()


def quick_status_options(words: list[str]) -> tuple[str | None, bool, bool, int] | None:
    """(job, --json, --all, --page) when `words` are only those, well formed; else None."""
    job: str | None = None
    as_json = show_all = False
    page = 1
    rest = iter(words)
    for word in rest:
        if word == "--json":
            as_json = True
        elif word in ("--all", "-a"):
            show_all = True
        elif word == "--page" or word.startswith("--page="):
            value = word.partition("=")[2] if "=" in word else next(rest, "")
            if not value.isdigit() or int(value) < 1:
                return None  # the full CLI says what is wrong with it
            page = int(value)
        elif word.startswith("-") or job is not None:
            return None
        else:
            job = word
    return job, as_json, show_all, page


def quick_budget_options(words: list[str]) -> tuple[bool, bool] | None:
    """(--json, --all) when `words` are only those; else None (a subcommand, help, a typo)."""
    if not set(words) <= {"--json", "--all", "-a"}:
        return None
    return "--json" in words, bool({"--all", "-a"} & set(words))


def _show_status(
    controller: Controller, job: str | None, as_json: bool, show_all: bool, page: int
) -> None:
    from gpujobs.cli.status_command import show_status

    show_status(controller, job, as_json=as_json, show_all=show_all, page=page)


def _show_budget(controller: Controller, as_json: bool, show_all: bool) -> None:
    from gpujobs.cli.budget_view import show_budget

    show_budget(controller, as_json=as_json, show_all=show_all)


def _quick(command: Callable[[Controller], None]) -> int:
    from gpujobs.api.controller import default_controller
    from gpujobs.cli import output

    try:
        command(default_controller())
    except Exception as exc:
        if os.environ.get("GPUJOBS_DEBUG") == "1":
            raise
        return output.report_failure(exc)
    return 0
