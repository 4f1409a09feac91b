"""What `gpujobs gc` shows: the orphans and the driver-lost jobs' resources as tables, problems
and outcomes as one line each, and the --json shape:

    {"orphans": [item], "driver_lost": [item + advice], "problems": {provider: why},
     "deleted": [item], "failed": [item + error]}          # deleted and failed only with --yes

where an item is {provider, kind, id, region, job_id, job_state, age_s, cost_usd,
price_per_hour, created_at}.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from gpujobs.cli.tables import table
from gpujobs.placement.gc import UNKNOWN_JOB, GcItem, GcReport, SweepResult

UNKNOWN_NOTE = (
    "state unknown: this machine's store has no such job; one launched from another machine "
    "or GPUJOBS_HOME may be running there, so it is kept unless you add --include-unknown"
)


def gc_json(report: GcReport, results: list[SweepResult] | None) -> dict[str, Any]:
    """The --json answer; `results` None: nothing was asked to be deleted."""
    data: dict[str, Any] = {
        "orphans": [item_json(item) for item in report.orphans],
        "driver_lost": [
            {**item_json(item), "advice": down_advice(item)} for item in report.driver_lost
        ],
        "problems": dict(report.problems),
    }
    if results is not None:
        data["deleted"] = [item_json(result.item) for result in results if result.deleted]
        data["failed"] = [
            {**item_json(result.item), "error": result.error}
            for result in results
            if not result.deleted
        ]
    return data


def item_json(item: GcItem) -> dict[str, Any]:
    resource = item.resource
    return {
        "provider": resource.provider,
        "kind": resource.kind,
        "id": resource.resource_id,
        "region": resource.region,
        "job_id": resource.job_id,
        "job_state": item.job_state,
        "age_s": None if item.age_s is None else round(item.age_s, 1),
        "cost_usd": round(item.cost_usd, 4),
        "price_per_hour": resource.price_per_hour,
        "created_at": resource.created_at,
    }


def down_advice(item: GcItem) -> str:
    return f"driver lost: run gpujobs down {item.resource.job_id}"


def plan_view(report: GcReport) -> RenderableType:
    parts: list[RenderableType] = []
    if report.orphans:
        total = sum(item.cost_usd for item in report.orphans)
        title = f"{len(report.orphans)} orphaned resource(s), ${total:,.2f} so far"
        parts.append(_items_table(report.orphans, title))
        if any(item.job_state == UNKNOWN_JOB for item in report.orphans):
            parts.append(Text(UNKNOWN_NOTE))
    if report.driver_lost:
        jobs = sorted({item.resource.job_id for item in report.driver_lost})
        title = "driver lost, not deleted: " + "; ".join(f"run gpujobs down {j}" for j in jobs)
        if parts:
            parts.append(Text(""))
        parts.append(_items_table(report.driver_lost, title))
    if not parts:
        parts.append(Text("nothing to collect: no orphaned gpujobs resources"))
    if report.live:
        parts.append(Text(f"{len(report.live)} resource(s) of running jobs left alone"))
    return Group(*parts)


def problem_lines(report: GcReport) -> list[str]:
    return [f"{name}: {why}" for name, why in sorted(report.problems.items())]


def sweep_lines(results: list[SweepResult]) -> list[str]:
    lines = []
    for result in results:
        resource = result.item.resource
        what = f"{resource.provider} {resource.kind} {resource.resource_id} ({resource.region})"
        lines.append(f"deleted {what}" if result.deleted else f"failed: {what}: {result.error}")
    return lines


def _items_table(items: list[GcItem], title: str) -> Table:
    drawn = table(
        "PROVIDER", "KIND", "ID", "REGION", "JOB", "STATE", "AGE", "COST",
        right=("AGE", "COST"), folded=("ID", "JOB"),
    )  # fmt: skip
    drawn.title, drawn.title_justify = escape(title), "left"
    for item in items:
        resource = item.resource
        drawn.add_row(
            resource.provider,
            resource.kind,
            escape(resource.resource_id),
            resource.region,
            escape(resource.job_id or "-"),
            item.job_state,
            _age(item.age_s),
            f"${item.cost_usd:,.2f}",
        )
    return drawn


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = int(seconds // 60)
    if minutes < 1:
        return f"{int(seconds)}s"
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def cache_json(entries: list[Any], pruned: list[Any]) -> list[dict[str, Any]]:
    """This machine's fetched datasets (remote.fetch.cache.CacheEntry), and which were removed."""
    gone = {entry.folder for entry in pruned}
    return [
        {
            "source": entry.source,
            "bytes": entry.bytes,
            "last_used": entry.last_used,
            "folder": str(entry.folder),
            "removed": entry.folder in gone,
        }
        for entry in entries
    ]


def cache_lines(entries: list[Any], pruned: list[Any], days: float) -> list[str]:
    if not entries:
        return []
    total = sum(entry.bytes for entry in entries)
    lines = [
        f"dataset cache on this machine: {len(entries)} source(s), {total / 1e9:.2f} GB "
        f"(kept for the next job; --yes removes those unused for {days:g} days)"
    ]
    lines += [
        f"removed from the dataset cache: {e.source} ({e.bytes / 1e9:.2f} GB)" for e in pruned
    ]
    return lines
