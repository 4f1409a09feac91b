"""The workload image for real: docker/Dockerfile built by a real Docker engine on the offline
base (tests/docker_base.py), and run the way gpujobs runs it: as the node user's uid, with the
checkpoint folder bind-mounted, and no network."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests import docker_base
from tests.conftest import REPO
from tests.docker_engine import DockerEngine, WorkloadImage

# The first test here may build the offline base and the image (minutes on a bare machine;
# .ci/run builds the base beforehand), inside its fixtures' setup, which pytest-timeout counts.
pytestmark = pytest.mark.timeout(1800)

# A run gpujobs would start, made tiny: a few dozen synthetic digits, one epoch, one thread.
TINY_RUN = (
    "jobs.mnist_cnn",
    "--data",
    "/data",
    "--out",
    "/ckpt",
    "--synthetic",
    "64",
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--threads",
    "1",
    "--seed",
    "1",
)


def pinned_torch() -> str:
    match = re.search(r"^torch==(\S+)$", (REPO / "constraints.txt").read_text(), re.M)
    assert match, "constraints.txt pins torch"
    return match.group(1)


def test_the_image_is_built_as_the_dockerfile_says(
    docker_engine: DockerEngine, workload_image: WorkloadImage
) -> None:
    done = docker_engine.docker(
        "image", "inspect", "--format", "{{json .Config}}", workload_image.tag
    )
    config = json.loads(done.stdout)
    assert config["User"] == "1000:1000"
    assert config["Entrypoint"] == ["python", "-m"]
    assert config["Cmd"] == ["jobs.mnist_cnn", "--help"]
    assert "PYTHONPATH=/opt/gpujobs" in config["Env"]
    # The image's default command is the workload's help: the entrypoint, PYTHONPATH and jobs/
    # all work together, as the image's own user.
    shown = docker_engine.run(workload_image.tag, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "--synthetic" in shown.stdout


def test_torch_in_the_image_is_the_pinned_cpu_build_in_the_venv(
    docker_engine: DockerEngine, workload_image: WorkloadImage
) -> None:
    probe = "import sys, torch, numpy, PIL, tensorboard; print(torch.__version__, sys.prefix)"
    done = docker_engine.run(workload_image.tag, "-c", probe, entrypoint="python", timeout=120)
    assert done.returncode == 0, done.stderr
    version, prefix = done.stdout.split()
    assert version == f"{pinned_torch()}+cpu"
    assert prefix == "/opt/venv", "installed into the image's venv, not the system Python"


def train_as(
    engine: DockerEngine, image: str, ckpt: Path, uid: int, gid: int
) -> tuple[float, list[Path]]:
    """The tiny run as uid:gid into ckpt; returns its seconds and the files it left there."""
    started = time.monotonic()
    done = engine.run(image, *TINY_RUN, user=f"{uid}:{gid}", volumes=[(ckpt, "/ckpt")], timeout=600)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert engine.containers() == [], "the container is gone once the run is over"
    return elapsed, sorted(path for path in ckpt.rglob("*"))


def assert_checkpoint_owned_by(files: list[Path], uid: int, gid: int) -> None:
    import torch  # the host's own torch reads what the container's wrote

    checkpoints = [path for path in files if re.fullmatch(r"ckpt-\d{8,}\.pt", path.name)]
    assert checkpoints, [path.name for path in files]
    for path in files:
        assert (path.stat().st_uid, path.stat().st_gid) == (uid, gid), path
    state = torch.load(checkpoints[-1], map_location="cpu", weights_only=False)
    assert state["models"], "a real checkpoint, with the model's weights"


def test_a_workload_checkpoints_into_the_mount_as_the_invoking_user(
    docker_engine: DockerEngine, workload_image: WorkloadImage, tmp_path: Path
) -> None:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    uid, gid = os.getuid(), os.getgid()
    elapsed, files = train_as(docker_engine, workload_image.tag, ckpt, uid, gid)
    assert_checkpoint_owned_by(files, uid, gid)
    assert (ckpt / "metrics.jsonl").is_file()
    print(f"tiny mnist_cnn run in the container: {elapsed:.1f}s")


def test_a_node_user_the_image_has_no_account_for(
    docker_engine: DockerEngine, workload_image: WorkloadImage, tmp_path: Path
) -> None:
    """gpujobs passes the node user's uid:gid, which the image knows nothing of (its own user
    is 1000). Run as root, the invoking user says little; this one only root can arrange."""
    if os.geteuid() != 0:
        pytest.skip("only root can give the checkpoint folder to another uid")
    uid = gid = 54321
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    os.chown(ckpt, uid, gid)
    _, files = train_as(docker_engine, workload_image.tag, ckpt, uid, gid)
    assert_checkpoint_owned_by(files, uid, gid)


# -- the offline base's recipe, no engine needed ------------------------------------------------


def test_the_debian_mirror_is_the_one_apt_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GPUJOBS_DEBIAN_MIRROR", raising=False)
    listed = tmp_path / "sources.list.d"
    listed.mkdir()
    (listed / "debian.sources").write_text(
        "Types: deb\n# a comment: inside a stanza\nURIs: http://mirror.invalid/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n"
    )
    (listed / "a-disabled.sources").write_text(
        "Enabled: no\nTypes: deb\nURIs: http://disabled.invalid/debian\nSuites: bookworm\n"
    )
    assert docker_base.debian_mirror(tmp_path) == "http://mirror.invalid/debian"
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.invalid/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one-line.invalid/debian bookworm main\n"
    )
    assert docker_base.debian_mirror(tmp_path) == "http://one-line.invalid/debian"
    # Another release's archive serves bookworm too.
    (tmp_path / "sources.list").write_text("deb http://trixie.invalid/debian trixie main\n")
    (listed / "debian.sources").unlink()
    assert docker_base.debian_mirror(tmp_path) == "http://trixie.invalid/debian"
    (tmp_path / "sources.list").write_text("deb http://ubuntu.invalid/ubuntu noble main\n")
    with pytest.raises(docker_base.EngineUnavailable, match="GPUJOBS_DEBIAN_MIRROR"):
        docker_base.debian_mirror(tmp_path)


def test_the_wheels_are_what_the_dockerfile_installs_for_the_bases_python() -> None:
    args = docker_base.pip_download_args()
    assert str(REPO / "constraints.txt") in args, "torch held to the pinned CPU build"
    assert "tensorboard>=2.14" in args, "the Dockerfile's own extra requirement"
    flags = docker_base.Target("3.11", "2.36", "x86_64").pip_flags()
    platforms = {flags[i + 1] for i, flag in enumerate(flags) if flag == "--platform"}
    # torch's CPU wheel is manylinux_2_28, protobuf's manylinux2014 only: both must be allowed,
    # and nothing newer than the base's glibc.
    assert {"manylinux_2_28_x86_64", "manylinux2014_x86_64"} <= platforms
    assert "manylinux_2_37_x86_64" not in platforms
    assert flags[flags.index("--abi") + 1] == "cp311"
