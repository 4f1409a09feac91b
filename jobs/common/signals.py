"""Graceful stop on SIGTERM (spot preemption, cancellation): the handler only sets a flag;
the training loop polls it after each step, saves a checkpoint and exits 0."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType


class StopFlag:
    """Set by a signal (or by code, e.g. a --max-steps limit); read by the training loop."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
        self._event.set()

    def __bool__(self) -> bool:
        return self._event.is_set()


@contextmanager
def stop_on_signals(
    signals: Sequence[signal.Signals] = (signal.SIGTERM,),
) -> Iterator[StopFlag]:
    """Install flag-setting handlers for the block, restoring the previous ones afterwards
    (so an in-process caller such as a test runner keeps its own handlers)."""
    flag = StopFlag()

    def handler(signum: int, _frame: FrameType | None) -> None:
        # Saving here could interrupt a half-done optimizer step; just record the request.
        flag.set(signal.Signals(signum).name)

    # signal.signal only works in the main thread; elsewhere the flag still works via set().
    in_main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, handler) for sig in signals} if in_main else {}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
