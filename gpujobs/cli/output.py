"""How every command speaks: answers on stdout (rich tables or --json), notes and errors on
stderr, and the one mapping from an exception to its line and exit code. Free of the CLI
framework, so the quick `status` path (cli/entry.py) shares it without loading typer."""

from __future__ import annotations

import json
import sqlite3
import sys
from typing import TYPE_CHECKING

from gpujobs.errors import EXIT_JOB_FAILED, GpuJobsError, redact

if TYPE_CHECKING:
    from rich.console import Console


def console(*, stdout: bool = False) -> Console:
    """Read commands print their answer on stdout; a launch draws its progress on stderr."""
    from rich.console import Console

    return Console(stderr=not stdout, highlight=False)


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def info(message: str) -> None:
    sys.stderr.write(message + "\n")


def error(message: str) -> None:
    sys.stderr.write(f"error: {redact(message)}\n")


def report_failure(exc: Exception) -> int:
    """One line on stderr for what went wrong, and the exit code it means: a GpuJobsError's
    own, the store's trouble (damaged, full, held) with its way out, else an internal error."""
    if isinstance(exc, GpuJobsError):
        error(str(exc))
        return exc.exit_code
    if isinstance(exc, sqlite3.DatabaseError):
        from gpujobs.api.maintenance import store_error_message

        error(store_error_message(exc))
        return EXIT_JOB_FAILED
    error(f"internal error: {exc.__class__.__name__}: {exc} (rerun with --debug)")
    return EXIT_JOB_FAILED
