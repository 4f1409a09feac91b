"""Tables for the read commands and their --json shapes."""

from __future__ import annotations

import time
from typing import Any

from rich.markup import escape
from rich.table import Table

from gpujobs.control import JobView
from gpujobs.state import EventRecord, JobState, NodeRecord

STATE_STYLE = {
    JobState.SUCCEEDED: "green",
    JobState.FAILED: "red",
    JobState.CANCELLED: "yellow",
    JobState.RUNNING: "cyan",
}


def state_label(view: JobView) -> str:
    if view.driver_lost:
        return f"{view.record.state.value} (driver lost)"
    return view.record.state.value


def status_table(views: list[JobView], total: int) -> Table:
    now = time.time()
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("JOB", "STATE", "PLACEMENT", "AGE", "DURATION", "CHECKPOINTS"):
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
            record.runs_dir,
        )
    if total > len(views):
        table.caption = f"{total - len(views)} older job(s) not shown: gpujobs status --all"
    return table


def job_detail(view: JobView, events: list[EventRecord], nodes: list[NodeRecord]) -> Table:
    record = view.record
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("job", record.id)
    table.add_row("state", state_label(view))
    table.add_row("placement", record.placement or "-")
    table.add_row("spec", record.spec_path)
    table.add_row("checkpoints", record.runs_dir)
    if record.exit_code is not None:
        table.add_row("exit code", str(record.exit_code))
    if record.error:
        table.add_row("error", escape(record.error))
    if view.driver_lost:
        table.add_row("hint", f"gpujobs down {record.id}  (saves the checkpoint, tears down)")
    for node in nodes:
        gone = "terminated" if node.terminated_at else "live"
        table.add_row("node", f"{node.node_id} ({node.provider}, {gone})")
    for event in events:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.ts))
        first_line = event.message.splitlines()[0] if event.message else ""
        table.add_row(f"  {stamp}", f"{event.state.value} {escape(first_line)}".rstrip())
    return table


def job_json(view: JobView) -> dict[str, Any]:
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
    }


def job_detail_json(
    view: JobView, events: list[EventRecord], nodes: list[NodeRecord]
) -> dict[str, Any]:
    return {
        **job_json(view),
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
            }
            for node in nodes
        ],
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
