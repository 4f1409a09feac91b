"""Wall time of `gpujobs --help` and of `gpujobs status` with 10,000 jobs stored, each beside a
bare `python -c pass` measured in the same run (these machines are noisy; compare, don't trust
absolute numbers). Targets: --help <= 0.15 s, status <= 0.25 s.

With `--baseline REV`, the same commands of that git revision (exported to a temporary folder
and run with PYTHONPATH pointing at it) are timed in the same run, interleaved run by run with
this tree's, so a change's cost shows beside what it replaced.

    python tests/bench/cli_latency.py [--jobs 10000] [--runs 15] [--baseline ed990ad]
"""

from __future__ import annotations

import argparse
import os
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


def exported(revision: str, into: Path) -> Path:
    """The tree of `revision`, as files (git archive), for running the old code beside."""
    repo = Path(__file__).resolve().parents[2]
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", revision, "gpujobs", "jobs"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--baseline", help="a git revision to time beside this tree")
    options = parser.parse_args()
    here = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as old:
        env = {**os.environ, "GPUJOBS_HOME": folder, "COLUMNS": "120"}
        fill(Path(folder), options.jobs)
        trees = {"": here}
        if options.baseline:
            trees[f" @{options.baseline}"] = exported(options.baseline, Path(old))
        envs = {suffix: {**env, "PYTHONPATH": str(tree)} for suffix, tree in trees.items()}
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "python -c pass": ([sys.executable, "-c", "pass"], env)
        }
        for suffix, tree_env in envs.items():
            commands[f"gpujobs --help{suffix}"] = ([sys.executable, "-m", "gpujobs", "--help"],
                                                   tree_env)  # fmt: skip
            commands[f"gpujobs status{suffix}"] = ([sys.executable, "-m", "gpujobs", "status"],
                                                   tree_env)  # fmt: skip
        for argv, run_env in commands.values():  # warm the page cache (and bytecode) once
            subprocess.run(argv, env=run_env, capture_output=True, check=True)
        times: dict[str, list[float]] = {label: [] for label in commands}
        for _ in range(options.runs):  # interleaved: a noisy second hurts every command alike
            for label, (argv, run_env) in commands.items():
                times[label] += timed(argv, run_env, 1)
        width = max(len(label) for label in commands) + 2
        print(f"{'command':<{width}}{'median':>9}{'min':>9}{'minus python':>14}{'target':>9}")
        baseline = statistics.median(times["python -c pass"])
        for label, samples in times.items():
            median = statistics.median(samples)
            target = TARGETS.get(label)
            verdict = "" if target is None else ("  ok" if median <= target else "  MISSED")
            print(
                f"{label:<{width}}{median:>8.3f}s{min(samples):>8.3f}s"
                f"{median - baseline:>13.3f}s{(f'{target:.2f}s' if target else '-'):>9}{verdict}"
            )


if __name__ == "__main__":
    main()
