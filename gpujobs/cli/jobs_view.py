"""Tables for the read commands and their --json shapes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from gpujobs.api.controller import JobDetail, JobView
from gpujobs.api.results import training_verdict
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
    if _verdict(view):
        notes.append("training failed: gpujobs results " + view.record.id)
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


# Columns in the order they give way on a narrow terminal: JOB and STATE are always whole;
# CHECKPOINTS (a long path) folds into what is left, or goes when under _MIN_PATH_WIDTH.
_STATUS_COLUMNS = ("JOB", "STATE", "PLACEMENT", "AGE", "DURATION", "COST", "CHECKPOINTS")
_GIVES_WAY = ("CHECKPOINTS", "DURATION", "PLACEMENT", "AGE", "COST")
_MIN_PATH_WIDTH = 16


def status_table(
    views: list[JobView],
    total: int,
    costs: dict[str, float],
    now: float,
    width: int | None = None,
) -> Table:
    """Jobs, one a row. Given the terminal's `width`, columns that would squeeze the id or the
    state are left out (the least useful first) instead of cutting the id short."""
    rows = []
    for view in views:
        record = view.record
        end = record.finished_at or now
        rows.append(
            {
                "JOB": record.id,
                "STATE": state_label(view),
                "PLACEMENT": record.placement or "-",
                "AGE": _ago(now - record.created_at),
                "DURATION": _duration(end - record.created_at),
                "COST": cost_text(record, costs),
                "CHECKPOINTS": record.runs_dir,
            }
        )
    shown = _columns_that_fit(rows, width)
    table = Table(box=None, header_style="bold", pad_edge=False, caption_justify="left")
    for column in shown:
        folds = column == "CHECKPOINTS"
        table.add_column(column, no_wrap=not folds, overflow="fold" if folds else "ellipsis")
    for view, row in zip(views, rows, strict=True):
        style = "red" if view.driver_lost else STATE_STYLE.get(view.record.state, "")
        if style == "green" and _verdict(view):
            style = "yellow"  # it ran to the end, but what it trained is no good
        cells = [escape(row[column]) for column in shown]
        if style:
            cells[1] = f"[{style}]{cells[1]}[/]"
        table.add_row(*cells)
    if total > len(views):
        table.caption = f"{total - len(views)} older job(s) not shown: gpujobs status --all"
    return table


def more_jobs_hint(shown: int, total: int, *, show_all: bool, page: int) -> str | None:
    """What the listing leaves out, and the command that shows it."""
    if not show_all:
        if total > shown:
            return f"{total - shown:,} older job(s) not shown: gpujobs status --all"
        return None
    from gpujobs.api.controller import PAGE_SIZE

    pages = max(-(-total // PAGE_SIZE), 1)
    if page > pages:
        return f"page {page} is past the last ({pages:,}): gpujobs status --all --page {pages}"
    if pages == 1:
        return None
    following = f": gpujobs status --all --page {page + 1}" if page < pages else ""
    return f"page {page} of {pages:,} ({total:,} jobs, newest first){following}"


def _columns_that_fit(rows: list[dict[str, str]], width: int | None) -> list[str]:
    def needed(column: str) -> int:
        return max([len(column), *(len(row[column]) for row in rows)])

    shown = list(_STATUS_COLUMNS)
    if width is None:
        return shown
    for column in _GIVES_WAY:
        fixed = [c for c in shown if c != "CHECKPOINTS"]
        used = sum(needed(c) for c in fixed) + 2 * (len(shown) - 1)  # padding between columns
        if "CHECKPOINTS" in shown:
            if width - used >= min(needed("CHECKPOINTS"), _MIN_PATH_WIDTH):
                return shown
        elif used <= width:
            return shown
        shown.remove(column)
    return shown


def _parts(detail: JobDetail) -> tuple[JobView, list[EventRecord], list[NodeRecord],
                                                  list[LedgerEntry], float]:  # fmt: skip
    return detail.view, detail.events, detail.nodes, detail.ledger, detail.now


def job_detail(detail: JobDetail) -> Table:
    view, events, nodes, ledger, now = _parts(detail)
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
        "training_verdict": _verdict(view),
    }


def _verdict(view: JobView) -> str | None:
    """The workload's own verdict on a job that ran to the end (summary.json came home)."""
    if view.record.state is not JobState.SUCCEEDED:
        return None
    return training_verdict(Path(view.record.runs_dir))


def job_detail_json(detail: JobDetail) -> dict[str, Any]:
    view, events, nodes, ledger, now = _parts(detail)
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
