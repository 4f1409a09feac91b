"""`gpujobs status` with many jobs stored: gpujobs' time beside a bare baseline, same run.

Fills a fresh GPUJOBS_HOME with N finished jobs (each with a ledger row and two events, like a
real one) plus `--lost` jobs whose driver is gone, then times, as a user runs them:
  gpujobs status, gpujobs status --all (its first page), gpujobs budget
beside two baselines: `python3 -c "import sqlite3; <read the newest 20 jobs>"` (interpreter start
plus the one query a status needs at least), and `gpujobs status` with no job stored (gpujobs'
own start-up). Targets (issue 25): status <= 0.15 s at 10,000 jobs and <= 0.3 s at 100,000;
"beyond no-jobs" is what the stored jobs cost.

    python3 tests/bench/status.py --jobs 10000 100000 --lost 2000
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpujobs.state import Store

SPEC = json.dumps({"name": "bench", "command": "echo hi"})


def fill(home: Path, count: int, lost: int) -> None:
    store = Store(home / "state.db")  # creates the schema
    store.close()
    db = sqlite3.connect(home / "state.db")
    now = time.time() - count
    rows, ledger, events = [], [], []
    for i in range(count + lost):
        job_id = f"bench-{i:07d}"
        finished = i < count
        state = "SUCCEEDED" if finished else "RUNNING"
        created = now + i
        rows.append(
            (job_id, "bench", state, SPEC, "spec.yaml", f"runs/{job_id}", created, created,
             created + 1 if finished else None, "local/this-machine", 0 if finished else None,
             None, 999_999 if not finished else None, 0)
        )  # fmt: skip
        ledger.append((job_id, f"{job_id}-0", "local", "this-machine", "local", 0, 0.5, created,
                       created + 1 if finished else None, None))  # fmt: skip
        events.append((job_id, created, "PENDING", "job created"))
        events.append((job_id, created + 1, state, ""))
    with db:
        db.executemany(
            "INSERT INTO jobs (id, name, state, spec_json, spec_path, runs_dir, created_at, "
            "updated_at, finished_at, placement, exit_code, error, driver_pid, driver_lost) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.executemany("INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", ledger)
        db.executemany("INSERT INTO events (job_id, ts, state, message) VALUES (?, ?, ?, ?)",
                       events)  # fmt: skip
    db.close()


def timed(argv: list[str], env: dict[str, str], repeat: int) -> tuple[float, int]:
    """Median wall seconds, and the peak RSS in MB of the last run's child."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {done.stderr[-500:]}")
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    return statistics.median(times), peak_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--lost", type=int, default=0, help="jobs whose driver is gone")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    baseline_code = (
        "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
        "db.execute('SELECT * FROM jobs ORDER BY created_at DESC LIMIT 20').fetchall()"
    )
    with tempfile.TemporaryDirectory(prefix="gpujobs-bench-status-empty-") as empty:
        env = {**os.environ, "GPUJOBS_HOME": empty}
        start_up, _ = timed([sys.executable, "-m", "gpujobs", "status"], env, args.repeat)
    print(f"gpujobs status with no job stored (start-up, imports): {start_up:.3f} s")
    print(
        f"{'jobs':>8} {'command':<16} {'gpujobs s':>10} {'sqlite s':>9} {'beyond sqlite':>14} "
        f"{'beyond no-jobs':>15}"
    )
    for count in args.jobs:
        with tempfile.TemporaryDirectory(prefix="gpujobs-bench-status-") as folder:
            home = Path(folder)
            fill(home, count, args.lost)
            env = {**os.environ, "GPUJOBS_HOME": str(home)}
            base, _ = timed([sys.executable, "-c", baseline_code, str(home / "state.db")], env,
                            args.repeat)  # fmt: skip
            gpujobs = [sys.executable, "-m", "gpujobs"]
            for label, argv in (
                ("status", ["status"]),
                ("status --json", ["status", "--json"]),
                ("status --all", ["status", "--all"]),
                ("budget", ["budget"]),
            ):
                took, _ = timed(gpujobs + argv, env, args.repeat)
                print(
                    f"{count:>8} {label:<16} {took:>10.3f} {base:>9.3f} {took - base:>14.3f} "
                    f"{took - start_up:>15.3f}"
                )


if __name__ == "__main__":
    main()
