"""`gpujobs ssh` on the docker runtime: the command runs inside the job's container, in its
working folder, with a real engine."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests import docker_base
from tests.conftest import gpujobs_cli, write_spec, write_stubs
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


def test_the_container_publishes_the_specs_ports_on_the_nodes_loopback_only() -> None:
    from gpujobs.runtime.docker import DockerRuntime
    from gpujobs.runtime.node_layout import NodeLayout
    from gpujobs.spec import JobSpec

    spec = JobSpec.model_validate({"name": "tb", "command": "true", "ports": [6006, 8888]})
    runtime = DockerRuntime("tb-1")
    argv = runtime.argv(spec, NodeLayout("/w/tb-1"))
    published = [argv[i + 1] for i, word in enumerate(argv) if word == "-p"]
    assert published == ["127.0.0.1:6006:6006", "127.0.0.1:8888:8888"]
    runtime.network = "host"  # an engine without a bridge: the ports are the host's already
    assert "-p" not in runtime.argv(spec, NodeLayout("/w/tb-1"))


def test_a_command_for_the_container_is_quoted_word_by_word(tmp_path: Path) -> None:
    from gpujobs.api.live import NodeAccess, node_script
    from gpujobs.models import Node

    node = Node(provider="aws", job_id="j-1", node_id="i-1", host="203.0.113.9", workdir="/w/j-1")
    access = NodeAccess("j-1", node, "gpujobs-j-1", None, "/w/j-1/src", "gpujobs-j-1", "/workspace")
    script = node_script(access, ["python3", "-c", "print('a b; $HOME')"], tty=False)
    assert script.startswith("exec docker exec -i -w /workspace gpujobs-j-1 sh -c ")
    # A stand-in docker that runs what follows the container's name: the words arrive intact.
    stubs = write_stubs(tmp_path / "bin", {"docker": 'shift 5; exec "$@"'})
    done = subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"},
    )
    assert done.stdout == "a b; $HOME\n", done.stderr
