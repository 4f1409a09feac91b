"""A checkpoint pull races the workload that writes the checkpoints: between the listing of the
node's folder and the fetch of a file, the file is renamed (temp name -> final name), pruned or
replaced. Every race here is made to happen at one exact point, with no sleeps: right after the
listing (a wrapped transport acts on the node), or right after the transport opened the file
(a lease on the file holds the open in the kernel until the node has acted). Each runs against
LocalTransport and the real SSHTransport on a loopback sshd."""

from __future__ import annotations

import os
import posixpath
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gpujobs.errors import (
    ConnectionLostError,
    RemoteFileNotFoundError,
    TransportError,
)
from gpujobs.remote.ssh import HostKeyPins
from gpujobs.remote.sync import pull_dir
from gpujobs.remote.transport import LocalTransport, RemoteFile, Transport
from gpujobs.testing import FaultyTransport
from gpujobs.testing.ssh import CuttingProxy, LoopbackSshd
from tests.conftest import ssh_transport

LONG_AGO = time.time() - 3600  # mtimes well before any copy: no "racily clean" second pulls


@pytest.fixture(params=["local", "ssh"])
def transport(request: pytest.FixtureRequest, pins: HostKeyPins) -> Iterator[Transport]:
    if request.param == "local":
        yield LocalTransport()
        return
    over_ssh = ssh_transport(request.getfixturevalue("sshd"), pins)
    yield over_ssh
    over_ssh.close()


@dataclass
class RacingNode(FaultyTransport):
    """The node acts once, right after its folder is listed and before any file is fetched,
    as a workload finishing or pruning a checkpoint at that moment does. With `failing`, the
    get of that file fails with `error` instead: a transport that calls what went wrong by a
    name of its own. Counts the listings pull_dir asks for."""

    race: Callable[[], None] = field(default=lambda: None)
    failing: str = ""
    error: TransportError = field(default_factory=lambda: TransportError("the copy went wrong"))
    listings: int = 0

    def list_files(self, remote_dir: str) -> list[RemoteFile]:
        listing = super().list_files(remote_dir)
        self.listings += 1
        if self.listings == 1:
            self.race()
        return listing

    def get(self, remote: str, local: Path) -> None:
        if self.failing and posixpath.basename(remote) == self.failing:
            raise self.error
        super().get(remote, local)


def write(path: Path, data: bytes, mtime: float = LONG_AGO) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return data


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_a_checkpoint_pruned_after_the_listing_is_skipped(
    transport: Transport, tmp_path: Path
) -> None:
    node, home = tmp_path / "node", tmp_path / "runs"
    kept = {
        name: write(node / name, os.urandom(50_000))
        for name in ("ckpt-00000006.pt", "ckpt-00000007.pt", "metrics.jsonl")
    }
    write(node / "ckpt-00000005.pt", os.urandom(50_000))
    racing = RacingNode(transport, race=(node / "ckpt-00000005.pt").unlink)
    report = pull_dir(racing, str(node), home)
    assert report.skipped == ("ckpt-00000005.pt",)
    assert (report.files_sent, report.bytes_sent) == (3, 150_000)
    assert names(home) == sorted(kept), "the others arrived, and no temp file was left"
    for name, data in kept.items():
        assert (home / name).read_bytes() == data
        assert int((home / name).stat().st_mtime) == int(LONG_AGO)


def test_a_temp_file_renamed_to_its_final_name_is_never_pulled_as_a_checkpoint(
    transport: Transport, tmp_path: Path
) -> None:
    node, home = tmp_path / "node", tmp_path / "runs"
    six = write(node / "ckpt-00000006.pt", os.urandom(1000))
    seven = write(node / "ckpt-00000007.pt.tmp", os.urandom(1000))
    write(node / ".ckpt-x1y2z3.tmp", os.urandom(10))  # a save still under way; it stays
    write(node / "sub" / ".gpujobs-partial" / "ckpt-00000004.pt", b"half")  # an rsync partial

    def finish_seven() -> None:
        os.replace(node / "ckpt-00000007.pt.tmp", node / "ckpt-00000007.pt")

    report = pull_dir(RacingNode(transport, race=finish_seven), str(node), home)
    assert names(home) == ["ckpt-00000006.pt"]
    assert (home / "ckpt-00000006.pt").read_bytes() == six
    assert (report.files_total, report.skipped) == (1, ())
    again = pull_dir(transport, str(node), home)
    assert names(home) == ["ckpt-00000006.pt", "ckpt-00000007.pt"]
    assert (home / "ckpt-00000007.pt").read_bytes() == seven
    assert again.files_sent == 1


# Takes a write lease on a file: the next open of it, by anyone, waits in the kernel until the
# lease is given back. Once an open is waiting, the node acts (removes the file, or renames
# another over it), then gives the lease back: the open goes on, onto the file as it was.
_LEASE_HOLDER = r"""
import fcntl, os, signal, sys, time
signal.signal(signal.SIGIO, signal.SIG_IGN)  # the kernel's note that an open is waiting
path, action = sys.argv[1], sys.argv[2:]
fd = os.open(path, os.O_RDONLY)
try:
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
except OSError as exc:
    print("unsupported:", exc, flush=True)
    sys.exit(0)
print("ready", flush=True)
deadline = time.monotonic() + 60
while fcntl.fcntl(fd, fcntl.F_GETLEASE) == fcntl.F_WRLCK:
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.001)
if action:
    os.replace(action[0], path)
else:
    os.unlink(path)
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
"""


@dataclass
class LeaseHolder:
    child: subprocess.Popen[str]

    def done(self) -> int:
        return self.child.wait(timeout=30)


@pytest.fixture
def on_open() -> Iterator[Callable[..., LeaseHolder]]:
    started: list[subprocess.Popen[str]] = []

    def hold(path: Path, replace_with: Path | None = None) -> LeaseHolder:
        argv = [sys.executable, "-c", _LEASE_HOLDER, str(path)]
        child = subprocess.Popen(
            argv + ([str(replace_with)] if replace_with else []), stdout=subprocess.PIPE, text=True
        )
        started.append(child)
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        if line != "ready":
            pytest.skip(f"no file leases here: {line}")
        return LeaseHolder(child)

    yield hold
    for child in started:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_file_removed_after_the_transport_opened_it_arrives_whole(
    transport: Transport, tmp_path: Path, on_open: Callable[..., LeaseHolder]
) -> None:
    node, home = tmp_path / "node", tmp_path / "runs"
    six = write(node / "ckpt-00000006.pt", os.urandom(300_000))
    seven = write(node / "ckpt-00000007.pt", os.urandom(300_000), mtime=LONG_AGO + 7)
    holder = on_open(node / "ckpt-00000007.pt")
    report = pull_dir(transport, str(node), home)
    assert holder.done() == 0 and not (node / "ckpt-00000007.pt").exists(), "it was removed"
    assert (report.files_sent, report.skipped) == (2, ())
    assert names(home) == ["ckpt-00000006.pt", "ckpt-00000007.pt"]
    assert (home / "ckpt-00000006.pt").read_bytes() == six
    assert (home / "ckpt-00000007.pt").read_bytes() == seven, "the copy of what was opened"
    assert int((home / "ckpt-00000007.pt").stat().st_mtime) == int(LONG_AGO + 7)


def test_a_file_replaced_while_it_is_copied_keeps_the_copied_versions_mtime(
    transport: Transport, tmp_path: Path, on_open: Callable[..., LeaseHolder]
) -> None:
    """A workload that saves `latest.pt` again and again (temp file, then rename over it): the
    copy holds one version, with that version's mtime. With the new version's mtime on the old
    content, the next pulls would take the copy for current, for good."""
    node, home = tmp_path / "node", tmp_path / "runs"
    old = write(node / "latest.pt", os.urandom(100_000), mtime=LONG_AGO)
    new = write(tmp_path / "being-saved" / "latest.pt", os.urandom(100_000), mtime=LONG_AGO + 60)
    holder = on_open(node / "latest.pt", replace_with=tmp_path / "being-saved" / "latest.pt")
    pull_dir(transport, str(node), home)
    assert holder.done() == 0 and (node / "latest.pt").read_bytes() == new, "it was replaced"
    assert (home / "latest.pt").read_bytes() == old
    assert int((home / "latest.pt").stat().st_mtime) == int(LONG_AGO)
    report = pull_dir(transport, str(node), home)
    assert report.files_sent == 1 and (home / "latest.pt").read_bytes() == new


def test_get_calls_a_vanished_file_remote_file_not_found(
    transport: Transport, tmp_path: Path
) -> None:
    with pytest.raises(RemoteFileNotFoundError, match="no such file"):
        transport.get(str(tmp_path / "node" / "ckpt-00000005.pt"), tmp_path / "runs" / "c.pt")


def test_a_home_folder_that_cannot_be_made_is_not_the_nodes_file_missing(
    transport: Transport, tmp_path: Path
) -> None:
    write(tmp_path / "node" / "c.pt", b"weights")
    write(tmp_path / "runs", b"a file where the folder should be")
    with pytest.raises(TransportError) as caught:
        transport.get(str(tmp_path / "node" / "c.pt"), tmp_path / "runs" / "job" / "c.pt")
    assert not isinstance(caught.value, RemoteFileNotFoundError)
    assert "runs" in str(caught.value)


def test_a_folder_in_the_way_at_home_is_skipped_and_reported_at_once(
    transport: Transport, tmp_path: Path
) -> None:
    """The node's file is there, but a folder holds its name at home: that file is skipped and
    reported (the job goes on), at once, not retried as a lost link, no temp file left."""
    node, home = tmp_path / "node", tmp_path / "runs"
    write(node / "ckpt-00000006.pt", b"weights")
    write(node / "ckpt-00000007.pt", b"newer")
    (home / "ckpt-00000006.pt" / "in-the-way").mkdir(parents=True)
    started = time.monotonic()
    report = pull_dir(transport, str(node), home)
    assert time.monotonic() - started < 10
    assert [name.split(" ")[0] for name in report.odd] == ["ckpt-00000006.pt"]
    assert (home / "ckpt-00000007.pt").read_bytes() == b"newer"
    assert names(home) == ["ckpt-00000006.pt", "ckpt-00000007.pt"], "no temp file left behind"


def test_a_file_the_node_will_not_let_us_read_still_fails(
    transport: Transport, tmp_path: Path
) -> None:
    node = tmp_path / "node"
    write(node / "ckpt-00000006.pt", b"weights")
    (node / "ckpt-00000006.pt").chmod(0)
    if os.access(node / "ckpt-00000006.pt", os.R_OK):
        pytest.skip("this user reads any file (root, with CAP_DAC_OVERRIDE)")
    started = time.monotonic()
    with pytest.raises(TransportError, match="permission denied") as caught:
        pull_dir(transport, str(node), tmp_path / "runs")
    assert time.monotonic() - started < 10
    assert not isinstance(caught.value, RemoteFileNotFoundError)
    assert "ckpt-00000006.pt" in str(caught.value)


def test_a_file_gone_under_another_name_for_the_error_is_skipped(
    transport: Transport, tmp_path: Path
) -> None:
    node, home = tmp_path / "node", tmp_path / "runs"
    six = write(node / "ckpt-00000006.pt", b"six")
    write(node / "ckpt-00000005.pt", b"five")
    racing = RacingNode(
        transport, race=(node / "ckpt-00000005.pt").unlink, failing="ckpt-00000005.pt"
    )
    report = pull_dir(racing, str(node), home)
    assert report.skipped == ("ckpt-00000005.pt",), "asked the node: the file is gone"
    assert racing.listings == 2, "one listing for the pull, one to ask"
    assert names(home) == ["ckpt-00000006.pt"]
    assert (home / "ckpt-00000006.pt").read_bytes() == six


def test_a_file_still_there_fails_with_the_transports_own_error(
    transport: Transport, tmp_path: Path
) -> None:
    node = tmp_path / "node"
    write(node / "ckpt-00000006.pt", b"six")
    denied = TransportError("ckpt-00000006.pt: permission denied")
    racing = RacingNode(transport, failing="ckpt-00000006.pt", error=denied)
    with pytest.raises(TransportError) as caught:
        pull_dir(racing, str(node), tmp_path / "runs")
    assert caught.value is denied, "raised as it came"
    assert racing.listings == 2, "the node was asked, and the file is there"


def test_a_lost_link_is_raised_without_asking_the_node_again(
    transport: Transport, tmp_path: Path
) -> None:
    node = tmp_path / "node"
    write(node / "ckpt-00000006.pt", b"six")
    lost = ConnectionLostError("lost the node and could not reconnect within 300s")
    racing = RacingNode(
        transport,
        race=(node / "ckpt-00000006.pt").unlink,  # even for a file gone by now
        failing="ckpt-00000006.pt",
        error=lost,
    )
    with pytest.raises(ConnectionLostError) as caught:
        pull_dir(racing, str(node), tmp_path / "runs")
    assert caught.value is lost and racing.listings == 1


class _SftpSpy:
    """The transport's own SFTP client, with each file it opens watched: where reading
    starts (`seeks`), and `after_read` run after each chunk has arrived."""

    def __init__(self, client: Any, seeks: list[int], after_read: Callable[[], None]) -> None:
        self._client, self.seeks, self.after_read = client, seeks, after_read

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def open(self, path: str, mode: str = "r") -> _FileSpy:
        return _FileSpy(self._client.open(path, mode), self)


class _FileSpy:
    def __init__(self, handle: Any, spy: _SftpSpy) -> None:
        self._handle, self._spy = handle, spy

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _FileSpy:
        self._handle.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._handle.__exit__(*exc_info)

    def seek(self, offset: int, whence: int = 0) -> None:
        self._spy.seeks.append(offset)
        self._handle.seek(offset, whence)

    def read(self, size: int) -> bytes:
        data = self._handle.read(size)
        self._spy.after_read()
        return data


@pytest.mark.parametrize("rewritten", [False, True], ids=["same-version", "rewritten"])
def test_a_get_cut_mid_file_resumes_only_the_version_it_began(
    sshd: LoopbackSshd, pins: HostKeyPins, tmp_path: Path, rewritten: bool
) -> None:
    """The link drops after the first MiB of a file arrived. The retry continues the partial
    copy when the node's file is still the one it began; when the node saved a new version
    meanwhile, it starts again: never the old version's start with the new one's end."""
    node_file = tmp_path / "node" / "latest.pt"
    first = write(node_file, os.urandom(3 << 20), mtime=LONG_AGO)
    second = os.urandom(3 << 20)
    seeks: list[int] = []
    # Slow enough that, when the first MiB has arrived, the rest has not: the cut is felt.
    with CuttingProxy(sshd.port, rate_bytes_per_s=4 << 20) as proxy:
        over_ssh = ssh_transport(sshd, pins, port=proxy.port)

        def link_drops_once() -> None:
            if not proxy.cuts:
                proxy.cut()
                if rewritten:
                    write(node_file, second, mtime=LONG_AGO + 60)

        real = over_ssh._sftp_client
        over_ssh._sftp_client = lambda: _SftpSpy(real(), seeks, link_drops_once)  # type: ignore[method-assign]
        over_ssh.get(str(node_file), tmp_path / "runs" / "latest.pt")
        cuts = proxy.cuts
        over_ssh.close()
    assert cuts == 1 and over_ssh.connections == 2, "one cut, one reconnect"
    home = tmp_path / "runs" / "latest.pt"
    if rewritten:
        assert seeks == [0, 0], "started again"
        assert home.read_bytes() == second
        assert int(home.stat().st_mtime) == int(LONG_AGO + 60)
    else:
        assert seeks == [0, 1 << 20], "continued after the MiB it had"
        assert home.read_bytes() == first
        assert int(home.stat().st_mtime) == int(LONG_AGO)
    assert names(home.parent) == ["latest.pt"], "no partial copy left"
