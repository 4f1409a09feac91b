"""~/.ssh/config as lab users have it: aliases, a ProxyJump bastion (a second real sshd),
ProxyCommand, an agent-only key; fast, true errors; a host without SFTP; rsync on the same route."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpujobs.errors import (
    ConnectionLostError,
    RemoteFileNotFoundError,
    SshAuthError,
    TransportError,
)
from gpujobs.remote.ssh import HostKeyPins, SshSettings, SshTarget, SSHTransport
from gpujobs.remote.sync import pull_dir, push_dir
from gpujobs.testing.ssh import LoopbackSshd, free_port, make_key
from tests.conftest import gpujobs_cli, write_spec


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    with LoopbackSshd(tmp_path_factory.mktemp("bastion")) as server:
        yield server


def write_config(text: str) -> Path:
    path = Path.home() / ".ssh" / "config"
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_text(text)
    return path


def alias(name: str, pins: HostKeyPins, **settings: object) -> SSHTransport:
    """What the ssh provider makes of `ssh: {hosts: [name]}`: no user, port 22, no key."""
    return SSHTransport(SshTarget(name, 22, "", None), pins, SshSettings(**settings))  # type: ignore[arg-type]


def test_an_alias_gives_hostname_user_port_and_identity_file(
    sshd: LoopbackSshd, pins: HostKeyPins
) -> None:
    write_config(
        "Host other\n  User nobody\n"
        f"Host lab*\n  HostName {sshd.host}\n  User {sshd.user}\n  Port {sshd.port}\n"
        f"  IdentityFile {sshd.client_key}\n  IdentitiesOnly yes\n"
    )
    transport = alias("labgpu", pins)
    try:
        assert transport.run(["echo", "hi"]).stdout == "hi\n"
        assert transport.resolved().config_entry
    finally:
        transport.close()
    assert f"[{sshd.host}]:{sshd.port}" in pins.path.read_text()


def test_proxyjump_goes_through_the_bastion_and_pins_both_keys(
    sshd: LoopbackSshd, bastion: LoopbackSshd, pins: HostKeyPins, tmp_path: Path
) -> None:
    write_config(
        f"Host gate\n  HostName {bastion.host}\n  Port {bastion.port}\n  User {bastion.user}\n"
        f"  IdentityFile {bastion.client_key}\n"
        f"Host labgpu\n  HostName {sshd.host}\n  Port {sshd.port}\n"
        f"  IdentityFile {sshd.client_key}\n  ProxyJump gate\n"
    )
    transport = alias("labgpu", pins)
    try:
        assert transport.run(["echo", "via"]).stdout == "via\n"
        assert len(transport._bastions) == 1
        # rsync takes the same route: the generated config carries the ProxyJump and the pins.
        source = tmp_path / "data.txt"
        source.write_text("payload")
        shell, prefix = transport.rsync_shell()
        destination = f"/tmp/gpujobs-jump-{os.getpid()}.txt"
        subprocess.run(
            ["rsync", "-e", shell, str(source), f"{prefix}{destination}"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        assert transport.run(["cat", destination]).stdout == "payload"
        transport.run(["rm", "-f", destination])
    finally:
        transport.close()
    pinned = pins.path.read_text()
    assert f"[{sshd.host}]:{sshd.port}" in pinned
    assert f"[{bastion.host}]:{bastion.port}" in pinned


def test_with_the_bastion_down_the_target_is_not_reached_directly(
    sshd: LoopbackSshd, pins: HostKeyPins
) -> None:
    write_config(
        f"Host gate\n  HostName 127.0.0.1\n  Port {free_port()}\n"
        f"Host labgpu\n  HostName {sshd.host}\n  Port {sshd.port}\n"
        f"  IdentityFile {sshd.client_key}\n  ProxyJump gate\n"
    )
    started = time.monotonic()
    with pytest.raises(ConnectionLostError, match=r"cannot reach gate.*connection refused"):
        alias("labgpu", pins).run(["true"])
    assert time.monotonic() - started < 2


def test_proxycommand(sshd: LoopbackSshd, pins: HostKeyPins, tmp_path: Path) -> None:
    relay = tmp_path / "relay.py"
    relay.write_text(
        "import socket, sys, threading\n"
        "s = socket.create_connection((sys.argv[1], int(sys.argv[2])))\n"
        "def up():\n"
        "    while data := sys.stdin.buffer.read1(65536):\n"
        "        s.sendall(data)\n"
        "    s.shutdown(socket.SHUT_WR)\n"
        "threading.Thread(target=up, daemon=True).start()\n"
        "while data := s.recv(65536):\n"
        "    sys.stdout.buffer.write(data); sys.stdout.buffer.flush()\n"
    )
    write_config(
        f"Host viacmd\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.client_key}\n  ProxyCommand {sys.executable} {relay} %h %p\n"
    )
    transport = alias("viacmd", pins)
    try:
        assert transport.run(["echo", "cmd"]).stdout == "cmd\n"
    finally:
        transport.close()


def test_an_agent_only_key(
    sshd: LoopbackSshd, pins: HostKeyPins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        env = {**os.environ, "SSH_AUTH_SOCK": str(socket_path)}
        subprocess.run(["ssh-add", str(sshd.client_key)], env=env, check=True, capture_output=True)
        write_config(f"Host agentbox\n  HostName {sshd.host}\n  Port {sshd.port}\n")
        monkeypatch.setenv("SSH_AUTH_SOCK", str(socket_path))
        transport = alias("agentbox", pins)  # no IdentityFile: only the agent holds the key
        try:
            assert transport.run(["echo", "agent"]).stdout == "agent\n"
        finally:
            transport.close()
    finally:
        agent.terminate()
        agent.wait(timeout=5)


def test_refused_fails_in_under_two_seconds(pins: HostKeyPins) -> None:
    write_config(f"Host deadbox\n  HostName 127.0.0.1\n  Port {free_port()}\n")
    started = time.monotonic()
    with pytest.raises(ConnectionLostError, match=r"cannot reach deadbox.*connection refused"):
        alias("deadbox", pins).run(["true"])
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("with_entry", [True, False])
def test_an_unresolvable_name_names_the_alias_and_the_config(
    pins: HostKeyPins, with_entry: bool
) -> None:
    entry = "Host typo\n  HostName no-such-host.invalid\n" if with_entry else ""
    write_config(entry + "Host *\n  ServerAliveInterval 30\n")
    started = time.monotonic()
    name = "typo" if with_entry else "no-such-host.invalid"
    expected = "gives HostName no-such-host.invalid" if with_entry else "no Host entry matches"
    with pytest.raises(TransportError, match=rf"cannot resolve '{name}'.*{expected}"):
        alias(name, pins).run(["true"])
    assert time.monotonic() - started < 5


def test_an_auth_failure_names_the_keys_tried_and_authorized_keys(
    sshd: LoopbackSshd, pins: HostKeyPins, tmp_path: Path
) -> None:
    stranger = make_key(tmp_path / "stranger")
    write_config(
        f"Host lab\n  HostName {sshd.host}\n  Port {sshd.port}\n  IdentityFile {stranger}\n"
        "  IdentitiesOnly yes\n"
    )
    started = time.monotonic()
    with pytest.raises(SshAuthError, match=rf"keys tried: {stranger}.*authorized_keys"):
        alias("lab", pins).run(["true"])
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("method", ["files", "auto"])
def test_a_host_without_sftp_works_over_exec_channels(
    pins: HostKeyPins, tmp_path: Path, method: str
) -> None:
    """No `Subsystem sftp` on the node: put/get/read and folder sync and pull go over exec
    channels (or rsync), at once, never waiting out the 300 s reconnect window."""
    with LoopbackSshd(tmp_path / "nosftp", sftp=False) as server:
        target = SshTarget(server.host, server.port, server.user, str(server.client_key))
        transport = SSHTransport(target, pins, SshSettings(reconnect_window_s=300))
        remote = f"/tmp/gpujobs-nosftp-{os.getpid()}-{method}"
        try:
            started = time.monotonic()
            source = tmp_path / "src"
            (source / "sub").mkdir(parents=True)
            (source / "a.txt").write_text("alpha")
            (source / "sub" / "b.bin").write_bytes(os.urandom(300_000))
            report = push_dir(transport, source, remote, method=method)  # type: ignore[arg-type]
            assert report.files_sent == 2
            assert transport.run(["cat", f"{remote}/a.txt"]).stdout == "alpha"
            home = tmp_path / "back"
            pulled = pull_dir(transport, remote, home)
            assert pulled.files_sent == 2
            assert (home / "sub" / "b.bin").read_bytes() == (source / "sub" / "b.bin").read_bytes()
            assert transport.read(f"{remote}/a.txt", 2) == b"pha"
            transport.put(source / "a.txt", f"{remote}/c.txt", mode=0o600)
            transport.get(f"{remote}/c.txt", home / "c.txt")
            assert (home / "c.txt").read_text() == "alpha"
            with pytest.raises(RemoteFileNotFoundError):
                transport.get(f"{remote}/missing", home / "missing")
            assert time.monotonic() - started < 10
            assert transport.connections == 1
        finally:
            transport.run(["rm", "-rf", remote], check=False)
            transport.close()


def test_a_percent_in_the_home_folder_reaches_rsync_escaped(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    pins = HostKeyPins(tmp_path / "h-%d" / "known_hosts")
    target = SshTarget(sshd.host, sshd.port, sshd.user, str(sshd.client_key))
    transport = SSHTransport(target, pins)
    try:
        source = tmp_path / "p.txt"
        source.write_text("percent")
        shell, prefix = transport.rsync_shell()
        destination = f"/tmp/gpujobs-pct-{os.getpid()}.txt"
        subprocess.run(
            ["rsync", "-e", shell, str(source), f"{prefix}{destination}"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        assert transport.run(["cat", destination]).stdout == "percent"
        transport.run(["rm", "-f", destination])
    finally:
        transport.close()


def test_launch_on_an_alias_behind_a_bastion(
    sshd: LoopbackSshd, bastion: LoopbackSshd, tmp_path: Path
) -> None:
    """`ssh: {hosts: [labgpu]}` works when `ssh labgpu` does: the whole launch (probe, setup,
    sync, logs, teardown) through the ProxyJump route of the user's ssh config."""
    write_config(
        f"Host gate\n  HostName {bastion.host}\n  Port {bastion.port}\n"
        f"  IdentityFile {bastion.client_key}\n"
        f"Host labgpu\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.client_key}\n  ProxyJump gate\n"
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.txt").write_text("synced through the bastion")
    spec = write_spec(
        tmp_path,
        f"""
        name: alias-job
        command: cat "$GPUJOBS_DATA_DIR/x.txt"
        providers: [ssh]
        ssh: {{hosts: [labgpu], workdir: {tmp_path / "lab-root"}}}
        dataset: {{source: ./data, target: /data}}
        """,
    )
    done = gpujobs_cli("launch", str(spec), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "synced through the bastion" in done.stdout


def test_gpujobs_ssh_reaches_a_job_behind_a_bastion(
    sshd: LoopbackSshd, bastion: LoopbackSshd, tmp_path: Path
) -> None:
    """`gpujobs ssh` takes the same route as the driver (the user's alias, its ProxyJump), with
    every host checked against gpujobs' pins; `ssh-config` names the bastion for VS Code."""
    write_config(
        f"Host gate\n  HostName {bastion.host}\n  Port {bastion.port}\n"
        f"  IdentityFile {bastion.client_key}\n"
        f"Host labgpu\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.client_key}\n  ProxyJump gate\n"
    )
    spec = write_spec(
        tmp_path,
        f"""
        name: behind-gate
        command: echo ready; sleep 60
        providers: [ssh]
        ssh: {{hosts: [labgpu], workdir: {tmp_path / "lab-root"}}}
        """,
    )
    job_id = gpujobs_cli("launch", "--detach", str(spec)).stdout.strip()
    log = tmp_path / "home" / "logs" / f"{job_id}.log"
    deadline = time.monotonic() + 60
    while not (log.exists() and b"ready" in log.read_bytes()):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.2)
    try:
        shell = gpujobs_cli("ssh", job_id, "--", "echo on-the-node; pwd")
        assert shell.returncode == 0, shell.stderr
        assert "on-the-node" in shell.stdout
        assert str(tmp_path / "lab-root" / "work" / job_id) in shell.stdout
        entries = gpujobs_cli("ssh-config").stdout
        assert "ProxyJump gate" in entries and f"Host gpujobs-{job_id}" in entries
    finally:
        gpujobs_cli("down", job_id)
