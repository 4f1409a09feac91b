"""`gpujobs dev`: JupyterLab on the node with the code and dataset in place, reachable here with
its token; a notebook cell run through Jupyter's REST and websocket API writes a file that comes
home when the idle stop ends the session. The idle rule itself runs on a fake clock."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from gpujobs.api.dev import Activity, IdleWatch
from gpujobs.testing import FakeClock
from gpujobs.testing.ssh import LoopbackSshd, free_port
from tests.conftest import write_spec

pytest.importorskip("jupyterlab", reason="pip install jupyterlab (in the dev extra)")
websocket = pytest.importorskip("websocket", reason="pip install websocket-client (dev extra)")


def test_the_idle_stop_fires_after_idle_minutes_on_a_fake_clock() -> None:
    clock = FakeClock()
    watch = IdleWatch(clock, idle_s=30 * 60)
    quiet = Activity(marker="t0", busy=False)
    assert not watch.observe(quiet)
    clock.advance(20 * 60)
    assert not watch.observe(Activity(marker="t1", busy=False)), "someone typed: activity"
    clock.advance(29 * 60)
    assert not watch.observe(Activity(marker="t1", busy=False))
    clock.advance(2 * 60)
    assert not watch.observe(Activity(marker="t1", busy=True)), "a kernel (or GPU) is busy"
    clock.advance(30 * 60 - 1)
    assert not watch.observe(Activity(marker="t1", busy=False))
    clock.advance(1)
    assert watch.observe(Activity(marker="t1", busy=False))
    assert watch.idle_for_s == 30 * 60


def _execute(base: str, token: str, kernel_id: str, code: str) -> dict:
    """One cell through the kernel's websocket channel, as JupyterLab's frontend sends it."""
    ws = websocket.create_connection(
        f"ws://{base.removeprefix('http://')}/api/kernels/{kernel_id}/channels?token={token}",
        timeout=60,
    )
    try:
        msg_id = uuid.uuid4().hex
        ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "username": "test",
                        "session": uuid.uuid4().hex,
                        "msg_type": "execute_request",
                        "version": "5.3",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": True,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                    "channel": "shell",
                }
            )
        )
        while True:
            reply = json.loads(ws.recv())
            if (
                reply.get("msg_type") == "execute_reply"
                and reply["parent_header"].get("msg_id") == msg_id
            ):
                return reply["content"]
    finally:
        ws.close()


@pytest.mark.timeout(120)
def _session_url(session: subprocess.Popen[str]) -> tuple[str, str, str]:
    """The URL and token `gpujobs dev` prints, once JupyterLab answers there."""
    assert session.stderr is not None
    seen = []
    for line in session.stderr:
        seen.append(line)
        if found := re.search(r"JupyterLab: (http://127\.0\.0\.1:\d+)/lab\?token=(\S+)", line):
            break
    else:
        raise AssertionError("".join(seen))
    base, token = found.group(1), found.group(2)
    deadline = time.monotonic() + 60
    while True:  # the server starts after the URL is printed
        try:
            status = httpx.get(f"{base}/api/status", params={"token": token}, timeout=5)
            if status.status_code == 200:
                return base, token, "".join(seen)
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "JupyterLab never answered"
        time.sleep(0.3)


def _kernel(base: str, token: str) -> str:
    started = httpx.post(
        f"{base}/api/kernels", params={"token": token}, json={"name": "python3"}, timeout=60
    )
    return str(started.raise_for_status().json()["id"])


def test_a_dev_session_runs_a_notebook_cell_and_its_outputs_come_home(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "analysis.ipynb").write_text(
        '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    )
    data = tmp_path / "data"
    data.mkdir()
    for index in range(3):
        (data / f"img{index}.txt").write_text(str(index))
    port = free_port()
    spec = write_spec(
        tmp_path,
        f"""
        name: notebook
        workdir: ./project
        dataset: {{source: ./data}}
        budget: {{max_hours: 1}}
        dev: {{port: {port}, idle_minutes: 0.1}}
        """,
    )
    session = subprocess.Popen(
        [sys.executable, "-m", "gpujobs", "dev", str(spec)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "COLUMNS": "500"},  # the URL on one line
    )
    try:
        base, token, seen = _session_url(session)
        assert httpx.get(f"{base}/api/status", timeout=5).status_code == 403, "a token is needed"
        assert httpx.get(f"{base}/lab", params={"token": token}, timeout=10).status_code == 200
        kernel_id = _kernel(base, token)
        reply = _execute(
            base,
            token,
            kernel_id,
            "import os, pathlib\n"
            "names = sorted(os.listdir(os.environ['GPUJOBS_DATA_DIR']))\n"
            "pathlib.Path('from_notebook.txt').write_text(','.join(names))\n",
        )
        assert reply["status"] == "ok", reply
        rest = session.stderr.read()  # to the end: the idle stop ends the session
        assert session.wait(timeout=120) == 0, seen + rest
    finally:
        if session.poll() is None:
            session.terminate()
            session.wait(timeout=60)
    assert "idle stop: idle for" in rest
    [runs] = list((tmp_path / "runs").iterdir())
    assert (runs / "from_notebook.txt").read_text() == "img0.txt,img1.txt,img2.txt"
    assert (runs / "analysis.ipynb").exists(), "the code folder's notebooks came home too"
    assert token not in (tmp_path / "home" / "state.db").read_bytes().decode("latin-1")


@pytest.mark.timeout(120)
def test_a_dev_session_over_ssh_is_forwarded_and_stops_when_idle(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    """The same session on a lab machine over the loopback sshd: JupyterLab is reached through
    the job's SSH forward, and the idle stop brings the notebook's file home."""
    port = free_port()
    spec = write_spec(
        tmp_path,
        f"""
        name: lab-notebook
        runtime: host
        providers: [ssh]
        ssh:
          hosts: ["{sshd.target}"]
          identity_file: {sshd.client_key}
          workdir: {tmp_path / "lab machine"}
        env: {{PATH: "{Path(sys.executable).parent}:/usr/bin:/bin"}}
        dev: {{port: {port}, idle_minutes: 0.1}}
        """,
    )
    session = subprocess.Popen(
        [sys.executable, "-m", "gpujobs", "dev", str(spec)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "COLUMNS": "500"},
    )
    try:
        base, token, seen = _session_url(session)
        kernel = _kernel(base, token)
        reply = _execute(
            base, token, kernel, "import pathlib; pathlib.Path('over_ssh.txt').write_text('ok')"
        )
        assert reply["status"] == "ok", reply
        rest = session.stderr.read()
        assert session.wait(timeout=90) == 0, seen + rest
    finally:
        if session.poll() is None:
            session.terminate()
            session.wait(timeout=60)
    [runs] = list((tmp_path / "runs").iterdir())
    assert (runs / "over_ssh.txt").read_text() == "ok"
