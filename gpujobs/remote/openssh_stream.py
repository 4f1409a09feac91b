"""Many files at once as one tar stream through this machine's OpenSSH client, on the route
rsync takes (the transport's generated ssh config: the job's key, the pinned host keys, the
lab's bastions).

The same stream over the open paramiko link (exec_files.put_tree) encrypts in this process, in
Python's own thread: about 200 MB/s here, below plain rsync. OpenSSH encrypts in a process of
its own, beside this one that reads the files and writes the archive, which puts a first copy of
a large dataset at or above rsync's speed. The node's side is exec_files' UNTAR, so what lands
and the listing that verifies it are the same either way.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from gpujobs.errors import ConnectionLostError
from gpujobs.remote import exec_files
from gpujobs.remote.transport import RemoteFile

_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# ssh's own exit status for a failed link (the remote command's status otherwise).
_SSH_FAILED = 255
# Printed by the node before it unpacks: past it, ssh had reached the node, so a failure later
# is a link lost mid-stream, not a route this machine's ssh cannot take.
_STARTED = b"gpujobs-stream-started\n"


class NotReached(ConnectionLostError):
    """ssh failed before the node's side started: no link at all, or a route, key or agent
    that this machine's ssh cannot use where paramiko can."""


def available() -> bool:
    return shutil.which("ssh") is not None


class _Pipe:
    """ssh's stdin as a tar stream's sink."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.pipe = pipe

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        self.pipe.write(data)


def put_tree(
    ssh: Sequence[str],
    local_dir: Path,
    paths: Sequence[str],
    remote_dir: str,
    *,
    progress: Callable[[int], None] | None = None,
) -> list[RemoteFile] | None:
    """Files under local_dir into remote_dir (mtimes kept) through `ssh` (the transport's
    openssh_argv(): ssh, its config, the node's name), and the folder's listing afterwards
    (None where the node's find cannot print it). A link lost mid-stream raises
    ConnectionLostError (the caller goes on by a way that resumes); ssh that never reached the
    node, NotReached; the node's refusal, CommandFailedError."""
    argv = [*ssh, f"echo {_STARTED.decode().strip()} && {exec_files.untar_command(remote_dir)}"]
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
        assert child.stdin is not None and child.stdout is not None
        with contextlib.suppress(OSError):  # Linux: fewer, larger hand-overs to ssh
            fcntl.fcntl(child.stdin.fileno(), _F_SETPIPE_SZ, 1 << 20)
        # The listing comes after the stream; read in a thread all the same, so that nothing
        # ssh writes early can fill the pipe while this side is still sending.
        listing: list[bytes] = []
        reader = threading.Thread(target=lambda: listing.append(child.stdout.read()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        try:
            exec_files.send_tar(_Pipe(child.stdin), local_dir, paths, progress)
            child.stdin.close()
        except BrokenPipeError:
            pass  # the node stopped reading (no tar, no folder) or the link fell: see the status
        except BaseException:
            child.kill()
            child.wait()
            raise
        status = child.wait()
        reader.join()
        errors.seek(0)
        error = errors.read().decode(errors="replace").strip()
    output = b"".join(listing)
    started = output.startswith(_STARTED)
    if status == _SSH_FAILED or not started:
        why = error[-300:] or "link lost"
        if not started:
            raise NotReached(f"ssh did not reach the node for the upload ({why})")
        raise ConnectionLostError(f"lost the link during the upload into {remote_dir} ({why})")
    return exec_files.untar_outcome(status, output[len(_STARTED) :], error, remote_dir)
