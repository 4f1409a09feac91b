"""How a launch is shown: a ConsoleSink for the foreground (state and notes on stderr with rich,
the job's log on stdout), a PlainSink for a detached driver's own log file."""

from __future__ import annotations

import sys
import time
from typing import IO

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TransferSpeedColumn

from gpujobs.cli.jobs_view import STATE_STYLE
from gpujobs.errors import redact
from gpujobs.state import JobState


class ConsoleSink:
    """The foreground launch: state changes and notes on stderr, the job's log on stdout."""

    def __init__(self, console: Console, out: IO[bytes] | None = None) -> None:
        self.console = console
        self.out = out if out is not None else sys.stdout.buffer
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def state(self, job_id: str, state: JobState, message: str) -> None:
        self._end_progress()
        style = STATE_STYLE.get(state, "bold")
        first_line = redact(message).splitlines()[0] if message else ""
        detail = f" {escape(first_line)}" if first_line else ""
        self.console.print(f"[dim]{_clock()}[/] [{style}]{state.value}[/]{detail}")

    def log(self, data: bytes) -> None:
        self.out.write(data)
        self.out.flush()

    def note(self, message: str) -> None:
        self.console.print(f"[dim]{_clock()}   {escape(redact(message))}[/]")

    def progress(self, label: str, done: int, total: int) -> None:
        if self._progress is None:
            self._progress = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
        if label not in self._tasks:
            self._tasks[label] = self._progress.add_task(label, total=total)
        self._progress.update(self._tasks[label], completed=done, total=total)

    def _end_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()


class PlainSink:
    """A detached driver: plain lines into its own log file (the job's log has its own file)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def state(self, job_id: str, state: JobState, message: str) -> None:
        self._line(f"{state.value} {message}".rstrip())

    def log(self, data: bytes) -> None:
        return None

    def note(self, message: str) -> None:
        self._line(f"  {message}")

    def progress(self, label: str, done: int, total: int) -> None:
        return None

    def _line(self, text: str) -> None:
        self.stream.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {redact(text)}\n")
        self.stream.flush()


def _clock() -> str:
    return time.strftime("%H:%M:%S")
