"""What came home for a job: its run summary (summary.json, written by the bundled workloads)
and the pictures beside it, read from runs/<job>/ without opening anything."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SUMMARY_FILE = "summary.json"
PICTURE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".mp4"})


@dataclass(frozen=True)
class Results:
    # A dataclass, not a pydantic model: `gpujobs status` imports this module (its verdicts),
    # and pydantic alone would double that command's start-up.
    job_id: str
    runs_dir: str
    summary: dict[str, Any] | None
    summary_path: str | None
    pictures: list[str]

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def read_results(job_id: str, runs_dir: Path) -> Results:
    """The shallowest summary.json under `runs_dir` (a workload writes it in its --out) and
    every picture or video under it, sorted by path."""
    found = sorted(runs_dir.rglob(SUMMARY_FILE), key=lambda p: (len(p.parts), str(p)))
    summary: dict[str, Any] | None = None
    summary_path: Path | None = None
    for candidate in found:
        try:
            summary = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # torn mid-pull: the next pull brings a whole one
        summary_path = candidate
        break
    pictures = sorted(
        str(path)
        for path in runs_dir.rglob("*")
        if path.suffix.lower() in PICTURE_SUFFIXES and path.is_file()
    )
    return Results(
        job_id=job_id,
        runs_dir=str(runs_dir),
        summary=summary,
        summary_path=None if summary_path is None else str(summary_path),
        pictures=pictures,
    )


def training_verdict(runs_dir: Path) -> str | None:
    """The verdict of runs_dir/summary.json (where a workload's --out comes home): one file
    read, cheap enough for every row of `gpujobs status`; None when absent or unreadable."""
    try:
        data = json.loads((runs_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    verdict = data.get("verdict") if isinstance(data, dict) else None
    return verdict if isinstance(verdict, str) and verdict else None
