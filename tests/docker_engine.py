"""Fixtures for tests against a real Docker engine (registered in conftest.py).

`docker_engine` (session): an engine that answers, started here when root can start one, with
`run()` for containers that are always labelled and always removed. `workload_image` (session):
docker/Dockerfile built by that engine on the offline base of tests/docker_base.py, tagged
gpujobs-workloads:test and reused while the Dockerfile, the ignore file, jobs/ and the base are
unchanged.

    def test_something(docker_engine: DockerEngine, workload_image: WorkloadImage) -> None:
        done = docker_engine.run(workload_image.tag, "jobs.mnist_cnn", "--help")

Where no engine can be had (not root and no socket; no dockerd installed), they skip with the
reason; under CI (CI=true) they fail instead, since .ci/run installs and starts everything and a
skip there would hide a broken install step.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from tests import docker_base
from tests.docker_base import REPO, EngineUnavailable

WORKLOAD_TAG = "gpujobs-workloads:test"
CONTEXT_LABEL = "gpujobs.test.context"
# Every container a test starts carries this label, valued per session, so the session's end
# removes whatever a failed test left behind, and nothing of another session's.
CONTAINER_LABEL = "gpujobs-test"


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"no Docker engine under CI: {reason}", pytrace=False)
    pytest.skip(f"no Docker engine: {reason}")


@dataclass(frozen=True)
class DockerEngine:
    session: str  # the CONTAINER_LABEL value of this test session

    @property
    def label(self) -> str:
        return f"{CONTAINER_LABEL}={self.session}"

    def docker(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess:
        return docker_base.docker(*args, timeout=timeout, check=check)

    def run(
        self,
        image: str,
        *args: str,
        user: str | None = None,
        volumes: Sequence[tuple[Path, str]] = (),
        entrypoint: str | None = None,
        network: str = "none",
        timeout: float = 300,
    ) -> subprocess.CompletedProcess:
        """`docker run --rm` of image with args; the container is labelled for this session and
        removed on every way out (--rm covers a normal exit, `rm -f` a timeout or a client
        that died with the container still up)."""
        name = f"gpujobs-test-{uuid.uuid4().hex[:12]}"
        argv = ["run", "--rm", "--name", name, "--label", self.label, "--network", network]
        if user is not None:
            argv += ["--user", user]
        for host, inside in volumes:
            argv += ["-v", f"{host}:{inside}"]
        if entrypoint is not None:
            argv += ["--entrypoint", entrypoint]
        try:
            return self.docker(*argv, image, *args, timeout=timeout, check=False)
        finally:
            self.docker("rm", "-f", name, check=False)

    def containers(self) -> list[str]:
        """IDs of this session's containers, running or not."""
        listed = self.docker("ps", "-aq", "--filter", f"label={self.label}")
        return listed.stdout.split()

    def remove_all(self) -> None:
        if ids := self.containers():
            self.docker("rm", "-f", *ids, check=False)


@dataclass(frozen=True)
class WorkloadImage:
    tag: str
    base: str  # the offline base it was built on
    build_s: float  # seconds this session spent building it; 0.0 when it was reused


def context_hash(base_id: str, build_args: Sequence[str]) -> str:
    """What the build sees: the Dockerfile, the ignore file, jobs/ (less what the ignore file
    drops), the base image and the build args. Equal hashes, equal images."""
    digest = hashlib.sha256()
    jobs = sorted(
        path
        for path in (REPO / "jobs").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    )
    for path in [REPO / "docker" / "Dockerfile", REPO / ".dockerignore", *jobs]:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(base_id.encode())
    digest.update("\0".join(build_args).encode())
    return digest.hexdigest()[:16]


def build_workload_image(base: str) -> WorkloadImage:
    build_args = ["BASE=" + base, "WHEELS=" + docker_base.WHEELS_IN_IMAGE]
    wanted = context_hash(docker_base.image_id(base), build_args)
    if docker_base.image_label(WORKLOAD_TAG, CONTEXT_LABEL) == wanted:
        return WorkloadImage(WORKLOAD_TAG, base, 0.0)
    argv = ["docker", "build", "--network", "none", "-f", "docker/Dockerfile", "-t", WORKLOAD_TAG]
    argv += ["--label", f"{CONTEXT_LABEL}={wanted}"]
    for arg in build_args:
        argv += ["--build-arg", arg]
    started = time.monotonic()
    # The build context is the repository root, exactly as README.md says to build it.
    done = subprocess.run([*argv, "."], cwd=REPO, capture_output=True, text=True, timeout=1500)
    if done.returncode != 0:
        raise RuntimeError(
            f"docker build of docker/Dockerfile failed:\n{(done.stdout + done.stderr)[-4000:]}"
        )
    elapsed = time.monotonic() - started
    # The image the tag named before is left untagged: drop it (its layers stay while shared).
    docker_base.docker(
        "image", "prune", "--force", "--filter", f"label={CONTEXT_LABEL}", check=False
    )
    return WorkloadImage(WORKLOAD_TAG, base, elapsed)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    try:
        docker_base.ensure_engine()
    except EngineUnavailable as error:
        unavailable(str(error))
    engine = DockerEngine(uuid.uuid4().hex[:12])
    try:
        yield engine
    finally:
        engine.remove_all()


@pytest.fixture(scope="session")
def workload_image(docker_engine: DockerEngine) -> WorkloadImage:
    """docker/Dockerfile built on the offline base; the base itself is made first if missing
    (minutes: debootstrap and the wheel download; .ci/run does it before the tests)."""
    del docker_engine  # needed up, not used
    try:
        base = docker_base.ensure_test_base()
    except EngineUnavailable as error:
        unavailable(str(error))
    with docker_base.machine_lock():
        return build_workload_image(base)


@pytest.fixture
def offline_build(docker_engine: DockerEngine, monkeypatch: pytest.MonkeyPatch) -> str:
    """A node's build of the workload image made offline: GPUJOBS_IMAGE_BASE/WHEELS point it
    at the test base and its wheels. Returns the tag a node gives the image for them."""
    from gpujobs.runtime.docker import workload_image_tag

    try:
        base = docker_base.ensure_test_base()
    except EngineUnavailable as error:
        unavailable(str(error))
    monkeypatch.setenv("GPUJOBS_IMAGE_BASE", base)
    monkeypatch.setenv("GPUJOBS_IMAGE_WHEELS", docker_base.WHEELS_IN_IMAGE)
    return workload_image_tag({"BASE": base, "WHEELS": docker_base.WHEELS_IN_IMAGE})
