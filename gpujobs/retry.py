"""The one retry policy for provider calls: exponential backoff with jitter and a ceiling.

Transient faults (throttling, 5xx, timeouts) are retried here, at the provider's boundary;
every other error passes through at once. Waits go through a Clock, so tests with a FakeClock
do not sleep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from gpujobs.clock import Clock, SystemClock

T = TypeVar("T")

ATTEMPTS = 6  # about 30 s of backoff in all before a throttled call gives up
FIRST_WAIT_S = 0.5
MAX_WAIT_S = 10.0


def call_with_retry(
    call: Callable[[], T],
    *,
    is_transient: Callable[[BaseException], bool],
    clock: Clock | None = None,
    attempts: int = ATTEMPTS,
) -> T:
    """`call()`, retried while it raises an error `is_transient` accepts; the last error is
    re-raised unchanged, so callers translate it once."""
    sleep = (clock or SystemClock()).sleep
    for attempt in Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(multiplier=FIRST_WAIT_S, max=MAX_WAIT_S),
        retry=retry_if_exception(is_transient),
        sleep=sleep,
        reraise=True,
    ):
        with attempt:
            return call()
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
