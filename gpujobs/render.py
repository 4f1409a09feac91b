"""Tables for the read commands and their --json shapes."""

from __future__ import annotations

import time
from typing import Any

from rich.markup import escape
from rich.table import Table

from gpujobs.control import JobView
from gpujobs.state import EventRecord, JobRecord, JobState, LedgerEntry, NodeRecord

STATE_STYLE = {
    JobState.SUCCEEDED: "green",
    JobState.FAILED: "red",
    JobState.CANCELLED: "yellow",
    JobState.RUNNING: "cyan",
    JobState.RECOVERING: "yellow",
}


def state_label(view: JobView) -> str:
    notes = []
    if view.record.restarts:
        notes.append(f"restarted {view.record.restarts}x")
    if view.driver_lost:
        notes.append("driver lost")
    state = view.record.state.value
    return f"{state} ({', '.join(notes)})" if notes else state


def cap_text(cap_usd: float | None, cap_hours: float | None) -> str:
    if cap_usd is not None:
        return f"${cap_usd:,.2f}"
    if cap_hours is not None:
        return f"{cap_hours:g} h"
    return "no cap"


def cost_text(record: JobRecord, costs: dict[str, float]) -> str:
    """Spent so far, and the cap it runs under: `$1.20 of $20.00`."""
    spent = f"${costs.get(record.id, 0.0):,.2f}"
    if record.cap_usd is None and record.cap_hours is None:
        return spent
    return f"{spent} of {cap_text(record.cap_usd, record.cap_hours)}"


def status_table(views: list[JobView], total: int, costs: dict[str, float], now: float) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("JOB", "STATE", "PLACEMENT", "AGE", "DURATION", "COST", "CHECKPOINTS"):
        table.add_column(column, no_wrap=column != "CHECKPOINTS")
    for view in views:
        record = view.record
        style = "red" if view.driver_lost else STATE_STYLE.get(record.state, "")
        end = record.finished_at or now
        table.add_row(
            record.id,
            f"[{style}]{state_label(view)}[/]" if style else state_label(view),
            record.placement or "-",
            _ago(now - record.created_at),
            _duration(end - record.created_at),
            cost_text(record, costs),
            record.runs_dir,
        )
    if total > len(views):
        table.caption = f"{total - len(views)} older job(s) not shown: gpujobs status --all"
    return table


def job_detail(
    view: JobView,
    events: list[EventRecord],
    nodes: list[NodeRecord],
    ledger: list[LedgerEntry],
    now: float,
) -> Table:
    record = view.record
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("job", record.id)
    table.add_row("state", state_label(view))
    table.add_row("placement", record.placement or "-")
    table.add_row("cost", cost_text(record, {record.id: sum(e.cost(now) for e in ledger)}))
    table.add_row("spec", record.spec_path)
    table.add_row("checkpoints", record.runs_dir)
    if record.exit_code is not None:
        table.add_row("exit code", str(record.exit_code))
    if record.error:
        table.add_row("error", escape(record.error))
    if view.driver_lost:
        table.add_row(
            "hint",
            f"gpujobs attach {record.id}  (follows it again to the end), or "
            f"gpujobs down {record.id}  (saves the checkpoint, tears down)",
        )
    prices = {entry.node_id: entry for entry in ledger}
    for node in nodes:
        gone = "terminated" if node.terminated_at else "live"
        entry = prices.get(node.node_id)
        money = f", ${entry.price_per_hour:.3f}/h, ${entry.cost(now):,.2f}" if entry else ""
        table.add_row("node", f"{node.node_id} ({node.provider}, {gone}{money})")
    for event in events:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
        first_line = event.message.splitlines()[0] if event.message else ""
        table.add_row(f"  {stamp}", f"{event.state.value} {escape(first_line)}".rstrip())
    return table


def job_json(view: JobView, costs: dict[str, float]) -> dict[str, Any]:
    record = view.record
    return {
        "id": record.id,
        "name": record.name,
        "state": record.state.value,
        "driver_lost": view.driver_lost,
        "placement": record.placement,
        "created_at": record.created_at,
        "finished_at": record.finished_at,
        "exit_code": record.exit_code,
        "error": record.error,
        "runs_dir": record.runs_dir,
        "cost_usd": costs.get(record.id, 0.0),
        "cap_usd": record.cap_usd,
        "cap_hours": record.cap_hours,
        "restarts": record.restarts,
    }


def job_detail_json(
    view: JobView,
    events: list[EventRecord],
    nodes: list[NodeRecord],
    ledger: list[LedgerEntry],
    now: float,
) -> dict[str, Any]:
    prices = {entry.node_id: entry for entry in ledger}
    return {
        **job_json(view, {view.record.id: sum(entry.cost(now) for entry in ledger)}),
        "events": [
            {"ts": event.ts, "state": event.state.value, "message": event.message}
            for event in events
        ],
        "nodes": [
            {
                "node_id": node.node_id,
                "provider": node.provider,
                "created_at": node.created_at,
                "terminated_at": node.terminated_at,
                **_node_money(prices.get(node.node_id), now),
            }
            for node in nodes
        ],
    }


def _node_money(entry: LedgerEntry | None, now: float) -> dict[str, Any]:
    if entry is None:
        return {}
    return {
        "instance_type": entry.instance_type,
        "region": entry.region,
        "spot": entry.spot,
        "price_per_hour": entry.price_per_hour,
        "billed_from": entry.started_at,
        "billed_until": entry.ended_at,
        "cost_usd": entry.cost(now),
    }


def _ago(seconds: float) -> str:
    return _duration(seconds) + " ago"


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
