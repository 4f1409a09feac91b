"""The driver's two lines to the outside: what it reports (an EventSink, drawn only by the CLI)
and what stops it (a CancelToken, set from a signal handler or another thread).

Separate from the state machine (lifecycle.py) so that the parts it delegates to (recovery.py,
group_sessions.py) can report and be cancelled without importing the machine itself.
"""

from __future__ import annotations

import threading
from typing import Protocol

from gpujobs.errors import Cancelled
from gpujobs.state import JobState


class EventSink(Protocol):
    """Where the lifecycle reports what happens; only the CLI draws it.

    A driver calls its sink from one thread at a time: the notes and progress of a group's
    nodes, set up in threads of their own, are passed on under a lock (lifecycle._Drive), so
    a sink needs no lock of its own.
    """

    def state(self, job_id: str, state: JobState, message: str) -> None: ...

    def log(self, data: bytes) -> None: ...

    def note(self, message: str) -> None: ...

    def progress(self, label: str, done: int, total: int) -> None: ...


class NullSink:
    def state(self, job_id: str, state: JobState, message: str) -> None:
        return None

    def log(self, data: bytes) -> None:
        return None

    def note(self, message: str) -> None:
        return None

    def progress(self, label: str, done: int, total: int) -> None:
        return None


class PassingSink:
    """Passes everything to `inner`: the base of sinks that add to some events (forwarding ports
    once the job runs, notifications), which override only those."""

    def __init__(self, inner: EventSink) -> None:
        self.inner = inner

    def state(self, job_id: str, state: JobState, message: str) -> None:
        self.inner.state(job_id, state, message)

    def log(self, data: bytes) -> None:
        self.inner.log(data)

    def note(self, message: str) -> None:
        self.inner.note(message)

    def progress(self, label: str, done: int, total: int) -> None:
        self.inner.progress(label, done, total)


class CancelToken:
    """Set from a signal handler or another thread; the driver stops at its next check."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""
        self.forced = False

    def cancel(self, reason: str = "cancelled by the user") -> None:
        if self._event.is_set():
            self.forced = True  # a second request: stop waiting for the graceful checkpoint
            return
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled(self.reason)
