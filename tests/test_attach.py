"""Client crash recovery: a job whose driver was killed (kill -9, a closed laptop) is adopted by
`gpujobs attach`, which follows its log from the byte the dead driver reached, brings its
checkpoints home and tears it down. Real processes, the real CLI."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gpujobs.api.controller import Controller
from gpujobs.errors import BadInputError
from gpujobs.lifecycle.machine import CancelToken
from gpujobs.providers.local import LocalProvider
from gpujobs.spec import load_spec
from gpujobs.state import JobState
from tests.conftest import gpujobs_cli, write_spec
from tests.test_cli import process_gone, status_json, wait_for
from tests.test_lifecycle import FAST, Recorder

COUNTING_JOB = """
name: counting
command: >-
  trap 'echo saved > "$GPUJOBS_CKPT_DIR/on-term.txt"; echo got-term; exit 0' TERM;
  i=0; while [ $i -lt 40 ]; do echo "tick $i"; echo $i > "$GPUJOBS_CKPT_DIR/ckpt.txt";
  i=$((i+1)); sleep 0.1 & wait; done; echo finished
"""


def driver_pid_of(home: Path, job_id: str) -> int:
    with sqlite3.connect(home / "state.db") as db:
        return int(db.execute("select driver_pid from jobs where id = ?", (job_id,)).fetchone()[0])


def launch_then_kill_the_driver(tmp_path: Path, text: str, until: bytes) -> tuple[str, Path]:
    spec = write_spec(tmp_path, text)
    job_id = gpujobs_cli("launch", "--detach", str(spec)).stdout.strip()
    home = tmp_path / "home"
    log = home / "logs" / f"{job_id}.log"
    wait_for(lambda: log.exists() and until in log.read_bytes(), what="the job to run")
    driver = driver_pid_of(home, job_id)
    os.kill(driver, signal.SIGKILL)
    wait_for(lambda: process_gone(driver), what="the driver to die")
    return job_id, log


def test_attach_adopts_a_job_whose_driver_died_and_finishes_it(tmp_path: Path) -> None:
    job_id, log = launch_then_kill_the_driver(tmp_path, COUNTING_JOB, b"tick 3")
    assert status_json(job_id)["driver_lost"]
    assert f"gpujobs attach {job_id}" in gpujobs_cli("status", job_id).stdout, "the hint says how"
    attached = gpujobs_cli("attach", job_id)
    assert attached.returncode == 0, attached.stderr
    assert "attached: following localhost's log from byte" in attached.stderr
    job = status_json(job_id)
    assert job["state"] == "SUCCEEDED" and not job["driver_lost"]
    lines = log.read_text().splitlines()
    assert lines == [f"tick {i}" for i in range(40)] + ["finished"], "every line, once"
    assert (Path(job["runs_dir"]) / "ckpt.txt").read_text() == "39\n", "the last checkpoint"
    assert not (tmp_path / "home" / "work" / job_id).exists(), "torn down"
    again = gpujobs_cli("attach", job_id)
    assert again.returncode == 2 and "nothing to attach to" in again.stderr


def test_attach_refuses_a_job_with_a_live_driver_and_ctrl_c_still_saves(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, COUNTING_JOB.replace("-lt 40", "-lt 600"))
    job_id = gpujobs_cli("launch", "--detach", str(spec)).stdout.strip()
    log = tmp_path / "home" / "logs" / f"{job_id}.log"
    wait_for(lambda: log.exists() and b"tick 1" in log.read_bytes(), what="the job to run")
    busy = gpujobs_cli("attach", job_id)
    assert busy.returncode == 2 and "has a live driver" in busy.stderr
    assert "Traceback" not in busy.stderr
    driver = driver_pid_of(tmp_path / "home", job_id)
    os.kill(driver, signal.SIGKILL)
    wait_for(lambda: process_gone(driver), what="the driver to die")
    attach = subprocess.Popen(
        [sys.executable, "-m", "gpujobs", "attach", job_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: b"attached by pid" in _events(tmp_path, job_id), what="the attach")
    attach.send_signal(signal.SIGINT)
    _, err = attach.communicate(timeout=60)
    assert attach.returncode == 130, err
    job = status_json(job_id)
    assert job["state"] == "CANCELLED"
    assert (Path(job["runs_dir"]) / "on-term.txt").read_text() == "saved\n"
    assert not (tmp_path / "home" / "work" / job_id).exists()


def _events(tmp_path: Path, job_id: str) -> bytes:
    with sqlite3.connect(tmp_path / "home" / "state.db") as db:
        rows = db.execute("select message from events where job_id = ?", (job_id,)).fetchall()
    return "\n".join(row[0] for row in rows).encode()


def test_a_job_whose_driver_died_before_it_got_a_node_is_launched_anew(home, store, tmp_path):

    spec_path = write_spec(
        tmp_path,
        'name: early\ncommand: \'echo "$TOKEN" > "$GPUJOBS_CKPT_DIR/t.txt"\'\n'
        "env: {TOKEN: s3cret}\n",
    )
    controller = Controller(home, store, lambda: {"local": LocalProvider(home.work)}, config=FAST)
    spec = load_spec(spec_path)
    record, lock = controller.submit(spec, spec_path, tmp_path / "runs")
    lock.release()  # the driver dies before planning
    final = controller.attach(record.id, CancelToken(), Recorder())
    assert final.state is JobState.SUCCEEDED, final.error
    # Its workload had not started: the env's real value came from the unchanged spec file.
    assert (Path(final.runs_dir) / "t.txt").read_text() == "s3cret\n"
    assert "s3cret" not in store.job(record.id).spec_json


def test_attach_refuses_a_changed_spec_for_a_job_not_yet_started(home, store, tmp_path):

    spec_path = write_spec(tmp_path, "name: early\ncommand: 'true'\nenv: {TOKEN: a}\n")
    controller = Controller(home, store, lambda: {"local": LocalProvider(home.work)})
    record, lock = controller.submit(load_spec(spec_path), spec_path, tmp_path / "runs")
    lock.release()
    spec_path.write_text("name: early\ncommand: 'rm -rf ~'\nenv: {TOKEN: a}\n")
    with pytest.raises(BadInputError, match="changed since"):
        controller.attach(record.id, CancelToken())
