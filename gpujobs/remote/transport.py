"""The seam between the lifecycle and a node: run a command, start one detached, read a file from
a byte offset, put and get files, list a folder. LocalTransport serves this machine; the SSH
transport serves every remote node through the same methods, so the lifecycle never changes.

Commands are argv lists, never shell strings: a transport that needs a shell line quotes every
word itself, so user input cannot become shell syntax.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from gpujobs.errors import (
    CommandFailedError,
    RemoteFileNotFoundError,
    TransportError,
    TransportTimeoutError,
)

_TAIL_LINES = 20
_COPY_CHUNK = 1 << 20

# `sh -c DETACH script cwd`: start `sh script` in a new session (its pid is its process group),
# detached from our stdio, and print its pid. Shared by every transport. Idempotent: the marker
# folder `.started` lets only the first call start the script; a repeat (a retry after a dropped
# connection whose first try did get through) prints the same pid and starts nothing.
DETACH = (
    'cd "$1" || exit 1; '
    "if mkdir .started 2>/dev/null; then "
    'setsid sh "$0" < /dev/null > /dev/null 2>&1 & '
    "echo $! > .started/pid.tmp && mv .started/pid.tmp .started/pid; fi; "
    "n=0; while [ ! -s .started/pid ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n + 1)); done; "
    "cat .started/pid"
)


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def tail(self, lines: int = _TAIL_LINES) -> str:
        text = (self.stdout + self.stderr).strip().splitlines()
        return "\n".join(text[-lines:])


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the listed folder, POSIX separators
    size: int
    mtime: float
    is_symlink: bool = False
    # find's %y letter: f a file, l a symlink; p (FIFO), s (socket), b/c (devices) are listed
    # so that a pull can skip and report them (opening a FIFO would block forever).
    kind: str = "f"


@runtime_checkable
class GivesUp(Protocol):
    """A transport that retries a lost link (SSH) and can be told to stop early: `give_up` is
    asked between reconnect attempts, and a reason it returns (say, "the provider terminated
    the instance") ends the retries at once with ConnectionLostError."""

    give_up: Callable[[], str | None] | None


class Transport(Protocol):
    def run(
        self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True
    ) -> CommandResult:
        """Run a command to completion; raise CommandFailedError on non-zero if `check`."""
        ...

    def start(self, script: str, *, cwd: str) -> int:
        """Start `sh script` detached in its own session (it outlives this connection)."""
        ...

    def read(self, path: str, offset: int, limit: int = 1 << 20) -> bytes:
        """Up to `limit` bytes of a file from `offset`; b'' if it does not exist (yet)."""
        ...

    def put(
        self, local: Path, remote: str, *, mode: int | None = None, atomic: bool = True
    ) -> None:
        """Copy one file to the node keeping its mtime: atomically (temp file + rename), or,
        with atomic=False, in place (a dataset sync, whose manifest check catches a half-sent
        file), which saves round trips per file over SSH."""
        ...

    def get(self, remote: str, local: Path) -> None:
        """Copy one file from the node, atomically (temp file + rename), keeping its mtime;
        RemoteFileNotFoundError when it is not there."""
        ...

    def list_files(self, remote_dir: str) -> list[RemoteFile]:
        """Every file below a folder (recursively), symlinks reported as such, not followed."""
        ...

    def make_dirs(self, paths: Sequence[str], *, private: bool = False) -> None:
        """`mkdir -p` each path; `private`: folders made are the user's only (0700)."""
        ...

    def link(self, target: str, path: str) -> None:
        """Make `path` a symbolic link to `target` (replacing a link already there)."""
        ...

    def close(self) -> None: ...


class LocalTransport:
    """This machine. Same contract as SSH, so the local provider exercises the real lifecycle."""

    def run(
        self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True
    ) -> CommandResult:
        command = shlex.join(argv)
        try:
            done = subprocess.run(
                list(argv),
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise TransportTimeoutError(f"`{command}` did not finish in {timeout:g}s") from None
        except OSError as exc:
            raise TransportError(f"cannot run `{command}`: {exc.strerror}") from None
        result = CommandResult(command, done.returncode, done.stdout, done.stderr)
        if check and not result.ok:
            raise CommandFailedError(command, result.exit_code, result.tail(5))
        return result

    def start(self, script: str, *, cwd: str) -> int:
        # Started as a grandchild in a session of its own, as over SSH: it is not our child, so
        # it never lingers as our zombie, and it outlives this process.
        result = self.run(["sh", "-c", DETACH, script, cwd], timeout=30)
        try:
            return int(result.stdout.strip())
        except ValueError:
            raise TransportError(f"starting {script} printed no pid: {result.tail(3)}") from None

    def read(self, path: str, offset: int, limit: int = 1 << 20) -> bytes:
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                return handle.read(limit)
        except FileNotFoundError:
            return b""

    def put(
        self, local: Path, remote: str, *, mode: int | None = None, atomic: bool = True
    ) -> None:
        with _open_source(local, missing=TransportError) as source:
            _copy_atomic(source, local, Path(remote), mode=mode)  # a local rename costs nothing

    def get(self, remote: str, local: Path) -> None:
        with _open_source(Path(remote), missing=RemoteFileNotFoundError) as source:
            _copy_atomic(source, Path(remote), local, mode=None)

    def list_files(self, remote_dir: str) -> list[RemoteFile]:
        root = Path(remote_dir)
        found: list[RemoteFile] = []
        for folder, dirs, files in os.walk(root):
            here = Path(folder)
            for name in files + [d for d in dirs if (here / d).is_symlink()]:
                path = here / name
                try:
                    info = path.lstat()
                except FileNotFoundError:
                    continue  # gone since the walk saw it
                found.append(
                    RemoteFile(
                        path=path.relative_to(root).as_posix(),
                        size=info.st_size,
                        mtime=info.st_mtime,
                        is_symlink=stat.S_ISLNK(info.st_mode),
                        kind=file_kind(info.st_mode),
                    )
                )
        return sorted(found, key=lambda item: item.path)

    def make_dirs(self, paths: Sequence[str], *, private: bool = False) -> None:
        for path in paths:
            try:
                Path(path).mkdir(mode=0o700 if private else 0o777, parents=True, exist_ok=True)
            except OSError as exc:
                raise TransportError(f"cannot make {path}: {exc.strerror}") from None

    def link(self, target: str, path: str) -> None:
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            os.symlink(target, path)
        except OSError as exc:
            raise TransportError(f"cannot link {path} to {target}: {exc.strerror}") from None

    def close(self) -> None:
        return None


def file_kind(mode: int) -> str:
    """find's %y letter for a file mode."""
    for test, letter in (
        (stat.S_ISREG, "f"),
        (stat.S_ISLNK, "l"),
        (stat.S_ISFIFO, "p"),
        (stat.S_ISSOCK, "s"),
        (stat.S_ISBLK, "b"),
        (stat.S_ISCHR, "c"),
    ):
        if test(mode):
            return letter
    return "?"


@contextlib.contextmanager
def _open_source(path: Path, *, missing: type[TransportError]) -> Iterator[BinaryIO]:
    """A file opened for copying, or `missing` when it is not there. Everything after the open
    works on what was opened: a file renamed or removed in the meantime (a checkpoint's temp
    file renamed to its final name, an old checkpoint pruned) is still copied whole, as it
    was, with its own size and mtime, and never half of one version with another's mtime."""
    try:
        try:
            # Non-blocking, so that a FIFO in the folder cannot hang the copy (refused below).
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except BlockingIOError:
            # A regular file under a lease (a file server's, say): wait for it like any reader.
            fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise missing(f"{path}: no such file") from None
    except OSError as exc:
        raise TransportError(f"cannot read {path}: {_why(exc)}") from None
    with os.fdopen(fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TransportError(f"cannot read {path}: not a regular file")
        os.set_blocking(fd, True)
        yield source


def _copy_atomic(source: BinaryIO, origin: Path, target: Path, *, mode: int | None) -> None:
    """Copy an open file (opened from `origin`) to `target` through a temp file and a rename,
    keeping its mtime and, unless `mode` says otherwise, its permissions. An OSError at either
    end is a TransportError that names both files and says why."""
    info = os.fstat(source.fileno())
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise TransportError(f"cannot write {target}: {_why(exc)}") from None
    try:
        with os.fdopen(handle, "wb") as copy:
            shutil.copyfileobj(source, copy, _COPY_CHUNK)
        os.chmod(temp, mode if mode is not None else stat.S_IMODE(info.st_mode))
        os.utime(temp, ns=(info.st_atime_ns, info.st_mtime_ns))
        os.replace(temp, target)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise TransportError(f"cannot copy {origin} to {target}: {_why(exc)}") from None
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _why(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()
