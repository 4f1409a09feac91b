"""The docker runtime end to end with a real engine: `gpujobs launch` with `runtime: docker` on
this machine and over the loopback sshd. The node builds the workload image itself from the
shipped Dockerfile (on the offline test base, through GPUJOBS_IMAGE_BASE/WHEELS), the container
trains, checkpoints come home owned by the node's user, and no container is left; a second
launch finds the image by its content tag; Ctrl-C saves a checkpoint from inside the container;
a `command:` job runs your code in an image of your own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gpujobs.testing.ssh import LoopbackSshd
from tests import docker_base
from tests.conftest import gpujobs_cli, write_spec
from tests.docker_engine import DockerEngine

pytestmark = pytest.mark.timeout(1800)

MNIST = """
name: {name}
workload: mnist_cnn
runtime: docker
args: {{synthetic: {samples}, epochs: {epochs}, batch_size: 16, seed: 1, threads: 1}}
checkpoints: {{every_minutes: 0.02, keep: 2}}
{extra}
"""


def job_json(ref: str | None = None) -> dict:
    args = ["status", "--json"] + ([ref] if ref else [])
    listed = json.loads(gpujobs_cli(*args).stdout)
    return listed if ref else listed[0]


def setting_up_seconds(job_id: str) -> float:
    events = job_json(job_id)["events"]
    start = next(e["ts"] for e in events if e["state"] == "SETTING_UP")
    end = next(e["ts"] for e in events if e["state"] == "SYNCING")
    return end - start


def containers_of(engine: DockerEngine, job_id: str) -> list[str]:
    return engine.docker("ps", "-aq", "--filter", f"label=gpujobs-job={job_id}").stdout.split()


def test_the_node_builds_the_image_once_and_the_container_trains(
    docker_engine: DockerEngine, offline_build: str, tmp_path: Path
) -> None:
    docker_engine.docker("rmi", "-f", offline_build, check=False)  # the node must build it
    spec = write_spec(tmp_path, MNIST.format(name="in-docker", samples=96, epochs=1, extra=""))
    first = gpujobs_cli("launch", str(spec), timeout=1500)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "building the workload image" in first.stderr
    assert "epoch 1/1" in first.stdout, "the container's training log streamed"
    job = job_json()
    checkpoints = sorted(Path(job["runs_dir"]).glob("ckpt-*.pt"))
    assert checkpoints and checkpoints[-1].stat().st_uid == os.getuid()
    assert torch.load(checkpoints[-1], map_location="cpu", weights_only=False)["epoch"] >= 0
    assert docker_base.image_exists(offline_build), "tagged by its content"
    assert containers_of(docker_engine, job["id"]) == [], "the container went with the job"

    second = gpujobs_cli("launch", str(spec), timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "building the workload image" not in second.stderr
    again = job_json()
    built, reused = setting_up_seconds(job["id"]), setting_up_seconds(again["id"])
    print(f"setting up: {built:.1f} s with the build, {reused:.1f} s with the image there")
    assert reused * 5 <= built, (built, reused)


def test_over_ssh_the_container_runs_as_the_node_user(
    docker_engine: DockerEngine, offline_build: str, sshd: LoopbackSshd, tmp_path: Path
) -> None:
    remote_root = tmp_path / "lab-machine"
    extra = (
        f'providers: [ssh]\nssh: {{hosts: ["{sshd.target}"], identity_file: {sshd.client_key}, '
        f"workdir: {remote_root}}}"
    )
    spec = write_spec(tmp_path, MNIST.format(name="ssh-docker", samples=64, epochs=1, extra=extra))
    done = gpujobs_cli("launch", str(spec), timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "docker runtime" in done.stderr and "epoch 1/1" in done.stdout
    job = job_json()
    assert sorted(Path(job["runs_dir"]).glob("ckpt-*.pt"))
    assert containers_of(docker_engine, job["id"]) == []
    assert not (remote_root / "work" / job["id"]).exists()


def test_ctrl_c_saves_a_checkpoint_from_inside_the_container(
    docker_engine: DockerEngine, offline_build: str, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, MNIST.format(name="stop-me", samples=4000, epochs=20, extra=""))
    launcher = subprocess.Popen(
        [sys.executable, "-m", "gpujobs", "launch", str(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 900
        job_id = None
        while job_id is None or not containers_of(docker_engine, job_id):
            assert time.monotonic() < deadline and launcher.poll() is None
            listed = json.loads(gpujobs_cli("status", "--json").stdout)
            job_id = listed[0]["id"] if listed else None
            time.sleep(0.5)
        while "steps/epoch" not in gpujobs_cli("logs", job_id).stdout:  # the data is ready
            assert time.monotonic() < deadline and launcher.poll() is None
            time.sleep(0.5)
        time.sleep(3)  # a few steps into the training loop
        launcher.send_signal(signal.SIGINT)
        out, err = launcher.communicate(timeout=300)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 130, err[-2000:]
    job = job_json()
    assert job["state"] == "CANCELLED"
    assert "stopped by SIGTERM" in out, "the workload in the container heard the stop"
    assert sorted(Path(job["runs_dir"]).glob("ckpt-*.pt")), out[-1500:] + err[-1500:]
    assert containers_of(docker_engine, job["id"]) == []


def test_your_code_in_your_own_image(docker_engine: DockerEngine, tmp_path: Path) -> None:
    base = docker_base.ensure_test_base()
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(
        "import os, pathlib, sys\n"
        "out = pathlib.Path(os.environ['GPUJOBS_CKPT_DIR'])\n"
        "weights = pathlib.Path('/files/weights.bin').read_bytes()\n"
        "(out / 'result.txt').write_text(f'{sys.version_info[0]} {len(weights)} {os.getcwd()}')\n"
        "print('trained in', os.getcwd())\n"
    )
    (tmp_path / "weights.bin").write_bytes(b"w" * 1234)
    spec = write_spec(
        tmp_path,
        f"""
        name: own-image
        runtime: docker
        image: {base}
        workdir: ./project
        files: {{/files/weights.bin: ./weights.bin}}
        setup: python3 -c "print('setup in the image')"
        command: python3 train.py
        """,
    )
    done = gpujobs_cli("launch", str(spec), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "setup in the image" in done.stdout and "trained in /workspace" in done.stdout
    job = job_json()
    assert (Path(job["runs_dir"]) / "result.txt").read_text() == "3 1234 /workspace"
    assert containers_of(docker_engine, job["id"]) == []
    again = gpujobs_cli("launch", str(spec), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "setup: already done" in again.stderr, "the setup's image was kept"
