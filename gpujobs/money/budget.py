"""Money: what is left of the user's budgets, and the cap a job runs under.

A job's cap on a placement is the tightest of its own `budget.max_hours` and `budget.max_usd` and
of what is left of every budget the user set for that provider (`gpujobs budget set`). The cap is
one figure in hours and in dollars (price x nodes x hours), and it is enforced three times: the
driver stops the job a little before it, the node's own shutdown timer ends the node a minute
after it, and the money is held in the store so that no other launch can count on it.

A job whose own worst case (price x max_hours x nodes) does not fit is refused, with what would
fit; a job that gives no hours runs until its money is gone. Standard library only: `gpujobs
status` reads costs on its fast path.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gpujobs.state import Books, BudgetLimit, Hold, LedgerEntry

if TYPE_CHECKING:  # attributes only: the status path never loads pydantic for them
    from gpujobs.models import Offer
    from gpujobs.spec import JobSpec

# The node's shutdown timer fires a minute after the cap (see providers/bootstrap.sh); the ledger
# bounds an unconfirmed node a little later still, as the timer counts from boot.
NODE_TIMER_SLACK_S = 10 * 60


# -- months (UTC, as the clouds bill) -----------------------------------------------------------
def month_of(ts: float) -> str:
    return time.strftime("%Y-%m", time.gmtime(ts))


@functools.cache  # a few hundred days among a ledger's many thousand nodes
def month_of_day(day: int) -> str:
    """The UTC month of a day counted from the epoch (Books.settled's keys)."""
    return month_of(day * 86400)


def month_bounds(month: str) -> tuple[float, float]:
    year, number = (int(part) for part in month.split("-"))
    start = datetime(year, number, 1, tzinfo=UTC).timestamp()
    year, number = (year + 1, 1) if number == 12 else (year, number + 1)
    return start, datetime(year, number, 1, tzinfo=UTC).timestamp()


# -- budgets --------------------------------------------------------------------------------------
def limit_label(limit: BudgetLimit, now: float) -> str:
    who = limit.provider or "all providers"
    return f"{who}, {month_of(now)}" if limit.monthly else f"{who}, all time"


def budget_flags(provider: str | None, monthly: bool) -> str:
    """The `gpujobs budget set/unset` flags that name one budget."""
    return (f" --provider {provider}" if provider else "") + (" --month" if monthly else "")


def raise_command(limit: BudgetLimit, amount: str) -> str:
    """The command that sets this budget to `amount` (a figure, or a placeholder)."""
    return f"gpujobs budget set {amount}{budget_flags(limit.provider, limit.monthly)}"


@dataclass(frozen=True)
class Standing:
    """One budget now: what was spent under it, what running jobs hold, and what is free."""

    limit: BudgetLimit
    label: str
    spent: float
    held: float  # what running jobs may still spend, beyond what they have

    @property
    def free(self) -> float:
        return max(self.limit.limit_usd - self.spent - self.held, 0.0)

    def covers(self, provider: str) -> bool:
        return self.limit.provider in (None, provider)


def standings(books: Books, now: float) -> list[Standing]:
    this_month = month_of(now)
    result = []
    for limit in books.limits:
        spent = spent_under(books, now, limit.provider, this_month if limit.monthly else None)
        held = sum(
            (_unspent(hold, books.held, now) for hold in books.holds
             if limit.provider in (None, hold.provider)),
            0.0,
        )  # fmt: skip
        result.append(Standing(limit, limit_label(limit, now), spent, held))
    return result


def spent_under(books: Books, now: float, provider: str | None, month: str | None) -> float:
    """USD spent by `now` on `provider` (None: on all), in one UTC `month` or (None) ever."""
    window = dict(zip(("since", "until"), month_bounds(month), strict=True)) if month else {}
    settled = sum(
        usd
        for (day, where), usd in books.settled.items()
        if provider in (None, where) and month in (None, month_of_day(day))
    )
    return settled + sum(
        entry.cost(now, **window) for entry in books.open if provider in (None, entry.provider)
    )


def _unspent(hold: Hold, held: list[LedgerEntry], now: float) -> float:
    """What a hold still keeps back: its amount, less what its placement has spent (nodes of
    the job on the hold's provider started since the hold; an earlier, failed placement's
    spend is in the ledger already)."""
    spent = sum(
        entry.cost(now)
        for entry in held
        if entry.job_id == hold.job_id
        and entry.provider == hold.provider
        and entry.started_at >= hold.created_at
    )
    return max(hold.amount_usd - spent, 0.0)


class Allowance:
    """What each provider may still spend, as of one reading of the books."""

    def __init__(self, books: Books, now: float) -> None:
        self.standings = standings(books, now)

    def tightest(self, provider: str) -> Standing | None:
        """The budget covering `provider` with the least free, or None when none covers it."""
        covering = [item for item in self.standings if item.covers(provider)]
        return min(covering, key=lambda item: item.free, default=None)


# -- a job's cap ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobCap:
    """What one job may use on one placement; None: no limit of that kind."""

    hours: float | None
    usd: float | None
    by: str  # what sets it, for messages: "budget.max_hours", "your budget (gcp, all time)"

    def describe(self) -> str:
        parts = []
        if self.usd is not None:
            parts.append(f"${self.usd:.2f}")
        if self.hours is not None:
            parts.append(_hours(self.hours))
        return f"{' / '.join(parts)}, set by {self.by}" if parts else "no cap"


@dataclass(frozen=True)
class Shortfall:
    """A worst case that does not fit in what the job may spend."""

    worst_usd: float | None  # None: the job gives no hours, and nothing is left at all
    hours: float | None
    price_per_hour: float  # the whole job's: every node
    left_usd: float
    of: str  # "budget.max_usd" or "your budget (aws, 2026-11)"
    limit: BudgetLimit | None  # the user's budget that refused it; None: the spec's own

    @property
    def over_by(self) -> float:
        return (self.worst_usd or 0.0) - self.left_usd

    def reason(self) -> str:
        if self.worst_usd is None or self.hours is None:
            return f"nothing is left of {self.of}"
        return (
            f"${self.worst_usd:.2f} worst case ({_hours(self.hours)} x "
            f"${self.price_per_hour:.3f}/h) exceeds {self.of}"
            + (f" (${self.left_usd:.2f} left)" if self.limit is not None else "")
        )


def job_cap(
    *,
    max_hours: float | None,
    max_usd: float | None,
    price_per_hour: float,
    left: Standing | None,
) -> JobCap | Shortfall:
    """The cap for a job whose nodes together cost `price_per_hour`, or why it does not fit."""
    if price_per_hour <= 0:  # free (local, ssh): only time is capped
        return JobCap(max_hours, None, "budget.max_hours")
    money: list[tuple[float, str, BudgetLimit | None]] = []
    if max_usd is not None:
        money.append((max_usd, "budget.max_usd", None))
    if left is not None:
        money.append((left.free, f"your budget ({left.label})", left.limit))
    if max_hours is not None:
        worst = price_per_hour * max_hours
        for amount, of, limit in money:
            if worst > amount + 1e-9:
                return Shortfall(worst, max_hours, price_per_hour, amount, of, limit)
    candidates = [(amount / price_per_hour, of) for amount, of, _ in money]
    if max_hours is not None:
        candidates.append((max_hours, "budget.max_hours"))
    if not candidates:
        return JobCap(None, None, "nothing: no budget applies")
    hours, by = min(candidates, key=lambda item: item[0])
    if hours <= 0:
        amount, of, limit = min(money, key=lambda item: item[0])
        return Shortfall(None, None, price_per_hour, amount, of, limit)
    return JobCap(hours, hours * price_per_hour, by)


def _hours(hours: float) -> str:
    return f"{hours:.2f} h" if hours < 10 else f"{hours:.1f} h"


def fitting_hours(left_usd: float, price_per_hour: float) -> float:
    """The most hours `left_usd` pays for, rounded down to two significant figures."""
    hours = left_usd / price_per_hour
    if not 1e-6 < hours < 1e9:  # nothing useful, or nothing to round
        return 0.0 if hours <= 1e-6 else math.floor(hours)
    scale = 10 ** (1 - math.floor(math.log10(hours)))
    return math.floor(hours * scale) / scale


def spent_by(ledger: list[LedgerEntry], now: float) -> dict[str, float]:
    """USD per job."""
    totals: dict[str, float] = {}
    for entry in ledger:
        totals[entry.job_id] = totals.get(entry.job_id, 0.0) + entry.cost(now)
    return totals


def cap_for(spec: JobSpec, offer: Offer, allowance: Allowance | None) -> JobCap | Shortfall:
    """The job's cap on `offer`, from its own budget and what the user's budgets leave."""
    return job_cap(
        max_hours=spec.budget.max_hours,
        max_usd=spec.budget.max_usd,
        price_per_hour=offer.price_per_hour * spec.nodes,
        left=allowance.tightest(offer.provider) if allowance else None,
    )
