"""What the dashboard shows, read through the controller: plain, JSON-ready data."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from gpujobs.api.controller import Controller
from gpujobs.cli.jobs_view import job_detail_json, job_json

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")
LOG_CHUNK = 256 * 1024
MAX_PICTURES = 8
MAX_METRIC_ROWS = 5000


def jobs(controller: Controller) -> list[dict[str, Any]]:
    views, _total = controller.overview(show_all=False)
    costs = controller.costs([view.record.id for view in views])
    return [job_json(view, costs) for view in views]


def job(controller: Controller, job_id: str) -> dict[str, Any]:
    return job_detail_json(controller.detail(job_id))


def log_since(controller: Controller, job_id: str, offset: int) -> tuple[bytes, int]:
    """The job's log from byte `offset` (at most LOG_CHUNK), and the offset after it."""
    record = controller.find(job_id)
    path = controller.home.log_file(record.id)
    try:
        with path.open("rb") as handle:
            handle.seek(max(offset, 0))
            data = handle.read(LOG_CHUNK)
    except FileNotFoundError:
        return b"", offset
    return data, max(offset, 0) + len(data)


def metrics(controller: Controller, job_id: str) -> list[dict[str, float]]:
    """The numeric fields of each row of the job's metrics.jsonl, as it has come home."""
    record = controller.find(job_id)
    path = Path(record.runs_dir) / "metrics.jsonl"
    rows: list[dict[str, float]] = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return rows
    for line in lines[-MAX_METRIC_ROWS:]:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line still being written
        if not isinstance(row, dict):
            continue
        numbers = {
            key: float(value)
            for key, value in row.items()
            if isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
        }
        if numbers:
            rows.append(numbers)
    return rows


def pictures(controller: Controller, job_id: str) -> list[str]:
    """The newest pictures in the job's run folder (relative paths), newest first."""
    record = controller.find(job_id)
    root = Path(record.runs_dir)
    found: list[tuple[float, str]] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        for name in files:
            if name.lower().endswith(PICTURE_SUFFIXES) and not name.startswith("."):
                path = Path(folder) / name
                try:
                    found.append((path.stat().st_mtime, path.relative_to(root).as_posix()))
                except OSError:
                    continue
    found.sort(reverse=True)
    return [name for _, name in found[:MAX_PICTURES]]


def picture_path(controller: Controller, job_id: str, name: str) -> Path | None:
    """A picture the listing offers, and only such a one (no path from the URL is trusted)."""
    if name not in pictures(controller, job_id):
        return None
    return Path(controller.find(job_id).runs_dir) / name
