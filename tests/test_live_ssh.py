"""`gpujobs ssh`, `gpujobs ssh-config` and `gpujobs forward` against a real job on a real
loopback sshd: a command runs in the job's folder with the job's key and pinned host key, and a
port served on the node is reachable on localhost, also after the link was cut."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpujobs.testing.ssh import CuttingProxy, LoopbackSshd, free_port
from tests.conftest import gpujobs_cli, write_spec

# marker.txt says a command ran in the job's folder.
_JOB = "echo in-the-job-folder > marker.txt && exec sleep 300"


def _wait_running(job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [job] = json.loads(gpujobs_cli("status", "--json").stdout)
        if job["state"] == "RUNNING":
            return job
        assert job["state"] not in ("FAILED", "CANCELLED", "SUCCEEDED"), job
        time.sleep(0.3)
    raise AssertionError(f"{job_id} never ran")


def _get(url: str, timeout: float = 20) -> str:
    """GET, retried while the server on the node is starting or the link comes back."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=5).text
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def node_job(sshd: LoopbackSshd, tmp_path: Path) -> Iterator[tuple[str, int, CuttingProxy]]:
    """A detached job on a node that serves HTTP on its loopback (TensorBoard, say), reached
    through a link that can be cut. The node is this machine: the server runs before the
    launch, so the driver's own forward of `ports` finds the number taken here and picks
    another, as it would on a laptop already using it."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "marker.txt").write_text("served-from-node\n")
    server = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "-d", str(served)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert server.stdout is not None
    port = int(server.stdout.readline().split(" port ")[1].split()[0])
    with CuttingProxy(sshd.port) as link:
        spec = write_spec(
            tmp_path,
            f"""
            name: served
            command: "{_JOB}"
            runtime: host
            providers: [ssh]
            ports: [{port}]
            ssh:
              hosts: ["{sshd.user}@127.0.0.1:{link.port}"]
              identity_file: {sshd.client_key}
              workdir: {tmp_path / "lab machine"}
            """,
        )
        launched = gpujobs_cli("launch", "--detach", str(spec))
        assert launched.returncode == 0, launched.stderr
        job_id = launched.stdout.strip()
        try:
            _wait_running(job_id)
            yield job_id, port, link
        finally:
            done = gpujobs_cli("down", job_id)
            server.terminate()
            server.wait(timeout=10)
            assert done.returncode == 0, done.stderr


def test_ssh_runs_a_command_in_the_jobs_folder_over_its_pinned_key(
    node_job: tuple[str, int, CuttingProxy], tmp_path: Path
) -> None:
    job_id, _port, _link = node_job
    deadline = time.monotonic() + 20
    while True:  # the job writes marker.txt as it starts
        done = gpujobs_cli("ssh", job_id, "--", "cat marker.txt")
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "in-the-job-folder\n"
    # Several words are a command and its arguments, each quoted as given.
    done = gpujobs_cli("ssh", job_id, "--", "printf", "%s|", "a b", "$HOME", ";id")
    assert done.stdout == "a b|$HOME|;id|", done.stderr
    pwd = gpujobs_cli("ssh", job_id, "--", "pwd").stdout.strip()
    assert pwd.startswith(str(tmp_path / "lab machine" / "work")) and pwd.endswith(job_id)
    # The exit status of the command on the node is ours.
    assert gpujobs_cli("ssh", job_id, "--", "exit 7").returncode == 7
    config = tmp_path / "home" / "ssh" / f"gpujobs-{job_id}.conf"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    text = config.read_text()
    assert "StrictHostKeyChecking yes" in text and "PRIVATE KEY" not in text
    assert f"UserKnownHostsFile {tmp_path / 'home' / 'known_hosts'}" in text


def test_ssh_config_entries_work_with_the_system_ssh(
    node_job: tuple[str, int, CuttingProxy], tmp_path: Path
) -> None:
    job_id, _port, link = node_job
    printed = gpujobs_cli("ssh-config")
    assert printed.returncode == 0, printed.stderr
    assert f"Host gpujobs-{job_id}\n" in printed.stdout
    assert f"Port {link.port}" in printed.stdout
    config = tmp_path / "vscode-ssh-config"
    config.write_text(printed.stdout)
    done = subprocess.run(
        ["ssh", "-F", str(config), "-T", f"gpujobs-{job_id}", "echo reached"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "reached\n"
    [entry] = json.loads(gpujobs_cli("ssh-config", "--json").stdout)
    assert entry["host_alias"] == f"gpujobs-{job_id}" and entry["port"] == link.port
    assert entry["container"] is None and entry["folder"].endswith(f"{job_id}")


def test_forward_reaches_the_nodes_port_and_recovers_after_a_cut(
    node_job: tuple[str, int, CuttingProxy],
) -> None:
    job_id, port, link = node_job
    local = free_port()
    forward = subprocess.Popen(
        [sys.executable, "-m", "gpujobs", "forward", job_id, f"{port}:{local}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()
        assert line.startswith(f"http://127.0.0.1:{local}  ->  gpujobs-{job_id}:{port}"), line
        url = f"http://127.0.0.1:{local}/marker.txt"
        assert _get(url) == "served-from-node\n"
        assert link.cut() >= 1, "the forward's SSH connection went through the link"
        assert _get(url) == "served-from-node\n", "the forward reconnected"
        assert forward.poll() is None
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def test_ssh_into_a_finished_job_says_why_it_cannot(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "name: quick\ncommand: 'true'\n")
    assert gpujobs_cli("launch", str(spec)).returncode == 0
    [job] = json.loads(gpujobs_cli("status", "--json").stdout)
    done = gpujobs_cli("ssh", job["id"], "--", "true")
    assert done.returncode == 2
    assert "SUCCEEDED: its nodes are gone" in done.stderr and "Traceback" not in done.stderr
    assert gpujobs_cli("forward", job["id"], "80:x").returncode == 2


def test_ssh_on_a_local_job_runs_in_its_folder(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "name: waits\ncommand: 'touch here.txt; sleep 60'\n")
    launched = gpujobs_cli("launch", "--detach", str(spec))
    job_id = launched.stdout.strip()
    try:
        _wait_running(job_id)
        deadline = time.monotonic() + 20
        while "here.txt" not in (listing := gpujobs_cli("ssh", job_id, "--", "ls").stdout):
            assert time.monotonic() < deadline, listing
            time.sleep(0.3)
        pwd = gpujobs_cli("ssh", job_id, "--", "pwd").stdout.strip()
        assert pwd == str(tmp_path / "home" / "work" / job_id)
    finally:
        gpujobs_cli("down", job_id)


def test_the_driver_forwards_the_specs_ports_while_the_job_runs(
    node_job: tuple[str, int, CuttingProxy], tmp_path: Path
) -> None:
    job_id, port, _link = node_job
    driver_log = tmp_path / "home" / "logs" / f"{job_id}.driver.log"
    deadline = time.monotonic() + 20
    mark = f"port {port}: http://127.0.0.1:"
    while mark not in (text := driver_log.read_text() if driver_log.exists() else ""):
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
    local = int(text.split(mark, 1)[1].split()[0])
    assert local != port, "the node's number is taken here: another was found"
    assert _get(f"http://127.0.0.1:{local}/marker.txt") == "served-from-node\n"
