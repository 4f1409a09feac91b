from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from gpujobs.state import JobState, Store


def new_job(store: Store, job_id: str, name: str = "n") -> None:
    store.create_job(
        job_id=job_id,
        name=name,
        spec_json="{}",
        spec_path="/s.yaml",
        runs_dir="/runs",
        driver_pid=1,
    )


def test_transitions_are_recorded_with_events(store: Store) -> None:
    new_job(store, "job-1")
    store.transition("job-1", JobState.PLANNING, now=10.0)
    store.note("job-1", "a note", now=11.0)
    store.transition("job-1", JobState.FAILED, "boom", now=12.0)
    record = store.job("job-1")
    assert record.state is JobState.FAILED and record.finished_at == 12.0
    events = [(event.state, event.message) for event in store.events("job-1")]
    assert events == [
        (JobState.PENDING, "job created"),
        (JobState.PLANNING, ""),
        (JobState.PLANNING, "a note"),
        (JobState.FAILED, "boom"),
    ]


def test_find_by_id_prefix_and_name(store: Store) -> None:
    new_job(store, "mnist-aaaa11", name="mnist")
    new_job(store, "mnist-bbbb22", name="mnist")
    assert store.find_job("mnist-aaaa11").id == "mnist-aaaa11"
    assert store.find_job("mnist-b").id == "mnist-bbbb22"
    assert store.find_job("mnist").id in {"mnist-aaaa11", "mnist-bbbb22"}  # newest of the name
    assert store.find_job("nothing") is None


def test_driver_lost_is_recorded_once(store: Store) -> None:
    new_job(store, "j")
    store.mark_driver_lost("j")
    store.mark_driver_lost("j")
    assert store.job("j").driver_lost
    assert sum("driver lost" in event.message for event in store.events("j")) == 1
    store.set_driver("j", 42)
    assert not store.job("j").driver_lost


def test_two_processes_write_at_once_without_losing_anything(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    Store(db).close()
    writer = textwrap.dedent(
        """
        import sys
        from gpujobs.state import JobState, Store
        store = Store(__import__("pathlib").Path(sys.argv[1]))
        prefix = sys.argv[2]
        for i in range(150):
            job = f"{prefix}-{i}"
            store.create_job(job_id=job, name=prefix, spec_json="{}", spec_path="s",
                             runs_dir="r", driver_pid=None)
            store.transition(job, JobState.PLANNING)
            store.transition(job, JobState.SUCCEEDED)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", writer, str(db), prefix]) for prefix in ("a", "b")
    ]
    assert [proc.wait(timeout=120) for proc in procs] == [0, 0]
    store = Store(db)
    assert store.count_jobs() == 300
    assert all(record.state is JobState.SUCCEEDED for record in store.jobs())
    assert len(store.events("a-149")) == 3


def test_processes_opening_a_store_not_yet_in_wal_at_once_all_succeed(tmp_path: Path) -> None:
    """The switch to WAL does not wait on SQLite's busy timeout: the store retries it, so
    processes opening a store file still in rollback mode together never fail with "database
    is locked" (they did, about one open in fifteen)."""
    opener = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from gpujobs.state import Store
        start = float(sys.argv[2])
        while time.time() < start:
            time.sleep(0.001)
        Store(Path(sys.argv[1])).count_jobs()
        """
    )
    for index in range(4):
        sqlite3.connect(tmp_path / f"state-{index}.db").execute("CREATE TABLE t (x)").close()
    start = str(time.time() + 1.5)  # after every child has imported: they open together
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", opener, str(tmp_path / f"state-{index // 8}.db"), start],
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(32)
    ]
    errors = [proc.communicate(timeout=60)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * len(procs), errors
