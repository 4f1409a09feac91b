"""A job whose driver died ends as its workload really did (issue 24, items 5 and 6).

Real processes and the real CLI: the driver is SIGKILLed, the workload goes on (or never
started), and then `gpujobs down` or `gpujobs attach` finishes the job's story truthfully.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import gpujobs_cli
from tests.test_attach import launch_then_kill_the_driver
from tests.test_cli import status_json, wait_for

QUICK_JOB = """
name: quick
command: >-
  echo started; i=0; while [ $i -lt 15 ]; do echo "tick $i"; i=$((i+1)); sleep 0.1; done;
  echo done > "$GPUJOBS_CKPT_DIR/result.txt"; echo finished
"""


def test_down_after_the_workload_finished_on_its_own_says_succeeded(tmp_path: Path) -> None:
    job_id, _ = launch_then_kill_the_driver(tmp_path, QUICK_JOB, b"started")
    workdir = tmp_path / "home" / "work" / job_id
    wait_for(lambda: (workdir / "exit_code").exists(), what="the workload to end by itself")
    down = gpujobs_cli("down", job_id)
    assert down.returncode == 0, down.stderr
    job = status_json(job_id)
    assert job["state"] == "SUCCEEDED", job
    runs = Path(job["runs_dir"])
    assert (runs / "result.txt").read_text() == "done\n"
    home_log = (runs / "job.log").read_text()
    assert "tick 14" in home_log and "finished" in home_log, "the whole log came home"
    assert not workdir.exists()


def test_down_after_the_workload_failed_on_its_own_says_failed(tmp_path: Path) -> None:
    text = QUICK_JOB.replace("echo finished", "echo failing; exit 7")
    job_id, _ = launch_then_kill_the_driver(tmp_path, text, b"started")
    workdir = tmp_path / "home" / "work" / job_id
    wait_for(lambda: (workdir / "exit_code").exists(), what="the workload to end by itself")
    assert gpujobs_cli("down", job_id).returncode == 0
    job = status_json(job_id)
    assert job["state"] == "FAILED" and job["exit_code"] == 7, job
    assert "failing" in (Path(job["runs_dir"]) / "job.log").read_text()


def test_down_of_a_running_orphan_still_cancels_it(tmp_path: Path) -> None:
    text = QUICK_JOB.replace("-lt 15", "-lt 600")
    job_id, _ = launch_then_kill_the_driver(tmp_path, text, b"tick 2")
    started = time.monotonic()
    assert gpujobs_cli("down", job_id).returncode == 0
    assert time.monotonic() - started < 30
    assert status_json(job_id)["state"] == "CANCELLED"


def test_attach_starts_a_workload_whose_driver_died_just_before_starting_it(
    tmp_path: Path,
) -> None:
    """The driver records RUNNING, then dies before the workload's start (os._exit in place of
    the start: as abrupt as a SIGKILL at that instant). `attach` starts it, not "vanished"."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(QUICK_JOB)
    dies_before_start = (
        "import os, sys\n"
        "from gpujobs.lifecycle import node_session\n"
        "node_session.NodeSession.start = lambda self, *a, **k: os._exit(9)\n"
        "from gpujobs.cli.app import main\n"
        f"sys.argv = ['gpujobs', 'launch', {str(spec)!r}]\n"
        "main()\n"
    )
    died = subprocess.run(
        [sys.executable, "-c", dies_before_start], capture_output=True, text=True, timeout=120
    )
    assert died.returncode == 9, died.stderr
    [job] = json.loads(gpujobs_cli("status", "--json").stdout)
    assert job["state"] == "RUNNING" and job["driver_lost"]
    attached = gpujobs_cli("attach", job["id"])
    assert attached.returncode == 0, attached.stderr
    assert "had not started" in attached.stderr
    job = status_json(job["id"])
    assert job["state"] == "SUCCEEDED", job
    assert (Path(job["runs_dir"]) / "result.txt").read_text() == "done\n"
