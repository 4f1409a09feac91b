"""File transfer over exec channels: for hosts whose sshd has no SFTP subsystem (hardened lab
machines), bytes stream through `cat` on the node's side of one channel each way; and, on every
host, many files at once as one tar stream into `tar -x` (put_tree), which costs one command
where SFTP costs round trips per file."""

from __future__ import annotations

import os
import shlex
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

import paramiko

from gpujobs.errors import CommandFailedError, RemoteFileNotFoundError, TransportError
from gpujobs.remote.transport import RemoteFile

_CHUNK = 1 << 20
_MISSING = 44  # exit code our scripts use for "no such file"

# $1 final path, $2 temp path, $3 octal mode or "", $4 mtime: stdin lands in temp, then renamed.
_PUT = (
    'mkdir -p "$(dirname "$2")" && cat > "$2" && { [ -z "$3" ] || chmod "$3" "$2"; } && '
    'touch -d "@$4" "$2" 2>/dev/null; [ "$1" = "$2" ] || mv -f "$2" "$1"'
)
# $1 path: its size and mtime on the first line, then its bytes.
_GET = '[ -f "$1" ] || exit 44; exec 3< "$1" && stat -c "%s %Y" "$1" && cat <&3'
# GNU find prints each file as path, size, mtime, type, NUL-separated (names may hold newlines).
FIND_FILES = "find . -mindepth 1 ! -type d -printf '%P\\0%s\\0%T@\\0%y\\0'"
# $1 path, $2 offset, $3 limit
_READ = '[ -f "$1" ] || exit 0; tail -c +"$(($2 + 1))" "$1" | head -c "$3"'


def _open(client: paramiko.SSHClient, script: str, *args: str) -> paramiko.Channel:
    transport = client.get_transport()
    if transport is None:
        raise EOFError("not connected")
    channel = transport.open_session(timeout=15)
    channel.exec_command(shlex.join(["sh", "-c", script, "sh", *args]))
    return channel


def _finish(channel: paramiko.Channel, what: str) -> int:
    status = channel.recv_exit_status()
    if status == -1:
        raise EOFError(f"connection dropped during {what}")
    return status


def put(
    client: paramiko.SSHClient, local: Path, remote: str, mode: int | None, atomic: bool
) -> None:
    parent, name = os.path.split(remote)
    temp = f"{parent}/.{name}.gpujobs-part" if atomic else remote
    mtime = str(int(local.stat().st_mtime))
    channel = _open(client, _PUT, remote, temp, "" if mode is None else f"{mode:o}", mtime)
    try:
        with local.open("rb") as source:
            while chunk := source.read(_CHUNK):
                channel.sendall(chunk)
        channel.shutdown_write()
        error = channel.makefile_stderr("rb").read().decode(errors="replace").strip()
        if _finish(channel, f"upload of {remote}") != 0:
            raise TransportError(f"cannot write {remote} over exec: {error[-300:]}")
    finally:
        channel.close()


def get(client: paramiko.SSHClient, remote: str, local: Path) -> None:
    temp = local.parent / f".{local.name}.gpujobs-part"
    local.parent.mkdir(parents=True, exist_ok=True)
    channel = _open(client, _GET, remote)
    try:
        stream = channel.makefile("rb")
        header = stream.readline().split()
        if len(header) != 2:
            if _finish(channel, f"download of {remote}") == _MISSING:
                raise RemoteFileNotFoundError(f"{remote}: no such file")
            raise TransportError(f"cannot read {remote} over exec")
        size, mtime = int(header[0]), float(header[1])
        received = 0
        with temp.open("wb") as target:
            while chunk := stream.read(_CHUNK):
                target.write(chunk)
                received += len(chunk)
        if _finish(channel, f"download of {remote}") != 0 or received < size:
            temp.unlink(missing_ok=True)
            raise EOFError(f"download of {remote} ended after {received} of {size} bytes")
        os.utime(temp, (time.time(), mtime))
        os.replace(temp, local)
    finally:
        channel.close()


def read(client: paramiko.SSHClient, remote: str, offset: int, limit: int) -> bytes:
    channel = _open(client, _READ, remote, str(offset), str(limit))
    try:
        data = channel.makefile("rb").read()
        _finish(channel, f"read of {remote}")
        return bytes(data)
    finally:
        channel.close()


# $1 folder: a tar stream on stdin unpacked into it (mtimes kept, as the size+mtime check needs;
# owned by the login user), then every file below it listed as list_files' `find` lists, so the
# caller verifies without another command. Exits 5 before reading when the node's tar is missing
# or lacks the options (busybox); 3: no folder; 4: tar failed; else find's status.
_UNTAR = (
    "tar --no-same-owner --version >/dev/null 2>&1 || exit 5; "
    'mkdir -p "$1" && cd "$1" || exit 3; tar -x --no-same-owner -f - || exit 4; '
    f"exec {FIND_FILES}"
)
NO_TAR = 5
# Files up to this size are read whole before their header is sent; larger ones go in chunks
# of this size straight from a reused buffer. Sends are batched to at least this size too.
_STREAM_CHUNK = 1 << 20
_BLOCK = 512
_RECORD = 20 * _BLOCK
# After the last byte is sent: how long tar's last writes and the listing may take.
_LISTING_TIMEOUT_S = 300.0


def put_tree(
    client: paramiko.SSHClient,
    local_dir: Path,
    paths: Sequence[str],
    remote: str,
    *,
    timeout_s: float,
    progress: Callable[[int], None] | None = None,
) -> list[RemoteFile] | None:
    """Files under local_dir as one tar stream over one exec channel, written straight to the
    channel in large sends (no per-file round trip, no per-file channel). Returns the folder's
    listing on the node afterwards, or None where the node's find cannot print one. A lost
    link raises EOFError/OSError/SSHException from paramiko; the node's own refusal (no folder,
    a full disk; exit code NO_TAR: no tar that takes these options), CommandFailedError."""
    channel = _open(client, _UNTAR, remote)
    channel.settimeout(timeout_s)  # a window that never reopens is a dead link
    try:
        try:
            send_tar(channel, local_dir, paths, progress)
            channel.shutdown_write()
        except OSError:
            if not channel.exit_status_ready():
                raise
            # The node stopped reading (tar refused, or no folder): its message says why.
        channel.settimeout(max(timeout_s, _LISTING_TIMEOUT_S))
        listing = _read_all(channel)
        error = channel.makefile_stderr("rb").read().decode(errors="replace").strip()
        status = _finish(channel, f"upload into {remote}")
        return untar_outcome(status, listing, error, remote)
    finally:
        channel.close()


def untar_command(remote: str) -> str:
    """The node's side of a tree upload (UNTAR, into `remote`), as one command line."""
    return shlex.join(["sh", "-c", _UNTAR, "sh", remote])


def untar_outcome(status: int, listing: bytes, error: str, remote: str) -> list[RemoteFile] | None:
    """What an UNTAR run's exit status, stdout and stderr mean: the folder's listing; None
    where the node's find cannot print one; or CommandFailedError for the node's refusal."""
    if status in (3, 4, NO_TAR):
        step = {3: "mkdir", 4: "tar -x"}.get(status, "tar --no-same-owner")
        raise CommandFailedError(f"{step} into {remote}", status, error[-300:])
    if status != 0:
        return None  # no GNU find there (busybox, BSD): the caller lists another way
    return parse_find_listing(listing.decode("utf-8", errors="surrogateescape"))


class Sink(Protocol):
    """Where a tar stream goes: a paramiko channel, or a pipe into OpenSSH."""

    def sendall(self, data: bytes | bytearray | memoryview) -> None: ...


def send_tar(
    channel: Sink,
    local_dir: Path,
    paths: Sequence[str],
    progress: Callable[[int], None] | None,
) -> None:
    """`paths` (below local_dir) as one tar archive, in large sends."""
    pending = bytearray()
    chunk = bytearray(_STREAM_CHUNK)
    done = 0
    for path in paths:
        source = local_dir / path
        try:
            handle = source.open("rb", buffering=0)
        except OSError as exc:
            raise TransportError(f"cannot read {source}: {exc.strerror or exc}") from None
        with handle:
            info = os.fstat(handle.fileno())  # the version read, whatever the manifest saw
            size = info.st_size
            header = tarfile.TarInfo(path)
            header.size, header.mtime, header.mode = size, int(info.st_mtime), info.st_mode & 0o7777
            pending += header.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
            if size < _STREAM_CHUNK:
                data = _read_local(handle, size, source)
                pending += data
                pending += bytes(-size % _BLOCK)
            else:
                channel.sendall(memoryview(pending))
                pending = bytearray()
                left = size
                view = memoryview(chunk)
                while left:
                    got = _read_into(handle, view[: min(left, _STREAM_CHUNK)], source)
                    channel.sendall(view[:got])
                    left -= got
                pending += bytes(-size % _BLOCK)
        done += size
        if len(pending) >= _STREAM_CHUNK:
            channel.sendall(memoryview(pending))
            pending = bytearray()
        if progress:
            progress(done)
    pending += bytes(2 * _BLOCK)  # the end of the archive, padded to a whole record
    pending += bytes(-len(pending) % _RECORD)
    channel.sendall(memoryview(pending))


def _read_local(handle: BinaryIO, size: int, source: Path) -> bytes:
    """`size` bytes of a small file; a file that shrank since its fstat is padded with zeros
    (its mtime, or its size, then differs from the copy's, so the next sync sends it again)."""
    data = bytearray()
    try:
        while len(data) < size and (part := handle.read(size - len(data))):
            data += part
    except OSError as exc:
        raise TransportError(f"cannot read {source}: {exc.strerror or exc}") from None
    return bytes(data) + bytes(size - len(data))


def _read_into(handle: BinaryIO, view: memoryview, source: Path) -> int:
    try:
        got = handle.readinto(view)
    except OSError as exc:
        raise TransportError(f"cannot read {source}: {exc.strerror or exc}") from None
    if not got:  # shrank while read: zeros, as in _read_local
        view[:] = bytes(len(view))
        return len(view)
    return got


def _read_all(channel: paramiko.Channel) -> bytes:
    out = bytearray()
    while data := channel.recv(1 << 16):
        out += data
    return bytes(out)


def parse_find_listing(text: str) -> list[RemoteFile]:
    """FIND_FILES' output: path, size, mtime, type, each NUL-terminated."""
    fields = text.split("\0")
    found = [
        RemoteFile(path=path, size=int(size), mtime=float(mtime), is_symlink=kind == "l", kind=kind)
        for path, size, mtime, kind in zip(
            fields[0::4], fields[1::4], fields[2::4], fields[3::4], strict=False
        )
        if path
    ]
    return sorted(found, key=lambda item: item.path)
