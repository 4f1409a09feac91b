"""The `gpujobs` console entry. `gpujobs status` is run many times a day, and by scripts in a
loop: in its plain forms it answers without loading the CLI framework (typer loads pydantic to
read its options, several times the rest of the command's cost). Anything else, help and
malformed options included, goes to the full CLI (cli/app.py), which runs the same function."""

from __future__ import annotations

import os
import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["status"] and (options := quick_status_options(argv[1:])) is not None:
        sys.exit(_quick_status(*options))
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


def _quick_status(job: str | None, as_json: bool, show_all: bool, page: int) -> int:
    from gpujobs.api.controller import default_controller
    from gpujobs.cli import output
    from gpujobs.cli.status_command import show_status

    try:
        show_status(default_controller(), job, as_json=as_json, show_all=show_all, page=page)
    except Exception as exc:
        if os.environ.get("GPUJOBS_DEBUG") == "1":
            raise
        return output.report_failure(exc)
    return 0
