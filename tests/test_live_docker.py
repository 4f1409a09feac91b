"""`gpujobs ssh` on the docker runtime: the command runs inside the job's container, in its
working folder, with a real engine."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests import docker_base
from tests.conftest import gpujobs_cli, write_spec
from tests.docker_engine import DockerEngine

pytestmark = pytest.mark.timeout(600)


def test_ssh_runs_inside_the_jobs_container(docker_engine: DockerEngine, tmp_path: Path) -> None:
    base = docker_base.ensure_test_base()
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("my code\n")
    spec = write_spec(
        tmp_path,
        f"""
        name: boxed
        runtime: docker
        image: {base}
        workdir: ./project
        command: "touch started; trap 'exit 0' TERM; while true; do sleep 1; done"
        """,
    )
    launched = gpujobs_cli("launch", "--detach", str(spec))
    assert launched.returncode == 0, launched.stderr
    job_id = launched.stdout.strip()
    try:
        deadline = time.monotonic() + 240
        while True:
            done = gpujobs_cli("ssh", job_id, "--", "ls")
            if "started" in done.stdout:
                break
            [job] = json.loads(gpujobs_cli("status", "--json").stdout)
            assert job["state"] not in ("FAILED", "SUCCEEDED", "CANCELLED"), job
            assert time.monotonic() < deadline, done.stderr
            time.sleep(0.5)
        assert "notes.txt" in done.stdout
        assert gpujobs_cli("ssh", job_id, "--", "pwd").stdout == "/workspace\n"
        # The container's own hostname, not this machine's: its hostname is the container's id.
        hostname = gpujobs_cli("ssh", job_id, "--", "hostname").stdout.strip()
        inspect = docker_engine.docker("inspect", "-f", "{{.Config.Hostname}}", f"gpujobs-{job_id}")
        assert hostname == inspect.stdout.strip()
    finally:
        assert gpujobs_cli("down", job_id).returncode == 0
