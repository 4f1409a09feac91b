"""This machine's disk fills up (issue 24, items 2 and 3): a local write error is a local error.

Real tmpfs mounts of a few MB stand in for a full disk: the runs folder (checkpoints come home
there) and GPUJOBS_HOME (the store, the logs). The node is healthy throughout, so the job is
never taken for lost, never restarted, and the message says how much room is needed.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpujobs.testing.ssh import LoopbackSshd
from tests.conftest import gpujobs_cli, write_spec


@contextlib.contextmanager
def small_disk(path: Path, megabytes: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs in CI: {mounted.stderr.strip()}")
        pytest.skip(f"a small disk needs `mount -t tmpfs` (root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


BIG_CHECKPOINTS = """
name: fills-the-disk
command: >-
  for i in 1 2 3; do head -c 3000000 /dev/urandom > "$GPUJOBS_CKPT_DIR/ckpt-$i.bin"; done;
  echo wrote-checkpoints
"""


def test_a_full_runs_disk_during_the_pull_is_no_lost_node(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    with small_disk(tmp_path / "small-runs", 4) as runs:
        spec = write_spec(
            tmp_path,
            BIG_CHECKPOINTS
            + f"""
providers: [ssh]
ssh:
  hosts: ["{sshd.target}"]
  identity_file: {sshd.client_key}
  workdir: {tmp_path / "lab"}
""",
        )
        started = time.monotonic()
        done = gpujobs_cli("launch", str(spec), "--runs-dir", str(runs), timeout=200)
        took = time.monotonic() - started
    assert took < 60, f"a local disk error took {took:.0f}s: retried as a lost link?"
    assert "RECOVERING" not in done.stderr, "a healthy node was taken for lost"
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "not enough room for the checkpoints" in done.stderr
    assert "they need 9.0 MB" in done.stderr, "says how much room the checkpoints need"
    [job] = json.loads(gpujobs_cli("status", "--json").stdout)
    assert job["restarts"] == 0


def test_a_full_home_disk_mid_run_stops_the_job_cleanly(sshd: LoopbackSshd, tmp_path: Path) -> None:
    """GPUJOBS_HOME's disk fills while the job runs (the store and the log cannot be written):
    the driver stops the workload (no process left), removes the job's folder, says how much
    room to free, and `status` works again once there is room."""
    marker = f"gpujobs-home-full-{os.getpid()}"
    with small_disk(tmp_path / "small-home", 6) as home:
        filler = home / "filler"
        spec = write_spec(
            tmp_path,
            f"""
name: fills-home
command: >-
  echo started; sleep 1; head -c 7000000 /dev/zero > {filler};
  for i in $(seq 200); do echo "line $i of a long log"; done;
  exec -a {marker} sleep 120
providers: [ssh]
ssh:
  hosts: ["{sshd.target}"]
  identity_file: {sshd.client_key}
  workdir: {tmp_path / "lab"}
""",
        )
        env = {**os.environ, "GPUJOBS_HOME": str(home)}
        started = time.monotonic()
        done = gpujobs_cli("launch", str(spec), "--runs-dir", str(tmp_path / "runs"), env=env,
                           timeout=150)  # fmt: skip
        took = time.monotonic() - started
        left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout
        assert not left.strip(), f"the workload outlived its driver: pids {left.split()}"
        assert took < 60, f"took {took:.0f}s: it waited for the workload instead of stopping it"
        assert done.returncode != 0
        assert "Traceback" not in done.stderr, done.stderr[-2000:]
        said = " ".join(done.stderr.split())  # rich wraps long lines
        assert f"failed: the disk of {home} is full" in said, said[-2000:]
        assert "free at least 64 MB there" in said and "unknown error" not in said
        assert not list((tmp_path / "lab" / "work").iterdir()), "the job's folder was removed"
        filler.unlink()
        after = gpujobs_cli("status", "--json", env=env)
        assert after.returncode == 0, after.stderr
