"""File transfer over exec channels alone, for hosts whose sshd has no SFTP subsystem (hardened
lab machines): bytes stream through `cat` on the node's side of one channel each way."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

import paramiko

from gpujobs.errors import RemoteFileNotFoundError, TransportError

_CHUNK = 1 << 20
_MISSING = 44  # exit code our scripts use for "no such file"

# $1 final path, $2 temp path, $3 octal mode or "", $4 mtime: stdin lands in temp, then renamed.
_PUT = (
    'mkdir -p "$(dirname "$2")" && cat > "$2" && { [ -z "$3" ] || chmod "$3" "$2"; } && '
    'touch -d "@$4" "$2" 2>/dev/null; [ "$1" = "$2" ] || mv -f "$2" "$1"'
)
# $1 path: its size and mtime on the first line, then its bytes.
_GET = '[ -f "$1" ] || exit 44; exec 3< "$1" && stat -c "%s %Y" "$1" && cat <&3'
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


# $1 folder: a tar stream on stdin unpacked into it (mtimes kept, as the size+mtime check needs).
_UNTAR = 'mkdir -p "$1" && exec tar -x -f - -C "$1" 2>&1'


def put_tree(client: paramiko.SSHClient, local_dir: Path, paths: list[str], remote: str) -> None:
    """Many files in one tar stream over one exec channel: no per-file round trip."""
    import tarfile

    channel = _open(client, _UNTAR, remote)
    try:
        with channel.makefile("wb") as sink, tarfile.open(fileobj=sink, mode="w|") as archive:
            for path in paths:
                archive.add(local_dir / path, arcname=path, recursive=False)
        channel.shutdown_write()
        output = channel.makefile("rb").read().decode(errors="replace").strip()
        if _finish(channel, f"upload into {remote}") != 0:
            raise TransportError(f"cannot unpack into {remote} over exec: {output[-300:]}")
    finally:
        channel.close()
