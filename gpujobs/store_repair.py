"""`gpujobs doctor`: check the store, and rebuild a damaged one from every row it can still read.

The damaged file is never changed or deleted: it is moved aside (state.db.damaged-<time>), a
fresh store is made in its place, and each table's rows are copied over, a range of rows at a
time, so one unreadable page loses only the rows on it. A file whose first bytes were overwritten
(SQLite's header, so it no longer opens at all) is read through a copy with the header put back.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from gpujobs.state import Store

# Oldest first: a row's parent (its job) is copied before the row.
_TABLES = ("jobs", "budgets", "nodes", "events", "ledger", "holds")
_HEADER = b"SQLite format 3\x00"
_RANGE = 256  # rows read per query: a bad page costs at most the rows that share its ranges


@dataclass
class DoctorReport:
    path: Path
    healthy: bool
    problem: str = ""
    moved_to: Path | None = None
    kept: dict[str, int] = field(default_factory=dict)  # table -> rows carried over
    lost: dict[str, int] = field(default_factory=dict)  # table -> row ranges unreadable


def check(path: Path) -> str:
    """'' when the store is sound, else what is wrong with it."""
    if not path.exists():
        return ""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    problems = [row[0] for row in rows if row[0] != "ok"]
    return "; ".join(problems[:3])


def repair(path: Path) -> DoctorReport:
    problem = check(path)
    if not problem:
        return DoctorReport(path, healthy=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    damaged = path.with_name(f"{path.name}.damaged-{stamp}")
    path.rename(damaged)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(damaged.with_name(damaged.name + suffix))
    report = DoctorReport(path, healthy=False, problem=problem, moved_to=damaged)
    Store(path).close()  # a fresh store, every table made
    readable = _readable_copy(damaged)
    try:
        with sqlite3.connect(path) as fresh:
            for table in _TABLES:
                kept, lost = _copy_table(readable, fresh, table)
                report.kept[table], report.lost[table] = kept, lost
    finally:
        if readable != damaged:
            readable.unlink(missing_ok=True)
    return report


def _readable_copy(damaged: Path) -> Path:
    """The damaged file, or a copy of it with SQLite's header put back when that is what broke."""
    with damaged.open("rb") as handle:
        head = handle.read(len(_HEADER))
    if head == _HEADER:
        return damaged
    copy = damaged.with_name(damaged.name + ".header-fixed")
    shutil.copyfile(damaged, copy)
    with copy.open("r+b") as handle:
        handle.write(_HEADER)
    return copy


def _copy_table(source_path: Path, fresh: sqlite3.Connection, table: str) -> tuple[int, int]:
    try:
        source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
    except sqlite3.DatabaseError:
        return 0, 1
    try:
        columns = [row[1] for row in fresh.execute(f"PRAGMA table_info({table})")]
        try:
            have = {row[1] for row in source.execute(f"PRAGMA table_info({table})")}
            top = source.execute(f"SELECT MAX(rowid) FROM {table}").fetchone()[0] or 0
        except sqlite3.DatabaseError:
            return 0, 1
        shared = [column for column in columns if column in have]
        names = ", ".join(shared)
        marks = ", ".join("?" for _ in shared)
        kept = lost = 0
        for start in range(0, top + 1, _RANGE):
            try:
                rows = source.execute(
                    f"SELECT {names} FROM {table} WHERE rowid BETWEEN ? AND ?",
                    (start, start + _RANGE - 1),
                ).fetchall()
            except sqlite3.DatabaseError:
                lost += 1
                continue
            with fresh:
                for row in rows:
                    try:
                        fresh.execute(
                            f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({marks})", row
                        )
                        kept += 1
                    except sqlite3.DatabaseError:
                        lost += 1
        return kept, lost
    finally:
        source.close()
