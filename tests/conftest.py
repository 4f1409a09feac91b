"""Every test gets its own gpujobs home and working directory; nothing leaves loopback
(pytest-socket, configured in pyproject.toml)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpujobs.paths import HomeLayout
from gpujobs.providers import ssh as ssh_provider
from gpujobs.remote import ssh_pool
from gpujobs.remote.ssh import HostKeyPins, SshSettings, SshTarget, SSHTransport
from gpujobs.state import Store
from gpujobs.testing.ssh import LoopbackSshd
from tests.slurm_cluster import ClusterUnavailable, SlurmCluster, slurm_cluster

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["tests.docker_engine"]  # docker_engine, workload_image: a real Docker engine

# moto reads its AMI list when first imported: give it AWS's Deep Learning GPU AMIs, so the AWS
# provider's image lookup runs its real filter. And boto3 never asks an instance metadata server.
os.environ.setdefault("MOTO_AMIS_PATH", str(REPO / "tests" / "data" / "moto_amis.json"))
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"


@pytest.fixture(autouse=True)
def isolated(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    monkeypatch.setenv("GPUJOBS_HOME", str(tmp_path / "home"))
    # A home of its own (outside tmp_path, which tests expect empty): nothing is read from, or
    # pinned into, the real ~/.ssh.
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("user-home")))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    # What a process keeps between launches (parked SSH links, host probes) is not carried
    # from one test into the next, as it is not from one `gpujobs` command into the next.
    ssh_pool.close_all()
    ssh_provider._probed.clear()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    """A real OpenSSH sshd on 127.0.0.1, shared by the session (its host key never changes;
    tests that change one start their own)."""
    with LoopbackSshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def pins(tmp_path: Path) -> HostKeyPins:
    return HostKeyPins(tmp_path / "known_hosts")


def ssh_transport(
    server: LoopbackSshd, pins: HostKeyPins, *, port: int | None = None, window_s: float = 30
) -> SSHTransport:
    target = SshTarget(server.host, port or server.port, server.user, str(server.client_key))
    return SSHTransport(target, pins, SshSettings(reconnect_window_s=window_s))


@pytest.fixture
def home(tmp_path: Path) -> HomeLayout:
    return HomeLayout(tmp_path / "home").ensure()


@pytest.fixture
def store(home: HomeLayout) -> Store:
    opened = Store(home.state_db)
    yield opened
    opened.close()


def write_stubs(folder: Path, bodies: dict[str, str]) -> Path:
    """Executable sh scripts named after the commands they stand in for (what only a VM has:
    shutdown, docker, sysctl, ...), for a PATH that puts `folder` first. Returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in bodies.items():
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    return folder


def write_spec(folder: Path, text: str, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def gpujobs_cli(*args: str, timeout: float = 120, **kwargs: object) -> subprocess.CompletedProcess:
    """The real command in a child process (its own interpreter, signals and exit codes);
    `env` replaces this process's environment."""
    env = kwargs.pop("env", None) or os.environ.copy()
    return subprocess.run(
        [sys.executable, "-m", "gpujobs", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kwargs,
    )


@pytest.fixture(scope="session")
def slurm() -> SlurmCluster:
    """A real two-node Slurm cluster on loopback (tests/slurm_cluster.py), started once."""
    try:
        return slurm_cluster()
    except ClusterUnavailable as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"no Slurm cluster: {exc}")
