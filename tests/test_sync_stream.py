"""Dataset uploads against the loopback sshd: a first copy into an empty folder, or many changed
files, as one tar stream over an exec channel of the open link (verified by the listing the node
prints after it); rsync for what changed later, with no command before it; a node without rsync;
a node without SFTP; a link cut in the middle of the stream. Nothing about SSH is mocked."""

from __future__ import annotations

import hashlib
import os
import random
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gpujobs.errors import CommandFailedError, TransportError
from gpujobs.remote.ssh import HostKeyPins, SshSettings, SshTarget, SSHTransport
from gpujobs.remote.sync import push_dir
from gpujobs.testing.ssh import CuttingProxy, LoopbackSshd
from tests.conftest import ssh_transport

# Names a dataset really holds, and some that break naive quoting or tar's 100-byte field.
NAMES = [
    "plain.bin",
    'sub dir/it\'s "quoted" $HOME `id`.txt',
    "-leading-dash.txt",
    "new\nline.txt",
    "ünïcode/ok.txt",
    os.fsdecode(b"raw-\xff-not-utf8.bin"),
    "deep/" + "a" * 90 + "/" + "b" * 120 + ".jpg",
    "empty.txt",
]


def _dataset(root: Path) -> None:
    rng = random.Random(5)
    for number, name in enumerate(NAMES):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"" if name == "empty.txt" else rng.randbytes(rng.randint(1, 5000)))
        os.utime(path, (1_600_000_000 + number, 1_600_000_000 + number))
    (root / "big.bin").write_bytes(os.urandom(3 << 20))  # sent in chunks, not read whole
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    # Symlinks are sent as what they point to, as the manifest counts them.
    (root / "alias.bin").symlink_to("plain.bin")
    (root / "linked").symlink_to("sub dir")
    (root / "dangling").symlink_to("nowhere")


def _files(root: Path) -> dict[str, tuple[str, int]]:
    """Every regular file below root (symlinks followed, a link back to a folder above it not
    walked again): its digest and whole-second mtime."""
    found = {}

    def walk(folder: Path, above: frozenset[tuple[int, int]]) -> None:
        here = folder.stat()
        if (here.st_dev, here.st_ino) in above:
            return
        for path in folder.iterdir():
            if path.name == ".gpujobs-partial":
                continue
            if path.is_dir():
                walk(path, above | {(here.st_dev, here.st_ino)})
            elif path.is_file():  # not a dangling link, not a FIFO
                found[path.relative_to(root).as_posix()] = (
                    hashlib.sha256(path.read_bytes()).hexdigest(),
                    int(path.stat().st_mtime),
                )

    walk(root, frozenset())
    return found


@pytest.fixture
def no_sftp(tmp_path: Path) -> Iterator[LoopbackSshd]:
    with LoopbackSshd(tmp_path / "no-sftp", sftp=False) as server:
        yield server


def _transport(server: LoopbackSshd, pins: HostKeyPins, port: int | None = None) -> SSHTransport:
    return ssh_transport(server, pins, port=port)


@dataclass
class StreamWay:
    through_ssh: bool  # streams of any size through this machine's ssh, else paramiko's link
    used: list[str]  # the outcome of each stream through ssh


@pytest.fixture(params=["paramiko", "openssh"])
def stream_way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> StreamWay:
    """Streams go over paramiko's link, or through this machine's ssh (large ones do)."""
    from gpujobs.remote import openssh_stream, ssh

    way = StreamWay(request.param == "openssh", [])
    monkeypatch.setattr(ssh, "OPENSSH_STREAM_MIN_BYTES", 0 if way.through_ssh else 1 << 62)
    real = openssh_stream.put_tree

    def spied(*args: Any, **kwargs: Any) -> Any:
        try:
            listing = real(*args, **kwargs)
        except Exception as exc:
            way.used.append(type(exc).__name__)
            raise
        way.used.append("landed")
        return listing

    monkeypatch.setattr(openssh_stream, "put_tree", spied)
    return way


@pytest.mark.parametrize(
    ("host", "method", "then"),
    [("sftp", "auto", "rsync"), ("sftp", "files", "files"), ("no-sftp", "files", "stream")],
)
def test_a_first_copy_goes_as_one_stream_and_a_later_change_by_the_usual_way(
    sshd: LoopbackSshd,
    no_sftp: LoopbackSshd,
    pins: HostKeyPins,
    tmp_path: Path,
    host: str,
    method: str,
    then: str,
    stream_way: StreamWay,
) -> None:
    source, target = tmp_path / "data", tmp_path / "node" / "deep" / "data"
    _dataset(source)
    transport = _transport(sshd if host == "sftp" else no_sftp, pins)
    seen: list[tuple[int, int]] = []
    try:
        first = push_dir(
            transport, source, str(target), method=method, progress=lambda *p: seen.append(p)
        )
        assert first.method == "stream"
        assert first.files_sent == first.files_total == len(NAMES) + 4
        assert seen[-1] == (first.bytes_total, first.bytes_total)
        assert _files(target) == _files(source)
        assert not (target / "alias.bin").is_symlink() and (target / "linked").is_dir()
        assert stat.S_IMODE((target / "run.sh").stat().st_mode) & 0o100, "modes kept"
        assert not (target / "dangling").exists()
        # One file changed (and the link to it): only they go, by rsync where the node has
        # it, else one by one over SFTP, else (no SFTP: a command per file) as one stream.
        (source / "plain.bin").write_bytes(b"changed")
        again = push_dir(transport, source, str(target), method=method)
        assert (again.method, again.files_sent, again.bytes_sent) == (then, 2, 14)
        assert _files(target) == _files(source)
        assert push_dir(transport, source, str(target), method=method).files_sent == 0
    finally:
        transport.close()
    streams = 1 + (then == "stream")
    assert stream_way.used == (["landed"] * streams if stream_way.through_ssh else [])


def test_many_changed_files_go_as_a_stream_over_sftp_too(
    sshd: LoopbackSshd, pins: HostKeyPins, tmp_path: Path
) -> None:
    source, target = tmp_path / "data", tmp_path / "node"
    for index in range(30):
        (source / f"class-{index % 3}").mkdir(parents=True, exist_ok=True)
        (source / f"class-{index % 3}" / f"{index}.png").write_bytes(os.urandom(100 + index))
    transport = _transport(sshd, pins)
    try:
        target.mkdir()
        (target / "class-0").mkdir()
        (target / "class-0" / "0.png").write_bytes(b"stale")
        report = push_dir(transport, source, str(target), method="files")
        assert (report.method, report.files_sent) == ("stream", 30)
        assert _files(target) == _files(source)
    finally:
        transport.close()


def _without_rsync(transport: SSHTransport, folder: Path) -> Path:
    """Make the node look rsync-less to this transport's rsync: its -e command puts a PATH
    with only sh and mkdir in front of the remote command. Returns the log of its uses."""
    bin_dir, log = folder / "bin", folder / "rsh.log"
    bin_dir.mkdir(parents=True)
    for tool in ("sh", "mkdir"):
        (bin_dir / tool).symlink_to(f"/bin/{tool}")
    shell, prefix = transport.rsync_shell()
    wrapper = folder / "rsh"
    wrapper.write_text(
        f'#!/bin/sh\necho used >> "{log}"\nhost=$1; shift\n'
        f'exec {shell} "$host" PATH={bin_dir} "$@"\n'
    )
    wrapper.chmod(0o755)
    transport.rsync_shell = lambda: (str(wrapper), prefix)  # type: ignore[method-assign]
    return log


def test_a_node_without_rsync_is_synced_file_by_file_and_remembered(
    sshd: LoopbackSshd, pins: HostKeyPins, tmp_path: Path
) -> None:
    source, target = tmp_path / "data", tmp_path / "node"
    _dataset(source)
    transport = _transport(sshd, pins)
    try:
        log = _without_rsync(transport, tmp_path / "fake")
        assert push_dir(transport, source, str(target)).method == "stream", "empty: no rsync"
        assert not log.exists()
        (source / "plain.bin").write_bytes(b"changed")
        report = push_dir(transport, source, str(target))
        assert (report.method, report.files_sent) == ("files", 2)  # the file and its link
        assert log.read_text() == "used\n" and transport.has_rsync is False
        (source / "plain.bin").write_bytes(b"again")
        assert push_dir(transport, source, str(target)).method == "files"
        assert log.read_text() == "used\n", "not asked again"
        with pytest.raises(TransportError, match="rsync on the node is missing"):
            push_dir(transport, source, str(target), method="rsync")
        assert _files(target) == _files(source)
    finally:
        transport.close()


def test_rsync_makes_a_missing_folder_itself(
    sshd: LoopbackSshd, pins: HostKeyPins, tmp_path: Path
) -> None:
    """A target that is not empty goes by rsync with no command before it: the command that
    starts rsync on the node makes every level of the folder."""
    source = tmp_path / "data"
    _dataset(source)
    transport = _transport(sshd, pins)
    try:
        transport.folder_is_empty = lambda remote_dir: False  # type: ignore[method-assign]
        target = tmp_path / "node" / "a b" / "it's"
        report = push_dir(transport, source, str(target), method="rsync")
        assert (report.method, report.files_sent) == ("rsync", len(NAMES) + 4)
        assert _files(target) == _files(source)
        assert transport.has_rsync is True
    finally:
        transport.close()


@pytest.mark.parametrize("method", ["auto", "files"])
def test_a_folder_that_cannot_be_made_fails_at_once_with_the_reason(
    sshd: LoopbackSshd, pins: HostKeyPins, tmp_path: Path, method: str
) -> None:
    source = tmp_path / "data"
    _dataset(source)
    (tmp_path / "a-file").write_text("not a folder")
    transport = _transport(sshd, pins)
    started = time.monotonic()
    try:
        with pytest.raises(CommandFailedError, match="Not a directory"):
            push_dir(transport, source, str(tmp_path / "a-file" / "data"), method=method)
    finally:
        transport.close()
    assert time.monotonic() - started < 10


def _cut_once_after(proxy: CuttingProxy, forwarded: int) -> threading.Thread:
    def cut() -> None:
        deadline = time.monotonic() + 60
        while proxy.bytes_forwarded < forwarded and time.monotonic() < deadline:
            time.sleep(0.005)
        proxy.cut()

    thread = threading.Thread(target=cut, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("host", "method", "finished_by"),
    [("sftp", "auto", "rsync"), ("sftp", "files", "files"), ("no-sftp", "files", "stream")],
)
def test_a_link_cut_during_the_stream_goes_on_from_what_landed(
    sshd: LoopbackSshd,
    no_sftp: LoopbackSshd,
    pins: HostKeyPins,
    tmp_path: Path,
    host: str,
    method: str,
    finished_by: str,
    stream_way: StreamWay,
) -> None:
    """A stream sent again would start over: after the cut, rsync (partial files resumed) or
    SFTP (a file cut short continued) goes on from what the node holds; without SFTP what is
    left goes as a stream again. What crossed the link stays near the dataset's size. Through
    this machine's ssh the same: a cut past the node's start is a lost link, not a route ssh
    cannot take (which would start the stream over on paramiko's link)."""
    source, target = tmp_path / "data", tmp_path / "node"
    rng = random.Random(9)
    for index in range(60):
        path = source / f"class-{index % 4}" / f"img-{index:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(1000, 60_000)))
    (source / "shard.bin").write_bytes(os.urandom(3 << 20))
    size = sum(path.stat().st_size for path in source.rglob("*") if path.is_file())
    server = sshd if host == "sftp" else no_sftp
    with CuttingProxy(server.port, rate_bytes_per_s=4e6) as proxy:
        target_ = SshTarget(server.host, proxy.port, server.user, str(server.client_key))
        transport = SSHTransport(target_, pins, SshSettings(reconnect_window_s=30))
        try:
            transport.run(["true"])
            login = proxy.bytes_forwarded
            cutter = _cut_once_after(proxy, login + size // 2)
            report = push_dir(transport, source, str(target), method=method)  # type: ignore[arg-type]
            cutter.join(timeout=5)
            assert proxy.cuts == 1
        finally:
            transport.close()
    assert transport.connections == 2, "cut during the sync, and reconnected once"
    assert report.method == ("stream" if finished_by == "stream" else f"stream+{finished_by}")
    if stream_way.through_ssh:
        assert stream_way.used[0] == "ConnectionLostError", stream_way.used
    assert report.files_sent == 61
    assert _files(target) == _files(source)
    assert proxy.bytes_forwarded - login < 1.6 * size, (proxy.bytes_forwarded, size)


def test_a_route_this_machines_ssh_cannot_take_falls_back_to_paramiko_once(
    sshd: LoopbackSshd, pins: HostKeyPins, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where ssh here cannot reach the node (a key only paramiko is given, an agent it cannot
    see), the stream goes over paramiko's link, and ssh is not tried again."""
    from gpujobs.remote import openssh_stream, ssh
    from gpujobs.testing.ssh import free_port

    monkeypatch.setattr(ssh, "OPENSSH_STREAM_MIN_BYTES", 0)
    tries: list[str] = []
    real = openssh_stream.put_tree

    def spied(*args: Any, **kwargs: Any) -> Any:
        tries.append("ssh")
        return real(*args, **kwargs)

    monkeypatch.setattr(openssh_stream, "put_tree", spied)
    source = tmp_path / "data"
    _dataset(source)
    transport = _transport(sshd, pins)
    nowhere = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-p", str(free_port()), "127.0.0.1"]
    transport.openssh_argv = lambda: nowhere  # type: ignore[method-assign]
    try:
        for target in (tmp_path / "one", tmp_path / "two"):
            assert push_dir(transport, source, str(target)).method == "stream"
            assert _files(target) == _files(source)
    finally:
        transport.close()
    assert tries == ["ssh"], "tried once, then paramiko's link"


@pytest.mark.parametrize("odd", [None, "dangling", "loop", "fifo"])
def test_rsync_walks_a_plain_folder_itself_and_is_given_the_list_otherwise(
    sshd: LoopbackSshd,
    pins: HostKeyPins,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    odd: str | None,
) -> None:
    """rsync's own walk is faster than a list it is given; a folder where its walk would find
    other files than the manifest (a dangling link it calls an error, a loop it would follow,
    a FIFO) gets the manifest's list instead, and the copy is the same either way. A sync that
    skips files (the code bundle's junk) is given the list at once."""
    from gpujobs.remote import rsync

    walks: list[bool] = []
    real = rsync._run

    def spied(*args: Any, walk: bool, **kwargs: Any) -> Any:
        walks.append(walk)
        return real(*args, walk=walk, **kwargs)

    monkeypatch.setattr(rsync, "_run", spied)
    source, target = tmp_path / "data", tmp_path / "node"
    for index in range(40):
        (source / f"c{index % 4}").mkdir(parents=True, exist_ok=True)
        (source / f"c{index % 4}" / f"{index}.bin").write_bytes(os.urandom(50 + index))
    (source / "shared").symlink_to("c0")
    if odd == "dangling":
        (source / "c1" / "gone.bin").symlink_to("nowhere.bin")
    elif odd == "loop":
        (source / "c2" / "again").symlink_to("..")
    elif odd == "fifo":
        os.mkfifo(source / "c3" / "pipe")
    transport = _transport(sshd, pins)
    try:
        target.mkdir()
        (target / "c3").mkdir()
        (target / "c3" / "3.bin").write_bytes(b"stale")  # not empty: rsync, not a stream
        report = push_dir(transport, source, str(target), method="rsync")
        assert (report.method, report.files_total, report.files_sent) == ("rsync", 50, 50)
        assert _files(target) == _files(source)
        assert not (target / "c2" / "again").exists() and not (target / "c1" / "gone.bin").exists()
        assert not (target / "c3" / "pipe").exists()
        # One rsync that walks; or, stopped while it logged in, one given the list.
        assert walks == ([True] if odd is None else [True, False])
        walks.clear()
        (source / "c0" / "0.bin").write_bytes(b"changed")
        (source / "c0" / "junk.tmp").write_bytes(b"left here")
        report = push_dir(
            transport, source, str(target), skip=lambda path: path.endswith(".tmp"), method="rsync"
        )
        assert walks == [False] and not (target / "c0" / "junk.tmp").exists()
    finally:
        transport.close()
