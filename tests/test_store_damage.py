"""A damaged store names its path and the way out; `gpujobs doctor` rebuilds it from every row
it can read, keeping the damaged file (issue 24, item 10)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from gpujobs.state import Store
from tests.conftest import gpujobs_cli
from tests.test_status_scale import fill


def with_ledger(home: Path, jobs: int) -> None:
    fill(home, jobs, 0)
    with sqlite3.connect(home / "state.db") as db:
        db.executemany(
            "INSERT INTO ledger VALUES (?, ?, 'aws', 'g4dn.xlarge', 'us-east-1', 0, 0.526, ?, ?, "
            "NULL)",
            [(f"job-{i:06d}", f"job-{i:06d}-0", 1000.0 + i, 4600.0 + i) for i in range(jobs)],
        )
    with sqlite3.connect(home / "state.db") as db:  # everything into the main file
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def test_a_store_whose_header_was_overwritten_is_named_and_rebuilt_whole(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with_ledger(home, 500)
    db = home / "state.db"
    with db.open("r+b") as handle:
        handle.write(b"garbage garbage!")
    broken = gpujobs_cli("status")
    assert broken.returncode == 1
    assert str(db) in broken.stderr and "gpujobs doctor" in broken.stderr
    assert "internal error" not in broken.stderr and "Traceback" not in broken.stderr
    fixed = gpujobs_cli("doctor", "--json")
    assert fixed.returncode == 0, fixed.stderr
    report = json.loads(fixed.stdout)
    assert not report["healthy"] and Path(report["moved_to"]).exists()
    assert report["kept"]["jobs"] == 500 and report["kept"]["ledger"] == 500
    assert len(json.loads(gpujobs_cli("status", "--all", "--json").stdout)) == 100
    assert json.loads(gpujobs_cli("doctor", "--json").stdout)["healthy"]


def test_a_damaged_page_loses_only_its_rows(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with_ledger(home, 3000)
    db = home / "state.db"
    page = 4096
    size = db.stat().st_size
    with db.open("r+b") as handle:  # a page in the middle of the file: some rows of one table
        handle.seek((size // page // 2) * page)
        handle.write(b"\xff" * page)
    fixed = gpujobs_cli("doctor", "--json")
    assert fixed.returncode == 0, fixed.stderr
    report = json.loads(fixed.stdout)
    assert not report["healthy"]
    kept = report["kept"]
    assert kept["jobs"] + kept["ledger"] >= 3000, "most rows survive one bad page"
    store = Store(db)
    assert store.count_jobs() == kept["jobs"]
    assert len(store.ledger()) == kept["ledger"]
