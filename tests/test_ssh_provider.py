"""The ssh provider on a real loopback sshd: what a host offers, what a job's node is, how
teardown stops only the job (never the machine), and `down` after the driver was killed."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpujobs.errors import NotTerminatedError
from gpujobs.lifecycle.node_session import NodeSession
from gpujobs.providers.base import Availability, Node
from gpujobs.providers.ssh import SshProvider
from gpujobs.remote.ssh import HostKeyPins
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.spec import Resources, SshHosts
from gpujobs.testing.ssh import LoopbackSshd
from tests.conftest import gpujobs_cli, ssh_transport, write_spec
from tests.test_cli import SLOW_JOB, process_gone, status_json, wait_for


def provider_for(sshd: LoopbackSshd, root: Path, pins: HostKeyPins) -> SshProvider:
    hosts = SshHosts(hosts=[sshd.target], identity_file=str(sshd.client_key), workdir=str(root))
    return SshProvider(hosts, pins, stop_grace_s=5)


def test_a_host_offers_what_it_has(sshd: LoopbackSshd, pins: HostKeyPins, tmp_path: Path) -> None:
    provider = provider_for(sshd, tmp_path / "root", pins)
    assert provider.check().ok
    [offer] = provider.offers(Resources())
    assert offer.availability is Availability.AVAILABLE
    assert offer.label == f"ssh/{sshd.target}"
    assert offer.cpus == os.cpu_count() and offer.memory_gb > 0 and offer.disk_gb
    assert (offer.gpu, offer.gpus) == (None, 0), "no nvidia-smi here: a CPU machine"
    assert offer.price_per_hour == 0
    assert stat.S_IMODE((tmp_path / "root").stat().st_mode) == 0o700, "private to the user"
    assert offer.misfit(Resources(gpu="T4")) is not None


def test_a_host_without_a_spec_is_not_configured(pins: HostKeyPins) -> None:
    provider = SshProvider(None, pins)
    assert not provider.check().ok and "ssh:" in provider.check().missing
    assert provider.offers(Resources()) == [] and provider.owned() == []


def test_teardown_stops_the_job_and_removes_only_its_folder(
    sshd: LoopbackSshd, pins: HostKeyPins, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    provider = provider_for(sshd, root, pins)
    [offer] = provider.offers(Resources())
    [node] = provider.provision("job-1", offer, "ssh-ed25519 AAAA unused", 1)
    assert (node.workdir, node.runtime, node.uses_job_key) == (
        str(root / "work" / "job-1"),
        "venv",
        False,
    )
    assert [n.job_id for n in provider.owned()] == ["job-1"]
    (root / "keep-me.txt").write_text("the user's own file")
    session = NodeSession(ssh_transport(sshd, pins), NodeLayout(node.workdir), tmp_path / "l")
    session.make_folders()
    session.start(["sh", "-c", "sleep 300 & sleep 300 & wait"], {}, max_seconds=None)
    wait_for(lambda: Path(session.layout.pid).exists(), what="the pid file")
    group = int(Path(session.layout.pid).read_text())
    provider.terminate([node])
    assert process_gone(group)
    assert not Path(node.workdir).exists()
    assert (root / "keep-me.txt").exists() and (root / "venvs").is_dir()
    provider.terminate([node])  # idempotent
    assert provider.owned() == []
    session.transport.close()


def test_teardown_refuses_a_folder_that_is_not_a_job_folder(
    sshd: LoopbackSshd, pins: HostKeyPins, tmp_path: Path
) -> None:
    provider = provider_for(sshd, tmp_path / "root", pins)
    precious = tmp_path / "precious"
    precious.mkdir()
    node = Node(
        provider="ssh",
        job_id="x",
        node_id="x-0",
        host=sshd.host,
        port=sshd.port,
        user=sshd.user,
        workdir=str(precious),
        identity_file=str(sshd.client_key),
        uses_job_key=False,
    )
    with pytest.raises(NotTerminatedError, match="not a gpujobs job folder"):
        provider.terminate([node])
    assert precious.exists()


def test_a_killed_driver_over_ssh_is_shown_lost_and_down_saves_and_cleans_up(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    root = tmp_path / "lab"
    spec = write_spec(
        tmp_path,
        SLOW_JOB
        + f"""providers: [ssh]
ssh: {{hosts: ["{sshd.target}"], identity_file: {sshd.client_key}, workdir: {root}}}
""",
    )
    job_id = gpujobs_cli("launch", "--detach", str(spec)).stdout.strip()
    log = tmp_path / "home" / "logs" / f"{job_id}.log"
    wait_for(lambda: log.exists() and b"tick 2" in log.read_bytes(), what="the job to tick")
    driver_pid = _driver_pid(tmp_path / "home" / "state.db")
    os.kill(driver_pid, signal.SIGKILL)
    wait_for(lambda: process_gone(driver_pid), what="the driver to die")
    assert status_json(job_id)["driver_lost"]
    workload = int((root / "work" / job_id / "pid").read_text())
    assert not process_gone(workload), "the job outlives its driver on the machine"
    down = gpujobs_cli("down", job_id)
    assert down.returncode == 0, down.stderr
    job = status_json(job_id)
    assert job["state"] == "CANCELLED"
    assert (Path(job["runs_dir"]) / "on-term.txt").exists(), "down saved the checkpoint first"
    assert process_gone(workload)
    assert not (root / "work" / job_id).exists()


def _driver_pid(state_db: Path) -> int:
    return json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import sqlite3,sys,json; db=sqlite3.connect(sys.argv[1]); "
                "print(json.dumps(db.execute('select driver_pid from jobs').fetchone()[0]))",
                str(state_db),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )


def test_probe_time_is_bounded(pins: HostKeyPins) -> None:
    """A host that is down answers within the probe window, as unavailable with the reason."""
    hosts = SshHosts(hosts=["nobody@127.0.0.1:9"], workdir="/tmp/x")
    provider = SshProvider(hosts, pins, probe_window_s=1)
    started = time.monotonic()
    [offer] = provider.offers(Resources())
    assert time.monotonic() - started < 6
    assert offer.availability is Availability.NOT_AVAILABLE
    assert "cannot reach nobody@127.0.0.1:9" in offer.unavailable_reason
