"""Tables, chart and --json shape of `gpujobs budget`, in the family of `gpujobs quota`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.text import Text

from gpujobs.cli.jobs_view import cap_text
from gpujobs.cli.tables import LimitLine, iso_time, limits_json, limits_table, table
from gpujobs.money.budget import month_of, raise_command
from gpujobs.money.report import BudgetReport, LimitRow

if TYPE_CHECKING:
    from gpujobs.api import Controller

_BAR = "▏▎▍▌▋▊▉█"  # eighths: a day's bar is drawn to an eighth of a character
_BAR_WIDTH = 40


def show_budget(controller: Controller, *, as_json: bool, show_all: bool) -> None:
    """`gpujobs budget`: shared by the typer command and the quick path of cli/entry.py."""
    from gpujobs.cli import output

    report = controller.budget_report(show_all=show_all)
    if as_json:
        output.print_json(budget_json(report))
    else:
        output.console(stdout=True).print(budget_view(report))


def budget_lines(report: BudgetReport) -> list[LimitLine]:
    return [_line(row, report.as_of) for row in report.limits]


def _line(row: LimitRow, now: float) -> LimitLine:
    standing, limit = row.standing, row.standing.limit
    note = f"spent ${standing.spent:,.2f}"
    if standing.held:
        note += f", ${standing.held:,.2f} held by running jobs"
    if row.burn_per_hour:
        if row.runs_out_at is None:
            when = "runs out: not this month"
        elif row.runs_out_at <= now:
            when = "it has run out"
        else:
            when = f"runs out {_when(row.runs_out_at, now)}"
        note += f"; burning ${row.burn_per_hour:,.2f}/h, {when}"
    return LimitLine(
        provider=limit.provider or "all",
        scope=month_of(now) if limit.monthly else "all time",
        code="budget-monthly" if limit.monthly else "budget",
        name="",  # the code and the period say it all
        unit="USD",
        limit=limit.limit_usd,
        in_use=standing.spent + standing.held,
        free=standing.free,
        request_at=raise_command(limit, "AMOUNT"),
        note=note,
        extra={
            "spent": standing.spent,
            "held": standing.held,
            "burn_per_hour": row.burn_per_hour,
            "runs_out_at": iso_time(row.runs_out_at),
            "set_at": iso_time(limit.set_at),
            "label": standing.label,
        },
    )


def budget_json(report: BudgetReport) -> dict[str, Any]:
    return limits_json(
        "budget",
        budget_lines(report),
        {},
        report.as_of,
        total_usd=report.total,
        burn_per_hour=report.burn_per_hour,
        jobs=[
            {
                "id": job.job_id,
                "state": job.state.value,
                "providers": job.providers,
                "placement": job.placement,
                "started_at": iso_time(job.started_at),
                "node_hours": job.hours,
                "cost_usd": job.cost,
                "burn_per_hour": job.burn_per_hour,
                "cap_usd": job.cap_usd,
                "cap_hours": job.cap_hours,
            }
            for job in report.jobs
        ],
        jobs_not_shown=report.jobs_not_shown,
        spend=[
            {"month": item.month, "provider": item.provider, "spent_usd": item.spent}
            for item in report.spend
        ],
        daily=[{"day": day, "spent_usd": spent} for day, spent in report.daily],
    )


def budget_view(report: BudgetReport) -> RenderableType:
    parts: list[RenderableType] = []
    lines = budget_lines(report)
    if lines:
        parts.append(limits_table(lines, {}, scope="PERIOD"))
    else:
        parts.append(
            Text("no budget set: gpujobs budget set 300 [--provider aws] [--month]", style="dim")
        )
    if report.jobs:
        parts += [Text(""), _jobs_table(report)]
    if report.spend:
        parts += [Text(""), _spend_table(report)]
    if any(spent for _, spent in report.daily):
        parts += [Text(""), _chart(report.daily)]
    return Group(*parts)


def _jobs_table(report: BudgetReport) -> Any:
    drawn = table(
        "JOB", "STATE", "PLACEMENT", "NODE-HOURS", "BURN", "COST", "CAP",
        right=("NODE-HOURS", "BURN", "COST", "CAP"),
    )  # fmt: skip
    for job in report.jobs:
        drawn.add_row(
            job.job_id,
            job.state.value,
            escape(job.placement),
            f"{job.hours:.2f}",
            f"${job.burn_per_hour:,.2f}/h" if job.burn_per_hour else "-",
            f"${job.cost:,.2f}",
            cap_text(job.cap_usd, job.cap_hours),
        )
    drawn.caption = f"spent in all: ${report.total:,.2f}" + (
        f"; burning ${report.burn_per_hour:,.2f}/h now" if report.burn_per_hour else ""
    )
    if report.jobs_not_shown:
        drawn.caption += f"; {report.jobs_not_shown} older job(s) with --all"
    return drawn


def _spend_table(report: BudgetReport) -> Any:
    drawn = table("MONTH", "PROVIDER", "SPENT", right=("SPENT",))
    for item in report.spend:
        drawn.add_row(item.month, item.provider, f"${item.spent:,.2f}")
    return drawn


def _chart(daily: list[tuple[str, float]]) -> Text:
    """Spend per day as bars, from the first day that cost anything."""
    first = next(index for index, (_, spent) in enumerate(daily) if spent)
    shown = daily[first:]
    top = max(spent for _, spent in shown)
    text = Text("spend per day (UTC)\n", style="bold")
    running = 0.0
    for day, spent in shown:
        running += spent
        eighths = round(spent / top * _BAR_WIDTH * 8) if top else 0
        bar = "█" * (eighths // 8) + (_BAR[eighths % 8 - 1] if eighths % 8 else "")
        text.append(f"{day[5:]} ")
        text.append(f"{bar:<{_BAR_WIDTH}}", style="cyan")
        text.append(f" ${spent:,.2f}  (${running:,.2f} in all)\n")
    return text


def _when(ts: float, now: float) -> str:
    hours = (ts - now) / 3600
    if hours < 1:
        return f"in {hours * 60:.0f} min ({iso_time(ts)})"
    if hours < 48:
        return f"in {hours:.1f} h ({iso_time(ts)})"
    return f"in {hours / 24:.1f} days ({iso_time(ts)})"
