"""Wall time of `gpujobs --help` and of `gpujobs status` with 10,000 jobs stored, each beside a
bare `python -c pass` measured in the same run (these machines are noisy; compare, don't trust
absolute numbers). Targets: --help <= 0.15 s, status <= 0.25 s.

    python tests/bench/cli_latency.py [--jobs 10000] [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gpujobs.state import JobState, Store

TARGETS = {"gpujobs --help": 0.15, "gpujobs status": 0.25}
STATES = [JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED]


def fill(home: Path, jobs: int) -> None:
    store = Store(home / "state.db")
    started = time.perf_counter()
    for index in range(jobs):
        job_id = f"bench-{index:06d}"
        store.create_job(
            job_id=job_id,
            name="bench",
            spec_json="{}",
            spec_path="/b.yaml",
            runs_dir=f"/runs/{job_id}",
            driver_pid=None,
            now=1.7e9 + index,
        )
        for state in (JobState.PLANNING, JobState.RUNNING, STATES[index % 3]):
            store.transition(job_id, state, now=1.7e9 + index + 1)
    store.close()
    print(f"stored {jobs} jobs in {time.perf_counter() - started:.1f}s")


def timed(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(
            argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
        )
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=15)
    options = parser.parse_args()
    gpujobs = shutil.which("gpujobs") or sys.exit("the gpujobs command is not installed")
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "GPUJOBS_HOME": folder, "COLUMNS": "120"}
        fill(Path(folder), options.jobs)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "gpujobs --help": [gpujobs, "--help"],
            "gpujobs status": [gpujobs, "status"],
        }
        for argv in commands.values():  # warm the page cache once
            subprocess.run(argv, env=env, capture_output=True, check=True)
        print(f"{'command':<18}{'median':>9}{'min':>9}{'minus python':>14}{'target':>9}")
        baseline = statistics.median(timed(commands["python -c pass"], env, options.runs))
        for label, argv in commands.items():
            times = timed(argv, env, options.runs)
            median = statistics.median(times)
            target = TARGETS.get(label)
            verdict = "" if target is None else ("  ok" if median <= target else "  MISSED")
            print(
                f"{label:<18}{median:>8.3f}s{min(times):>8.3f}s{median - baseline:>13.3f}s"
                f"{(f'{target:.2f}s' if target else '-'):>9}{verdict}"
            )


if __name__ == "__main__":
    main()
