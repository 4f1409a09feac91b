"""The budget report: `gpujobs budget`.

What each budget has left and when, at the rate the running nodes burn, it runs out; what was
spent per job, per provider and month, and per day. Every figure is read from the ledger, whose
prices were frozen when each node was provisioned.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from gpujobs.money.budget import Standing, month_bounds, month_of, month_of_day, standings
from gpujobs.state import Books, JobRecord, JobState, LedgerEntry, Store

RECENT_JOBS = 20
CHART_DAYS = 30


@dataclass(frozen=True)
class LimitRow:
    standing: Standing
    burn_per_hour: float  # what its running nodes cost together
    runs_out_at: float | None  # when, at that rate, the spending reaches the limit

    @property
    def remaining(self) -> float:
        return max(self.standing.limit.limit_usd - self.standing.spent, 0.0)


@dataclass(frozen=True)
class JobSpend:
    job_id: str
    state: JobState
    providers: str
    placement: str
    started_at: float
    hours: float  # node-hours
    cost: float
    burn_per_hour: float  # while running
    cap_usd: float | None
    cap_hours: float | None


@dataclass(frozen=True)
class MonthSpend:
    month: str
    provider: str
    spent: float


@dataclass(frozen=True)
class BudgetReport:
    as_of: float
    limits: list[LimitRow]
    jobs: list[JobSpend]
    jobs_not_shown: int
    spend: list[MonthSpend]  # newest month first
    daily: list[tuple[str, float]]  # the last CHART_DAYS UTC days, oldest first
    burn_per_hour: float
    total: float


def budget_report(store: Store, now: float, *, show_all: bool = False) -> BudgetReport:
    """Aggregates come from SQLite (Books.settled) plus the few nodes still open; rows are
    read only for the jobs shown and for the chart's days."""
    books = store.books()
    limits = []
    for standing in standings(books, now):
        covered = [entry for entry in books.open if standing.covers(entry.provider)]
        limits.append(_limit_row(standing, covered, now))
    records, spending = store.jobs_that_spent(limit=None if show_all else RECENT_JOBS)
    if show_all:
        ledger = store.ledger()
    else:  # store.ledger() with no job named is every job's
        ledger = store.ledger(*(record.id for record in records)) if records else []
    shown = _jobs(records, ledger, now)
    first_day = _chart_start(now)
    return BudgetReport(
        as_of=now,
        limits=limits,
        jobs=shown,
        jobs_not_shown=spending - len(shown),
        spend=_by_month(books, now),
        daily=_daily(books, first_day, now),
        burn_per_hour=sum(entry.price_per_hour for entry in books.open if entry.live(now)),
        total=sum(books.settled.values()) + sum(entry.cost(now) for entry in books.open),
    )


def _limit_row(standing: Standing, covered: list[LedgerEntry], now: float) -> LimitRow:
    burn = sum(entry.price_per_hour for entry in covered if entry.live(now))
    left = standing.limit.limit_usd - standing.spent
    if burn <= 0:
        return LimitRow(standing, 0.0, None)
    runs_out = now + max(left, 0.0) / burn * 3600
    if standing.limit.monthly and runs_out >= month_bounds(month_of(now))[1]:
        runs_out = None  # the month ends first, and the budget starts again
    return LimitRow(standing, burn, runs_out)


def _jobs(records: list[JobRecord], ledger: list[LedgerEntry], now: float) -> list[JobSpend]:
    wanted = {record.id for record in records}
    entries: dict[str, list[LedgerEntry]] = {}
    for entry in ledger:
        if entry.job_id in wanted:
            entries.setdefault(entry.job_id, []).append(entry)
    rows = []
    for record in records:
        own = entries.get(record.id)
        if not own:
            continue  # it never got a node: it cost nothing
        rows.append(
            JobSpend(
                job_id=record.id,
                state=record.state,
                providers=", ".join(sorted({entry.provider for entry in own})),
                placement=record.placement or "-",
                started_at=min(entry.started_at for entry in own),
                hours=sum(entry.end(now) - entry.started_at for entry in own) / 3600,
                cost=sum(entry.cost(now) for entry in own),
                burn_per_hour=sum(entry.price_per_hour for entry in own if entry.live(now)),
                cap_usd=record.cap_usd,
                cap_hours=record.cap_hours,
            )
        )
    return rows  # records are newest first


def _by_month(books: Books, now: float) -> list[MonthSpend]:
    spent: dict[tuple[str, str], float] = {}
    for (day, provider), usd in books.settled.items():
        key = (month_of_day(day), provider)
        spent[key] = spent.get(key, 0.0) + usd
    bounds = functools.cache(month_bounds)  # a few months among the open nodes
    for entry in books.open:
        month = month_of(entry.started_at)
        while True:  # a node may run across the turn of a month
            since, until = bounds(month)
            key = (month, entry.provider)
            spent[key] = spent.get(key, 0.0) + entry.cost(now, since=since, until=until)
            if entry.end(now) <= until:
                break
            month = month_of(until)
    by_provider = sorted(spent.items(), key=lambda item: item[0][1])
    newest_first = sorted(by_provider, key=lambda item: item[0][0], reverse=True)  # stable
    return [MonthSpend(month, provider, amount) for (month, provider), amount in newest_first]


_DAY = 86400.0


def _chart_start(now: float) -> float:
    """The first UTC day of the spending chart."""
    return now - now % _DAY - (CHART_DAYS - 1) * _DAY


def _daily(books: Books, first: float, now: float) -> list[tuple[str, float]]:
    """Per UTC day from `first`: what SQLite summed for that day, plus the share of each open
    node billed in it."""
    first_day = int(first // _DAY)
    totals = [0.0] * CHART_DAYS
    for (day, _), usd in books.settled.items():
        if 0 <= day - first_day < CHART_DAYS:
            totals[day - first_day] += usd
    for entry in books.open:
        end = entry.end(now)
        if end <= first:
            continue  # billed before the chart's days: with years of jobs, most of them
        # Only the days this node was billed in (most nodes: one or two), not every day.
        index = int((max(entry.started_at, first) - first) // _DAY)
        while index < CHART_DAYS and first + index * _DAY < end:
            since = first + index * _DAY
            totals[index] += entry.cost(now, since=since, until=since + _DAY)
            index += 1
    return [
        (time.strftime("%Y-%m-%d", time.gmtime(first + index * _DAY)), total)
        for index, total in enumerate(totals)
    ]
