"""The state store: jobs, their nodes and their events, in SQLite (WAL) under the gpujobs home.

It is the only module that writes state. Opened from a path given to the constructor, never at
import. Several gpujobs processes may use it at once: WAL lets readers run beside a writer, every
write is one short `BEGIN IMMEDIATE` transaction, and a busy database is waited for, not failed.

Rows come back as small frozen dataclasses rather than pydantic models: `gpujobs status` reads
them on its fast path, where importing pydantic would cost a third of the time budget.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class JobState(StrEnum):
    PENDING = "PENDING"
    PLANNING = "PLANNING"
    PROVISIONING = "PROVISIONING"
    SETTING_UP = "SETTING_UP"
    SYNCING = "SYNCING"
    RUNNING = "RUNNING"
    COLLECTING = "COLLECTING"
    TEARING_DOWN = "TEARING_DOWN"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    state         TEXT NOT NULL,
    spec_json     TEXT NOT NULL,
    spec_path     TEXT NOT NULL,
    runs_dir      TEXT NOT NULL,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    finished_at   REAL,
    placement     TEXT,
    exit_code     INTEGER,
    error         TEXT,
    driver_pid    INTEGER,
    driver_lost   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);
CREATE TABLE IF NOT EXISTS nodes (
    job_id        TEXT NOT NULL REFERENCES jobs (id),
    node_id       TEXT NOT NULL,
    provider      TEXT NOT NULL,
    node_json     TEXT NOT NULL,
    pid           INTEGER,
    created_at    REAL NOT NULL,
    terminated_at REAL,
    PRIMARY KEY (job_id, node_id)
);
CREATE TABLE IF NOT EXISTS events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id        TEXT NOT NULL REFERENCES jobs (id),
    ts            REAL NOT NULL,
    state         TEXT NOT NULL,
    message       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_by_job ON events (job_id, id);
"""

# An event under the job's current state (a note, not a transition).
_NOTE_SQL = (
    "INSERT INTO events (job_id, ts, state, message) SELECT id, ?, state, ? FROM jobs WHERE id = ?"
)
_JOB_COLUMNS = (
    "id, name, state, spec_json, spec_path, runs_dir, created_at, updated_at, finished_at, "
    "placement, exit_code, error, driver_pid, driver_lost"
)


@dataclass(frozen=True)
class JobRecord:
    id: str
    name: str
    state: JobState
    spec_json: str
    spec_path: str
    runs_dir: str
    created_at: float
    updated_at: float
    finished_at: float | None
    placement: str | None
    exit_code: int | None
    error: str | None
    driver_pid: int | None
    driver_lost: bool


@dataclass(frozen=True)
class NodeRecord:
    job_id: str
    node_id: str
    provider: str
    node_json: str
    pid: int | None
    created_at: float
    terminated_at: float | None


@dataclass(frozen=True)
class EventRecord:
    job_id: str
    ts: float
    state: JobState
    message: str


class Store:
    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        # isolation_level=None: we issue BEGIN ourselves, so each write is one explicit txn.
        self._db = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        if self._db.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA_VERSION:
            # executescript commits on its own, so the transaction is part of the script.
            self._db.executescript(
                f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version = {_SCHEMA_VERSION};COMMIT;"
            )
        with contextlib.suppress(OSError):
            path.chmod(0o600)

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- jobs -------------------------------------------------------------------------------
    def create_job(
        self,
        *,
        job_id: str,
        name: str,
        spec_json: str,
        spec_path: str,
        runs_dir: str,
        driver_pid: int | None,
        now: float | None = None,
    ) -> JobRecord:
        now = time.time() if now is None else now
        with self._write() as db:
            db.execute(
                "INSERT INTO jobs (id, name, state, spec_json, spec_path, runs_dir, created_at, "
                "updated_at, driver_pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    name,
                    JobState.PENDING,
                    spec_json,
                    spec_path,
                    runs_dir,
                    now,
                    now,
                    driver_pid,
                ),
            )
            db.execute(
                "INSERT INTO events (job_id, ts, state, message) VALUES (?, ?, ?, ?)",
                (job_id, now, JobState.PENDING, "job created"),
            )
        return self.job(job_id)

    def transition(
        self, job_id: str, state: JobState, message: str = "", *, now: float | None = None
    ) -> None:
        """Record a new state and its event in one transaction."""
        now = time.time() if now is None else now
        finished = now if state.is_terminal else None
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET state = ?, updated_at = ?, finished_at = COALESCE(?, finished_at)"
                " WHERE id = ?",
                (state, now, finished, job_id),
            )
            db.execute(
                "INSERT INTO events (job_id, ts, state, message) VALUES (?, ?, ?, ?)",
                (job_id, now, state, message),
            )

    def note(self, job_id: str, message: str, *, now: float | None = None) -> None:
        """An event that is not a state change (a pull, a warning), under the current state."""
        now = time.time() if now is None else now
        with self._write() as db:
            db.execute(_NOTE_SQL, (now, message, job_id))

    def set_outcome(self, job_id: str, *, exit_code: int | None, error: str | None) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET exit_code = COALESCE(?, exit_code), "
                "error = COALESCE(?, error) WHERE id = ?",
                (exit_code, error, job_id),
            )

    def set_placement(self, job_id: str, placement: str) -> None:
        with self._write() as db:
            db.execute("UPDATE jobs SET placement = ? WHERE id = ?", (placement, job_id))

    def set_driver(self, job_id: str, pid: int | None) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET driver_pid = ?, driver_lost = 0 WHERE id = ?", (pid, job_id)
            )

    def mark_driver_lost(self, job_id: str, *, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._write() as db:
            changed = db.execute(
                "UPDATE jobs SET driver_lost = 1 WHERE id = ? AND driver_lost = 0", (job_id,)
            ).rowcount
            if changed:
                message = "driver lost: the gpujobs process driving this job is gone"
                db.execute(_NOTE_SQL, (now, message, job_id))

    def job(self, job_id: str) -> JobRecord:
        row = self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise KeyError(job_id)
        return _job(row)

    def find_job(self, ref: str) -> JobRecord | None:
        """An exact id, else a unique id prefix, else the newest job of that name."""
        rows = self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
            (ref, ref + "\uffff"),
        ).fetchall()
        exact = [row for row in rows if row[0] == ref]
        if exact:
            return _job(exact[0])
        if len(rows) == 1:
            return _job(rows[0])
        row = self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE name = ? ORDER BY created_at DESC LIMIT 1",
            (ref,),
        ).fetchone()
        return _job(row) if row else None

    def jobs(self, *, limit: int | None = None) -> list[JobRecord]:
        """Newest first."""
        query = f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY created_at DESC"
        params: tuple[int, ...] = ()
        if limit is not None:
            query += " LIMIT ?"
            params = (limit,)
        return [_job(row) for row in self._db.execute(query, params)]

    def active_jobs(self) -> list[JobRecord]:
        placeholders = ", ".join("?" for _ in TERMINAL_STATES)
        rows = self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state NOT IN ({placeholders}) "
            "ORDER BY created_at DESC",
            tuple(TERMINAL_STATES),
        )
        return [_job(row) for row in rows]

    def count_jobs(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])

    # -- nodes ------------------------------------------------------------------------------
    def add_node(
        self,
        job_id: str,
        *,
        node_id: str,
        provider: str,
        node_json: str,
        now: float | None = None,
    ) -> None:
        now = time.time() if now is None else now
        with self._write() as db:
            db.execute(
                "INSERT INTO nodes (job_id, node_id, provider, node_json, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id, node_id) "
                "DO UPDATE SET node_json = excluded.node_json",
                (job_id, node_id, provider, node_json, now),
            )

    def set_node_pid(self, job_id: str, node_id: str, pid: int) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE nodes SET pid = ? WHERE job_id = ? AND node_id = ?",
                (pid, job_id, node_id),
            )

    def mark_node_terminated(self, job_id: str, node_id: str, *, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._write() as db:
            db.execute(
                "UPDATE nodes SET terminated_at = COALESCE(terminated_at, ?) "
                "WHERE job_id = ? AND node_id = ?",
                (now, job_id, node_id),
            )

    def nodes(self, job_id: str) -> list[NodeRecord]:
        rows = self._db.execute(
            "SELECT job_id, node_id, provider, node_json, pid, created_at, terminated_at "
            "FROM nodes WHERE job_id = ? ORDER BY created_at",
            (job_id,),
        )
        return [NodeRecord(*row) for row in rows]

    # -- events -----------------------------------------------------------------------------
    def events(self, job_id: str) -> list[EventRecord]:
        rows = self._db.execute(
            "SELECT job_id, ts, state, message FROM events WHERE job_id = ? ORDER BY id",
            (job_id,),
        )
        return [EventRecord(row[0], row[1], JobState(row[2]), row[3]) for row in rows]


def _job(row: tuple[object, ...]) -> JobRecord:
    values = list(row)
    values[2] = JobState(values[2])
    values[13] = bool(values[13])
    return JobRecord(*values)  # type: ignore[arg-type]
