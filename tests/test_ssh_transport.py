"""The SSH transport against a real OpenSSH sshd on loopback: quoting, files, offsets, listings,
pinned host keys, login errors and per-job keys. Nothing about SSH is mocked."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from gpujobs.errors import (
    CommandFailedError,
    ConnectionLostError,
    HostKeyChangedError,
    SshAuthError,
    TransportError,
    TransportTimeoutError,
)
from gpujobs.remote import ssh_pool
from gpujobs.remote.keys import create_job_key, delete_job_key
from gpujobs.remote.ssh import HostKeyPins, SshSettings, SshTarget, SSHTransport
from gpujobs.remote.sync import pull_dir, push_dir
from gpujobs.remote.transport import GivesUp
from gpujobs.runtime.launcher import env_file, launch_script
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.testing.ssh import LoopbackSshd, free_port, make_key
from tests.conftest import ssh_transport

HOSTILE_WORDS = ["a b", "it's", '"quoted"', "$HOME", "`id`", "; rm -rf /", "line\nbreak", "*", ""]


def test_every_word_arrives_as_given(sshd: LoopbackSshd, pins: HostKeyPins) -> None:
    transport = ssh_transport(sshd, pins)
    result = transport.run(["printf", r"%s\0", *HOSTILE_WORDS])
    assert result.stdout.split("\0")[:-1] == HOSTILE_WORDS
    transport.close()


def test_exit_codes_stderr_and_timeouts(sshd: LoopbackSshd, pins: HostKeyPins) -> None:
    transport = ssh_transport(sshd, pins)
    result = transport.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    with pytest.raises(CommandFailedError, match="exited with 3"):
        transport.run(["sh", "-c", "exit 3"])
    started = time.monotonic()
    with pytest.raises(TransportTimeoutError, match=r"did not finish in 0\.5s"):
        transport.run(["sleep", "5"], timeout=0.5)
    assert time.monotonic() - started < 3, "a hung command cannot hang the caller"
    assert transport.run(["echo", "still usable"]).stdout == "still usable\n"
    transport.close()


def test_output_that_crosses_after_the_exit_status_is_kept(
    sshd: LoopbackSshd, pins: HostKeyPins
) -> None:
    """OpenSSH sends a command's exit status when the command ends, which can be before the
    last of its output has crossed (a listing cut short fails a sync's verification). Here the
    shell exits at once and its child writes later, on the same pipe."""
    transport = ssh_transport(sshd, pins)
    result = transport.run(["sh", "-c", "(sleep 0.3; echo late) & echo early"])
    assert result.stdout == "early\nlate\n"
    big = transport.run(["sh", "-c", "head -c 3000000 /dev/zero"])
    assert len(big.stdout) == 3_000_000
    transport.close()


def test_the_link_prefers_an_aead_cipher(sshd: LoopbackSshd, pins: HostKeyPins) -> None:
    """aes128-gcm before paramiko's aes128-ctr + hmac-sha2-256: no weaker, and data moves a
    tenth faster (tests/bench/sync.py)."""
    transport = ssh_transport(sshd, pins)
    transport.run(["true"])
    link = transport._client.get_transport() if transport._client else None
    assert link is not None and link.local_cipher == link.remote_cipher == "aes128-gcm@openssh.com"
    transport.close()


def test_put_get_keep_mode_and_mtime_and_leave_no_temp_file(
    sshd: LoopbackSshd, pins: HostKeyPins, tmp_path: Path
) -> None:
    transport = ssh_transport(sshd, pins)
    source = tmp_path / "secret.env"
    source.write_bytes(os.urandom(300_000))
    os.utime(source, (1_700_000_000, 1_700_000_000))
    remote = tmp_path / "node" / "deep" / "er" / "secret.env"
    transport.put(source, str(remote), mode=0o600)
    assert remote.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(remote.stat().st_mode) == 0o600
    assert int(remote.stat().st_mtime) == 1_700_000_000
    assert [p.name for p in remote.parent.iterdir()] == ["secret.env"], "no temp file left"
    back = tmp_path / "home-copy" / "secret.env"
    transport.get(str(remote), back)
    assert back.read_bytes() == source.read_bytes()
    assert int(back.stat().st_mtime) == 1_700_000_000
    with pytest.raises(TransportError, match="no such file"):
        transport.get(str(tmp_path / "node" / "missing"), tmp_path / "x")
    transport.close()


def test_read_by_offset(sshd: LoopbackSshd, pins: HostKeyPins, tmp_path: Path) -> None:
    transport = ssh_transport(sshd, pins)
    log = tmp_path / "job.log"
    assert transport.read(str(log), 0) == b"", "a log not written yet reads as empty"
    log.write_bytes(b"0123456789")
    assert transport.read(str(log), 3, 4) == b"3456"
    assert transport.read(str(log), 10) == b""
    transport.close()


def test_listing_reports_symlinks_and_odd_names(
    sshd: LoopbackSshd, pins: HostKeyPins, tmp_path: Path
) -> None:
    transport = ssh_transport(sshd, pins)
    root = tmp_path / "ckpt"
    (root / "sub dir").mkdir(parents=True)
    (root / "sub dir" / "a b.pt").write_bytes(b"12345")
    (root / "new\nline.pt").write_bytes(b"1")
    (root / "link").symlink_to("/etc/passwd")
    (root / "linkdir").symlink_to("/")
    listing = {item.path: item for item in transport.list_files(str(root))}
    assert set(listing) == {"sub dir/a b.pt", "new\nline.pt", "link", "linkdir"}
    assert listing["sub dir/a b.pt"].size == 5 and not listing["sub dir/a b.pt"].is_symlink
    assert listing["link"].is_symlink and listing["linkdir"].is_symlink
    assert transport.list_files(str(tmp_path / "absent")) == []
    transport.close()


def test_hostile_checkpoint_names_are_refused_and_reported(
    sshd: LoopbackSshd, pins: HostKeyPins, tmp_path: Path
) -> None:
    transport = ssh_transport(sshd, pins)
    node = tmp_path / "node-ckpt"
    node.mkdir()
    (node / "ckpt-1.pt").write_bytes(b"good")
    (node / "passwd").symlink_to("/etc/passwd")
    (node / "escape").symlink_to("../../..")
    runs = tmp_path / "runs" / "job"
    report = pull_dir(transport, str(node), runs)
    assert sorted(report.refused) == ["escape", "passwd"]
    assert sorted(p.name for p in runs.iterdir()) == ["ckpt-1.pt"]
    transport.close()


def test_start_is_detached_and_idempotent(
    sshd: LoopbackSshd, pins: HostKeyPins, tmp_path: Path
) -> None:
    transport = ssh_transport(sshd, pins)
    layout = NodeLayout(str(tmp_path / "job"))
    Path(layout.workdir).mkdir()
    Path(layout.env_file).write_text(env_file({"GREETING": "hello there"}))
    Path(layout.launch_script).write_text(
        launch_script(["sh", "-c", 'echo "$GREETING"; sleep 1'], layout, max_seconds=None)
    )
    pid = transport.start(layout.launch_script, cwd=layout.workdir)
    again = transport.start(layout.launch_script, cwd=layout.workdir)
    assert again == pid, "a retried start answers the first copy's pid and starts nothing"
    transport.close()  # the job outlives the connection
    deadline = time.monotonic() + 15
    while not Path(layout.exit_code).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Path(layout.exit_code).read_text().strip() == "0"
    assert Path(layout.log).read_text() == "hello there\n", "it ran once"


def test_host_key_is_pinned_on_first_contact_and_a_changed_one_is_refused(
    tmp_path: Path,
) -> None:
    pins = HostKeyPins(tmp_path / "known_hosts")
    with LoopbackSshd(tmp_path / "own-sshd") as server:
        first = ssh_transport(server, pins)
        first.run(["true"])
        first.close()
        ssh_pool.close_all()  # the next login is a new one (a parked link was verified then)
        pinned = pins.path.read_text()
        assert pinned.startswith(f"[127.0.0.1]:{server.port} ssh-ed25519 ")
        assert stat.S_IMODE(pins.path.stat().st_mode) == 0o600
        server.new_host_key()
        second = ssh_transport(server, pins)
        started = time.monotonic()
        with pytest.raises(HostKeyChangedError) as caught:
            second.run(["true"])
        assert time.monotonic() - started < 5, "refused at once, not retried"
        message = str(caught.value)
        assert "changed" in message and str(pins.path) in message and "\n" not in message
        assert pins.path.read_text() == pinned, "the new key was not recorded"
        # rsync's ssh reads the same pins: it refuses the changed key too.
        source = tmp_path / "data"
        source.mkdir()
        (source / "x").write_text("x")
        assert not _rsync_can_reach(server, pins, source, tmp_path / "node-data")


def _rsync_can_reach(server: LoopbackSshd, pins: HostKeyPins, source: Path, target: Path) -> bool:
    # Record nothing new: build the transport on a copy of the pins and reuse its rsync config.
    transport = ssh_transport(server, pins)
    try:
        push_dir(transport, source, str(target), method="rsync")
    except (HostKeyChangedError, TransportError):
        return False
    finally:
        transport.close()
    return True


def test_the_users_known_hosts_is_honoured(sshd: LoopbackSshd, tmp_path: Path) -> None:
    """A lab machine the user already trusts: its key in ~/.ssh/known_hosts is used, and a
    different key there means the host is refused."""
    user_file = tmp_path / "user-known-hosts"
    fake = make_key(tmp_path / "other")
    user_file.write_text(
        f"[127.0.0.1]:{sshd.port} {Path(f'{fake}.pub').read_text().split()[0]} "
        f"{Path(f'{fake}.pub').read_text().split()[1]}\n"
    )
    pins = HostKeyPins(tmp_path / "known_hosts", user_file=user_file)
    with pytest.raises(HostKeyChangedError):
        ssh_transport(sshd, pins).run(["true"])


def test_a_wrong_key_fails_at_once_with_the_fix(
    sshd: LoopbackSshd, pins: HostKeyPins, tmp_path: Path
) -> None:
    stranger = make_key(tmp_path / "stranger")
    transport = SSHTransport(
        SshTarget(sshd.host, sshd.port, sshd.user, str(stranger)), pins, SshSettings()
    )
    started = time.monotonic()
    with pytest.raises(SshAuthError, match="authorized_keys"):
        transport.run(["true"])
    assert time.monotonic() - started < 5


def test_an_unreachable_host_gives_up_after_the_window(pins: HostKeyPins) -> None:
    target = SshTarget("127.0.0.1", free_port(), "nobody", None)
    transport = SSHTransport(
        target,
        pins,
        SshSettings(connect_timeout_s=1, reconnect_window_s=1.5, retry_first_contact=True),
    )
    started = time.monotonic()
    with pytest.raises(ConnectionLostError, match=r"cannot reach .* within 1\.5s"):
        transport.run(["true"])
    assert time.monotonic() - started < 8


def test_a_node_its_provider_calls_gone_is_given_up_on_without_waiting_the_window(
    pins: HostKeyPins,
) -> None:
    target = SshTarget("127.0.0.1", free_port(), "nobody", None)
    transport = SSHTransport(
        target,
        pins,
        SshSettings(connect_timeout_s=1, reconnect_window_s=60, retry_first_contact=True),
    )
    asked: list[float] = []

    def provider_says() -> str | None:
        asked.append(time.monotonic())
        return (
            "aws i-0abc is terminated: Server.SpotInstanceTermination" if len(asked) > 1 else None
        )

    assert isinstance(transport, GivesUp)
    transport.give_up = provider_says
    started = time.monotonic()
    with pytest.raises(ConnectionLostError, match=r"Server\.SpotInstanceTermination"):
        transport.run(["true"])
    assert len(asked) == 2, "asked between attempts, and the second answer ended the retries"
    assert time.monotonic() - started < 10, "well inside the 60 s window"


def test_a_job_key_is_private_and_logs_in(tmp_path: Path, pins: HostKeyPins) -> None:
    key = create_job_key(tmp_path / "keys" / "job-1", "job-1")
    assert stat.S_IMODE(key.private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.private_path.parent.stat().st_mode) == 0o700
    assert key.public_line.startswith("ssh-ed25519 ") and key.public_line.endswith(" gpujobs-job-1")
    assert create_job_key(tmp_path / "keys" / "job-1", "job-1") == key, "made once per job"
    with LoopbackSshd(tmp_path / "own-sshd") as server:
        (server.folder / "authorized_keys").write_text(key.public_line + "\n")
        transport = SSHTransport(
            SshTarget(server.host, server.port, server.user, str(key.private_path)), pins
        )
        assert transport.run(["echo", "in"]).stdout == "in\n"
        transport.close()
    delete_job_key(key.private_path.parent)
    assert not key.private_path.parent.exists()


def test_a_folder_removed_behind_the_transports_back_is_made_again(
    sshd: LoopbackSshd, pins: HostKeyPins, tmp_path: Path
) -> None:
    transport = ssh_transport(sshd, pins)
    source = tmp_path / "f.txt"
    source.write_text("x")
    target = tmp_path / "node" / "sub" / "f.txt"
    transport.put(source, str(target))
    transport.run(["rm", "-rf", str(tmp_path / "node")])
    transport.put(source, str(target))
    assert target.read_text() == "x"
    transport.close()
