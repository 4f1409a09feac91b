"""The driver's side of a job's cap: how long the job may still run, a warning as it nears the
cap, and the error that stops it there.

budget.py decides what the cap is; this keeps time against it once the job has nodes. The
arithmetic is the same whether the job was launched, restarted or adopted, so it is kept apart
from the launch state machine (lifecycle.py), which only says when the cap was held and from
when it counts.
"""

from __future__ import annotations

from collections.abc import Callable

from gpujobs.clock import Clock
from gpujobs.errors import JobFailedError
from gpujobs.money.budget import JobCap, spent_by
from gpujobs.spec import JobSpec
from gpujobs.state import Store

# In the warning's text: what a notifying sink recognises it by.
CAP_WARNING_MARK = "of the job's cap used"


class BudgetCapReached(JobFailedError):
    pass


class CapWatch:
    def __init__(
        self,
        job_id: str,
        spec: JobSpec,
        store: Store,
        clock: Clock,
        note: Callable[[str], None],
        *,
        margin_s: float,
        warning_at: float,
    ) -> None:
        self.job_id = job_id
        self.spec = spec
        self.store = store
        self.clock = clock
        self.note = note
        self.margin_s = margin_s  # a paid job stops this much before its cap (a tenth at most)
        self.warning_at = warning_at  # the share of the cap's time that brings a warning
        self.held: JobCap | None = None  # set when a placement's money is held
        self.started_at: float | None = None  # monotonic time the cap counts from
        self.warned = False

    @property
    def current(self) -> JobCap:
        return self.held or JobCap(self.spec.budget.max_hours, None, "budget.max_hours")

    def reached(self) -> BudgetCapReached:
        return BudgetCapReached(
            f"stopped at its budget cap ({self.current.describe()}) with ${self._spent():.2f} "
            "spent; the last checkpoint is home"
        )

    def seconds_left(self) -> float | None:
        """Until the driver stops the job: its cap, less the margin a paid one needs to stop."""
        cap_s = self._cap_seconds()
        if cap_s is None or self.started_at is None:
            return None
        margin = min(self.margin_s, cap_s / 10) if self.current.usd else 0.0
        return cap_s - margin - (self.clock.monotonic() - self.started_at)

    def warn_if_near(self) -> None:
        cap_s = self._cap_seconds()
        if self.warned or cap_s is None or self.started_at is None:
            return
        used = (self.clock.monotonic() - self.started_at) / cap_s
        if used < self.warning_at:
            return
        self.warned = True
        cap = self.current
        spent = f"${self._spent():.2f} of ${cap.usd:.2f}" if cap.usd else f"{used:.0%} of the time"
        self.note(
            f"warning: {used:.0%} {CAP_WARNING_MARK} ({spent}, set by {cap.by}); at the cap "
            "it is stopped, its checkpoint brought home, and its nodes torn down"
        )

    def _spent(self) -> float:
        now = self.clock.now()
        return spent_by(self.store.ledger(self.job_id), now).get(self.job_id, 0.0)

    def _cap_seconds(self) -> float | None:
        hours = self.current.hours
        return None if hours is None else hours * 3600
