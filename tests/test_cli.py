"""The real `gpujobs` command in child processes: exit codes, signals, detach, a lost driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import gpujobs_cli, write_spec

# On TERM the job saves a checkpoint and exits 0, as the bundled workloads do. `sleep & wait`
# keeps the shell able to run its trap at once.
SLOW_JOB = """
name: slow
command: >-
  trap 'echo saved > "$GPUJOBS_CKPT_DIR/on-term.txt"; echo got-term; exit 0' TERM;
  echo started; i=0; while [ $i -lt 600 ]; do echo "tick $i"; i=$((i+1)); sleep 0.1 & wait; done
"""


def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def status_json(job: str | None = None):
    args = ["status", "--json"] + ([job] if job else [])
    done = gpujobs_cli(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie of ours counts as gone.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: a\n", "give exactly one of"),
        ("name: a\ncommand: 'true'\nnodes: x\n", ":3: nodes:"),
        ("name: a\nworkload: nope\n", "unknown workload 'nope'"),
        ("name: a\ncommand: [unclosed\n", "bad YAML"),
        ("name: a\ncommand: 'true'\nresources: {gpu: H100}\n", "no placement fits the spec"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_starts_nothing(tmp_path: Path, text, expected) -> None:
    spec = write_spec(tmp_path, text)
    done = gpujobs_cli("launch", str(spec))
    assert done.returncode == 2
    assert expected in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert status_json() == [], "no job was recorded"
    assert not any((tmp_path / "home" / "work").iterdir())


def test_missing_spec_file_and_unknown_job(tmp_path: Path) -> None:
    done = gpujobs_cli("launch", "nope.yaml")
    assert done.returncode == 2 and done.stderr.strip() == "error: nope.yaml: no such file"
    done = gpujobs_cli("logs", "nobody")
    assert done.returncode == 2 and "no job matches 'nobody'" in done.stderr


def test_launch_succeeds_and_a_second_process_reads_the_state(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "name: hello\ncommand: 'echo hello from the job'\n")
    done = gpujobs_cli("launch", str(spec))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello from the job\n", "stdout carries the job's log alone"
    assert "SUCCEEDED" in done.stderr
    [job] = status_json()
    assert job["state"] == "SUCCEEDED" and job["exit_code"] == 0 and not job["driver_lost"]
    detail = status_json("hello")
    assert [event["state"] for event in detail["events"]][-3:] == [
        "COLLECTING",
        "TEARING_DOWN",
        "SUCCEEDED",
    ]
    logs = gpujobs_cli("logs", job["id"])
    assert logs.stdout == "hello from the job\n"
    table = gpujobs_cli("status")
    assert job["id"] in table.stdout and "SUCCEEDED" in table.stdout


def test_a_failed_job_exits_1_with_its_exit_code_and_log_tail(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "name: bad\ncommand: 'echo about to fail; exit 7'\n")
    done = gpujobs_cli("launch", str(spec))
    assert done.returncode == 1
    assert "exited with code 7" in done.stderr and "about to fail" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_cancels_cleanly_and_the_checkpoint_comes_home(tmp_path: Path, signum) -> None:
    spec = write_spec(tmp_path, SLOW_JOB)
    launcher = subprocess.Popen(
        [sys.executable, "-m", "gpujobs", "launch", str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert launcher.stdout is not None
    assert launcher.stdout.readline() == "started\n"
    launcher.send_signal(signum)
    out, err = launcher.communicate(timeout=60)
    assert launcher.returncode == 130, err
    assert "got-term" in out
    [job] = status_json()
    assert job["state"] == "CANCELLED"
    assert (Path(job["runs_dir"]) / "on-term.txt").read_text() == "saved\n"
    assert not any((tmp_path / "home" / "work").iterdir())


def test_detach_then_logs_follow_from_another_process_then_down(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SLOW_JOB)
    done = gpujobs_cli("launch", "--detach", str(spec))
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    log = tmp_path / "home" / "logs" / f"{job_id}.log"
    wait_for(lambda: log.exists() and b"tick 3" in log.read_bytes(), what="the job to tick")
    follower = subprocess.Popen(
        [sys.executable, "-m", "gpujobs", "logs", "-f", job_id], stdout=subprocess.PIPE, text=True
    )
    assert status_json(job_id)["state"] == "RUNNING"
    down = gpujobs_cli("down", job_id)
    assert down.returncode == 0, down.stderr
    out, _ = follower.communicate(timeout=30)
    lines = out.splitlines()
    assert lines[0] == "started" and lines[-1] == "got-term"
    ticks = [int(line.split()[1]) for line in lines if line.startswith("tick")]
    assert ticks == list(range(len(ticks))), "no line lost or shown twice"
    job = status_json(job_id)
    assert job["state"] == "CANCELLED" and not job["driver_lost"]
    assert (Path(job["runs_dir"]) / "on-term.txt").exists()
    assert not any((tmp_path / "home" / "work").iterdir())


def test_a_killed_driver_is_shown_lost_and_down_cleans_up(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SLOW_JOB)
    job_id = gpujobs_cli("launch", "--detach", str(spec)).stdout.strip()
    log = tmp_path / "home" / "logs" / f"{job_id}.log"
    wait_for(lambda: log.exists() and b"tick 2" in log.read_bytes(), what="the job to tick")
    job = status_json(job_id)
    driver_pid = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sqlite3,sys,json; db=sqlite3.connect(sys.argv[1]); "
                "print(json.dumps(db.execute('select driver_pid from jobs').fetchone()[0]))",
                str(tmp_path / "home" / "state.db"),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    os.kill(driver_pid, signal.SIGKILL)
    wait_for(lambda: process_gone(driver_pid), what="the driver to die")
    job = status_json(job_id)
    assert job["state"] == "RUNNING" and job["driver_lost"]
    assert "driver lost" in gpujobs_cli("status").stdout
    workload_pid = int((tmp_path / "home" / "work" / job_id / "pid").read_text())
    assert not process_gone(workload_pid), "the workload survives its driver"
    down = gpujobs_cli("down", job_id)
    assert down.returncode == 0, down.stderr
    assert "tore down 1 node" in down.stderr
    job = status_json(job_id)
    assert job["state"] == "CANCELLED"
    assert (Path(job["runs_dir"]) / "on-term.txt").exists(), "down saved the checkpoint first"
    assert process_gone(workload_pid)
    assert not (tmp_path / "home" / "work" / job_id).exists()
    again = gpujobs_cli("down", job_id)
    assert again.returncode == 0 and "nothing to tear down" in again.stderr


def test_schema_and_version() -> None:
    schema = json.loads(gpujobs_cli("schema").stdout)
    assert schema["title"] == "JobSpec"
    assert gpujobs_cli("--version").stdout.startswith("gpujobs ")
