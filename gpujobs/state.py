"""The state store: jobs, their nodes, their events and the money (the cost ledger, the user's
budgets, and the holds running jobs place on them), in SQLite (WAL) under the gpujobs home.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from gpujobs.errors import redact


class JobState(StrEnum):
    PENDING = "PENDING"
    PLANNING = "PLANNING"
    PROVISIONING = "PROVISIONING"
    SETTING_UP = "SETTING_UP"
    SYNCING = "SYNCING"
    RUNNING = "RUNNING"
    RECOVERING = "RECOVERING"  # a node was lost: restarting elsewhere from the last checkpoint
    COLLECTING = "COLLECTING"
    TEARING_DOWN = "TEARING_DOWN"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

# Each step takes the store from the version before it; a new database runs them all. Steps
# are lists of statements (not scripts) so they run inside the one BEGIN IMMEDIATE below.
_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE IF NOT EXISTS jobs (
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
        )""",
        "CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at)",
        "CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state)",
        """CREATE TABLE IF NOT EXISTS nodes (
            job_id        TEXT NOT NULL REFERENCES jobs (id),
            node_id       TEXT NOT NULL,
            provider      TEXT NOT NULL,
            node_json     TEXT NOT NULL,
            pid           INTEGER,
            created_at    REAL NOT NULL,
            terminated_at REAL,
            PRIMARY KEY (job_id, node_id)
        )""",
        """CREATE TABLE IF NOT EXISTS events (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id        TEXT NOT NULL REFERENCES jobs (id),
            ts            REAL NOT NULL,
            state         TEXT NOT NULL,
            message       TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX IF NOT EXISTS events_by_job ON events (job_id, id)",
    ],
    [
        # The cap a job runs under, fixed when its placement is held (money and hours).
        "ALTER TABLE jobs ADD COLUMN cap_usd REAL",
        "ALTER TABLE jobs ADD COLUMN cap_hours REAL",
        # One row per node: its price frozen at launch, from the start of provisioning to the
        # confirmed termination; ends_by is when the node's own shutdown timer ends it at most.
        """CREATE TABLE ledger (
            job_id         TEXT NOT NULL REFERENCES jobs (id),
            node_id        TEXT NOT NULL,
            provider       TEXT NOT NULL,
            instance_type  TEXT NOT NULL,
            region         TEXT NOT NULL,
            spot           INTEGER NOT NULL,
            price_per_hour REAL NOT NULL,
            started_at     REAL NOT NULL,
            ended_at       REAL,
            ends_by        REAL,
            PRIMARY KEY (job_id, node_id)
        )""",
        # provider '' = every provider; monthly = per UTC calendar month, else all time.
        """CREATE TABLE budgets (
            provider   TEXT NOT NULL,
            monthly    INTEGER NOT NULL,
            limit_usd  REAL NOT NULL,
            set_at     REAL NOT NULL,
            PRIMARY KEY (provider, monthly)
        )""",
        # What a launching or running job may still spend: held against the budgets until the
        # job ends, so two launches cannot both count on the same dollars.
        """CREATE TABLE holds (
            job_id      TEXT PRIMARY KEY REFERENCES jobs (id),
            provider    TEXT NOT NULL,
            amount_usd  REAL NOT NULL,
            created_at  REAL NOT NULL,
            released_at REAL
        )""",
    ],
    [
        # How many times a lost node (a reclaimed spot machine) made the job start again.
        "ALTER TABLE jobs ADD COLUMN restarts INTEGER NOT NULL DEFAULT 0",
    ],
]
_SCHEMA_VERSION = len(_MIGRATIONS)

# An event under the job's current state (a note, not a transition).
_NOTE_SQL = (
    "INSERT INTO events (job_id, ts, state, message) SELECT id, ?, state, ? FROM jobs WHERE id = ?"
)
_JOB_COLUMNS = (
    "id, name, state, spec_json, spec_path, runs_dir, created_at, updated_at, finished_at, "
    "placement, exit_code, error, driver_pid, driver_lost, cap_usd, cap_hours, restarts"
)
_LEDGER_COLUMNS = (
    "job_id, node_id, provider, instance_type, region, spot, price_per_hour, started_at, "
    "ended_at, ends_by"
)
# A ledger row whose whole cost lies in the UTC day it started: it ended (confirmed) before that
# day did. Its cost no longer changes and falls in one day (so in one month), so SQLite sums
# these per day (Books.settled), in integer arithmetic: strftime would double the query's time.
# The arithmetic is LedgerEntry.cost's.
_START_DAY = "CAST(started_at / 86400 AS INTEGER)"
_SETTLED = f"ended_at IS NOT NULL AND CAST(ended_at / 86400 AS INTEGER) = {_START_DAY}"


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
    cap_usd: float | None = None  # the money cap it runs under, once its placement is held
    cap_hours: float | None = None
    restarts: int = 0  # how many times a lost node made it start again elsewhere


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
class Billing:
    """What a node costs, frozen when it is provisioned: a later catalog change does not
    reprice it."""

    instance_type: str
    region: str
    spot: bool
    price_per_hour: float
    started_at: float  # when provisioning began: the clouds bill from about then
    ends_by: float | None = None  # the node's own shutdown timer ends it by then at the latest


@dataclass(frozen=True)
class LedgerEntry:
    job_id: str
    node_id: str
    provider: str
    instance_type: str
    region: str
    spot: bool
    price_per_hour: float
    started_at: float
    ended_at: float | None  # confirmed termination
    ends_by: float | None

    def end(self, now: float) -> float:
        """Until when it is billed: its confirmed end (what the cloud billed, timer or not);
        unconfirmed, until now but never past its own shutdown timer."""
        if self.ended_at is not None:
            return max(self.ended_at, self.started_at)
        ends = [now] if self.ends_by is None else [now, self.ends_by]
        return max(min(ends), self.started_at)

    def live(self, now: float) -> bool:
        return self.ended_at is None and (self.ends_by is None or self.ends_by > now)

    def cost(self, now: float, *, since: float = 0.0, until: float = float("inf")) -> float:
        """USD accrued by `now`, per second; within [since, until) when given (a month)."""
        start, end = max(self.started_at, since), min(self.end(now), until)
        return max(end - start, 0.0) * self.price_per_hour / 3600


@dataclass(frozen=True)
class BudgetLimit:
    provider: str | None  # None: every provider
    monthly: bool  # per UTC calendar month, else all time
    limit_usd: float
    set_at: float


@dataclass(frozen=True)
class Hold:
    job_id: str
    provider: str
    amount_usd: float
    created_at: float


@dataclass(frozen=True)
class Books:
    """Everything the budget arithmetic reads, from one consistent read. With years of jobs
    the ledger is long, and most nodes in it ended on the UTC day they started: those are
    summed by SQLite per day and provider (`settled`); only the rest are read as rows."""

    limits: list[BudgetLimit]
    settled: dict[tuple[int, str], float]  # (UTC day: days since the epoch, provider) -> USD
    open: list[LedgerEntry]  # every other node: running, unconfirmed, or across a day's turn
    holds: list[Hold]  # active ones only
    held: list[LedgerEntry] = field(default_factory=list)  # the nodes of the jobs holding money


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
        _use_wal(self._db, busy_timeout_s)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        if self._db.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA_VERSION:
            self._migrate()
        with contextlib.suppress(OSError):
            path.chmod(0o600)

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        """Bring the schema up to date. The version is read again inside the write lock: another
        process may have migrated while this one waited for it."""
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} was written by a newer gpujobs (schema {version}); "
                    "upgrade gpujobs"
                )
            for step in _MIGRATIONS[version:]:
                for statement in step:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

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
                (job_id, now, state, redact(message)),
            )
            if state.is_terminal:  # what it did not spend goes back to the budgets
                db.execute(
                    "UPDATE holds SET released_at = ? WHERE job_id = ? AND released_at IS NULL",
                    (now, job_id),
                )

    def note(self, job_id: str, message: str, *, now: float | None = None) -> None:
        """An event that is not a state change (a pull, a warning), under the current state."""
        now = time.time() if now is None else now
        with self._write() as db:
            db.execute(_NOTE_SQL, (now, redact(message), job_id))

    def set_outcome(self, job_id: str, *, exit_code: int | None, error: str | None) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET exit_code = COALESCE(?, exit_code), "
                "error = COALESCE(?, error) WHERE id = ?",
                (exit_code, None if error is None else redact(error), job_id),
            )

    def set_placement(self, job_id: str, placement: str) -> None:
        with self._write() as db:
            db.execute("UPDATE jobs SET placement = ? WHERE id = ?", (placement, job_id))

    def set_caps(self, job_id: str, *, usd: float | None, hours: float | None) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET cap_usd = ?, cap_hours = ? WHERE id = ?", (usd, hours, job_id)
            )

    def count_restart(self, job_id: str) -> int:
        """One more restart after a lost node; returns how many there have been."""
        with self._write() as db:
            db.execute("UPDATE jobs SET restarts = restarts + 1 WHERE id = ?", (job_id,))
            (count,) = db.execute("SELECT restarts FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return int(count)

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
                db.execute(_NOTE_SQL, (now, redact(message), job_id))

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

    def jobs(self, *, limit: int | None = None, offset: int = 0) -> list[JobRecord]:
        """Newest first; a page of them with `limit` and `offset` (only those rows are read)."""
        query = f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY created_at DESC"
        params: tuple[int, ...] = ()
        if limit is not None:
            query += " LIMIT ? OFFSET ?"
            params = (limit, offset)
        return [_job(row) for row in self._db.execute(query, params)]

    def active_jobs(self, *, limit: int | None = None) -> list[JobRecord]:
        """Jobs not yet ended, newest first (at most `limit`)."""
        placeholders = ", ".join("?" for _ in TERMINAL_STATES)
        query = (
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE state NOT IN ({placeholders}) "
            "ORDER BY created_at DESC"
        )
        params: tuple[object, ...] = tuple(TERMINAL_STATES)
        if limit is not None:
            query += " LIMIT ?"
            params += (limit,)
        return [_job(row) for row in self._db.execute(query, params)]

    def count_active(self) -> int:
        placeholders = ", ".join("?" for _ in TERMINAL_STATES)
        return int(
            self._db.execute(
                f"SELECT COUNT(*) FROM jobs WHERE state NOT IN ({placeholders})",
                tuple(TERMINAL_STATES),
            ).fetchone()[0]
        )

    def jobs_that_spent(self, *, limit: int | None = None) -> tuple[list[JobRecord], int]:
        """The jobs with a ledger row (they had a node), newest first, at most `limit` of them
        read; and how many there are."""
        query = (
            # EXISTS, not IN: SQLite walks jobs newest first by index and stops at `limit`.
            f"SELECT {_JOB_COLUMNS} FROM jobs "
            "WHERE EXISTS (SELECT 1 FROM ledger WHERE ledger.job_id = jobs.id) "
            "ORDER BY created_at DESC"
        )
        params: tuple[int, ...] = ()
        if limit is not None:
            query += " LIMIT ?"
            params = (limit,)
        records = [_job(row) for row in self._db.execute(query, params)]
        count = self._db.execute("SELECT COUNT(DISTINCT job_id) FROM ledger").fetchone()[0]
        return records, int(count)

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
        billing: Billing | None = None,
        now: float | None = None,
    ) -> None:
        """Record a node (again: its address arrives later) and, the first time, its ledger
        entry; the price in the ledger is never updated."""
        now = time.time() if now is None else now
        with self._write() as db:
            db.execute(
                "INSERT INTO nodes (job_id, node_id, provider, node_json, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id, node_id) "
                "DO UPDATE SET node_json = excluded.node_json",
                (job_id, node_id, provider, node_json, now),
            )
            if billing is not None:
                db.execute(
                    f"INSERT INTO ledger ({_LEDGER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
                    "NULL, ?) ON CONFLICT (job_id, node_id) DO NOTHING",
                    (
                        job_id,
                        node_id,
                        provider,
                        billing.instance_type,
                        billing.region,
                        int(billing.spot),
                        billing.price_per_hour,
                        billing.started_at,
                        billing.ends_by,
                    ),
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
            db.execute(
                "UPDATE ledger SET ended_at = COALESCE(ended_at, ?) "
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

    # -- money ------------------------------------------------------------------------------
    def ledger(self, *job_ids: str) -> list[LedgerEntry]:
        """The cost records of these jobs' nodes (of every job when none is named), oldest first."""
        query = f"SELECT {_LEDGER_COLUMNS} FROM ledger"
        if job_ids:
            query += f" WHERE job_id IN ({', '.join('?' for _ in job_ids)})"
        rows = self._db.execute(query + " ORDER BY started_at", job_ids)
        return [_ledger_entry(row) for row in rows]

    def books(self) -> Books:
        """Limits, ledger and active holds as of one moment (one read transaction)."""
        self._db.execute("BEGIN")
        try:
            return self._books(self._db)
        finally:
            self._db.execute("COMMIT")

    def set_budget(
        self, *, provider: str | None, monthly: bool, limit_usd: float, now: float | None = None
    ) -> None:
        now = time.time() if now is None else now
        with self._write() as db:
            db.execute(
                "INSERT INTO budgets (provider, monthly, limit_usd, set_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (provider, monthly) DO UPDATE SET limit_usd = excluded.limit_usd, "
                "set_at = excluded.set_at",
                (provider or "", int(monthly), limit_usd, now),
            )

    def remove_budget(self, *, provider: str | None, monthly: bool) -> bool:
        with self._write() as db:
            removed = db.execute(
                "DELETE FROM budgets WHERE provider = ? AND monthly = ?",
                (provider or "", int(monthly)),
            ).rowcount
        return bool(removed)

    def hold(
        self,
        job_id: str,
        provider: str,
        decide: Callable[[Books], float | None],
        *,
        now: float | None = None,
    ) -> float | None:
        """Hold money for a job against the budgets, race-free across processes.

        `decide` reads the books inside the write lock and returns the amount to hold, or None
        to refuse; no other process can spend between its reading and the hold being written.
        A job holds one amount at a time: a new hold (the next placement) replaces the last.
        """
        now = time.time() if now is None else now
        with self._write() as db:
            amount = decide(self._books(db, except_job=job_id))
            if amount is not None:
                db.execute(
                    "INSERT INTO holds (job_id, provider, amount_usd, created_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET "
                    "provider = excluded.provider, amount_usd = excluded.amount_usd, "
                    "created_at = excluded.created_at, released_at = NULL",
                    (job_id, provider, amount, now),
                )
        return amount

    @staticmethod
    def _books(db: sqlite3.Connection, *, except_job: str | None = None) -> Books:
        limits = [
            BudgetLimit(provider or None, bool(monthly), limit_usd, set_at)
            for provider, monthly, limit_usd, set_at in db.execute(
                "SELECT provider, monthly, limit_usd, set_at FROM budgets "
                "ORDER BY provider, monthly"
            )
        ]
        settled: dict[tuple[int, str], float] = {
            (day, provider): usd
            for day, provider, usd in db.execute(
                f"SELECT {_START_DAY}, provider, "
                "SUM(MAX(ended_at - started_at, 0) * price_per_hour / 3600) "
                f"FROM ledger WHERE {_SETTLED} GROUP BY 1, 2"
            )
        }
        open_entries = [
            _ledger_entry(row)
            for row in db.execute(
                f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE NOT ({_SETTLED}) ORDER BY started_at"
            )
        ]
        active = "FROM holds WHERE released_at IS NULL AND job_id IS NOT ?"
        holds = [
            Hold(*row)
            for row in db.execute(
                f"SELECT job_id, provider, amount_usd, created_at {active}", (except_job,)
            )
        ]
        held = [
            _ledger_entry(row)
            for row in db.execute(
                f"SELECT {_LEDGER_COLUMNS} FROM ledger WHERE job_id IN (SELECT job_id {active})",
                (except_job,),
            )
        ]
        return Books(limits, settled, open_entries, holds, held)

    # -- events -----------------------------------------------------------------------------
    def events(self, job_id: str) -> list[EventRecord]:
        rows = self._db.execute(
            "SELECT job_id, ts, state, message FROM events WHERE job_id = ? ORDER BY id",
            (job_id,),
        )
        return [EventRecord(row[0], row[1], JobState(row[2]), row[3]) for row in rows]


def _use_wal(db: sqlite3.Connection, timeout_s: float) -> None:
    """Switch the database to WAL. The switch needs an exclusive lock and SQLite answers
    "database is locked" at once instead of waiting on the busy timeout, so two processes
    opening a new (or a pre-WAL) store together retry it here. A plain loop, not tenacity:
    this runs on every `gpujobs status`, and the loop is entered only on that race."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _ledger_entry(row: tuple[object, ...]) -> LedgerEntry:
    values = list(row)
    values[5] = bool(values[5])
    return LedgerEntry(*values)  # type: ignore[arg-type]


def _job(row: tuple[object, ...]) -> JobRecord:
    values = list(row)
    values[2] = JobState(values[2])
    values[13] = bool(values[13])
    return JobRecord(*values)  # type: ignore[arg-type]
