"""Datasets up, checkpoints down, through any Transport, sending only what changed.

A file is unchanged when its size and its mtime in whole seconds match (put/get and rsync -a keep
mtimes; SFTP carries whole seconds only), the rule rsync uses by default. Uploads go through rsync
when the transport offers it and both ends have it (fast, and an interrupted file resumes from
its partial copy), else file by file through the transport (SFTP over SSH). Either way the result
is verified: every file on the node, with its size. Pulled names are checked before anything is
written: a checkpoint folder on a node is not trusted to stay inside `runs/<job id>/`.

Sources are local folders; an s3:// or gs:// source would plug in as another `_local_manifest`
+ copy pair (the node pulling from the bucket itself), behind the same push_dir.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, Protocol

from gpujobs.errors import (
    ConnectionLostError,
    HostKeyChangedError,
    LocalDiskFullError,
    RemoteFileNotFoundError,
    SshAuthError,
    TransportError,
    TransportTimeoutError,
)
from gpujobs.remote.transport import CommandResult, RemoteFile, Transport

# (bytes done, bytes total) after each file.
Progress = Callable[[int, int], None]
SyncMethod = Literal["auto", "rsync", "files"]

# rsync --info=progress2 --no-human-readable: "   1048576  12%  ..." (bytes so far this run).
_RSYNC_PROGRESS = re.compile(rb"^\s*(\d+)\s+\d+%")
# rsync --itemize-changes: ">f+++++++++ path" for each file it sends.
_RSYNC_SENT_FILE = re.compile(rb"^[<>]f\S* (.*)$")

# How the bundled workloads name checkpoints (jobs/common/checkpoint.py).
CHECKPOINT_NAME = re.compile(r"^ckpt-(\d+)\.pt$")
# Files a pull leaves on the node: still being written under a temporary name, renamed when
# complete (the bundled workloads' .ckpt-*.tmp; the usual <name>.tmp; this transport's own
# partial uploads and rsync's partial folder when checkpoints were pushed back for a restart).
IN_PROGRESS_SUFFIXES = (".tmp", ".gpujobs-part")
IN_PROGRESS_FOLDERS = frozenset({".gpujobs-partial"})
# Errors about the link, not the file: no use asking the node whether the file is still there.
_LINK_ERRORS = (ConnectionLostError, TransportTimeoutError, SshAuthError, HostKeyChangedError)

# rsync exit codes that mean the link failed (socket I/O, protocol stream, timeouts, ssh),
# worth a retry; anything else is a real error.
_RSYNC_LINK_FAILURES = frozenset({10, 12, 14, 30, 35, 255})
# How long rsync is retried without moving a byte before the link counts as down for good
# (rsync reports progress about once a second while it moves data).
_STALL_WINDOW_S = 120.0


class RsyncCapable(Protocol):
    def rsync_ready(self, remote_dir: str) -> bool:
        """Whether the node has rsync, with remote_dir made (rsync makes only its last level)."""
        ...

    def rsync_shell(self) -> tuple[str, str]:
        """(`rsync -e` command, remote prefix such as 'host:')."""
        ...

    def run(
        self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True
    ) -> CommandResult: ...


@dataclass(frozen=True)
class SyncReport:
    files_total: int
    bytes_total: int
    files_sent: int
    bytes_sent: int
    refused: tuple[str, ...] = ()
    pruned: tuple[str, ...] = ()
    method: str = "files"  # how it went: rsync, files (one by one), or none (nothing changed)
    # Listed, then gone before their turn (renamed or pruned on the node): the next pull sees
    # what took their place.
    skipped: tuple[str, ...] = ()
    # Not files a checkpoint folder can bring home, each with why: a FIFO, a socket, a device,
    # or a name that is a folder on one side and a file on the other.
    odd: tuple[str, ...] = ()


def push_dir(
    transport: Transport,
    local_dir: Path,
    remote_dir: str,
    *,
    progress: Progress | None = None,
    skip: Callable[[str], bool] | None = None,
    method: SyncMethod = "auto",
) -> SyncReport:
    """Mirror a local folder onto the node (additions and changes; nothing is deleted).

    `skip(relative_path)` leaves out files the node does not need. `method` "auto" takes rsync
    where both ends have it, else copies file by file; "rsync" and "files" force one.
    """
    local_files = _local_manifest(local_dir, skip)
    rsync = _rsync_route(transport, remote_dir, method)
    if rsync is not None:
        # rsync makes its own size+mtime check (the same rule), so no listing of ours first:
        # one node command fewer, and it reports what it sent.
        used = "rsync"
        sent = _rsync_push(rsync, local_dir, remote_dir, local_files, progress)
        changed = [item for item in local_files if item.path in sent]
    else:
        remote = {item.path: item for item in transport.list_files(remote_dir)}
        changed = [item for item in local_files if not _same(item, remote.get(item.path))]
        used = "files" if changed else "none"
        total, done = sum(item.size for item in changed), 0
        if changed and getattr(transport, "exec_only", False):
            # A host without SFTP: one tar stream over exec, not a channel per file.
            transport.put_tree(local_dir, [item.path for item in changed], remote_dir)  # type: ignore[attr-defined]
            changed_now, done = [], total
            if progress:
                progress(total, total)
        else:
            changed_now = changed
        for item in changed_now:
            transport.put(
                local_dir / item.path, posixpath.join(remote_dir, item.path), atomic=False
            )
            done += item.size
            if progress:
                progress(done, total)
        # rsync's exit status 0 is its own verification (each file it sent was checked whole,
        # the rest matched by size and mtime); a second remote walk would cost as much again
        # as rsync's, so only the file-by-file path lists the node once more.
        _verify(transport, remote_dir, local_files)
    return SyncReport(
        files_total=len(local_files),
        bytes_total=sum(item.size for item in local_files),
        files_sent=len(changed),
        bytes_sent=sum(item.size for item in changed),
        method=used,
    )


def _rsync_route(transport: Transport, remote_dir: str, method: SyncMethod) -> RsyncCapable | None:
    if method == "files":
        return None
    capable = callable(getattr(transport, "rsync_shell", None))
    local = shutil.which("rsync") is not None
    remote = capable and local and transport.rsync_ready(remote_dir)  # type: ignore[attr-defined]
    if capable and local and remote:
        return transport  # type: ignore[return-value]
    if method == "rsync":
        missing = (
            "this transport" if not capable else "rsync here" if not local else "rsync on the node"
        )
        raise TransportError(f"sync method rsync asked for, but {missing} is missing")
    return None


def _rsync_push(
    transport: RsyncCapable,
    local_dir: Path,
    remote_dir: str,
    files: list[RemoteFile],
    progress: Progress | None,
) -> set[str]:
    """rsync `files`, resuming across dropped links: partial files are kept in a hidden folder
    and continued, whole files already there are skipped by rsync's own check. Returns the
    names it sent."""
    rsh, prefix = transport.rsync_shell()
    total = sum(item.size for item in files)
    listing = b"".join(item.path.encode() + b"\0" for item in files)
    command = [
        "rsync", "--archive", "--from0", "--files-from=-",
        "--partial", "--partial-dir=.gpujobs-partial",
        "--info=progress2", "--no-human-readable", "--outbuf=N", "--itemize-changes",
        "--timeout=60", "-e", rsh,
        f"{local_dir}/", f"{prefix}{remote_dir}/",
    ]  # fmt: skip
    last_progress = time.monotonic()
    delay = 0.2
    sent: set[str] = set()
    while True:
        moved, code, errors = _run_rsync(command, listing, total, progress, sent)
        if code == 0:
            if progress:
                progress(total, total)
            return sent
        if code not in _RSYNC_LINK_FAILURES:
            raise TransportError(f"rsync exited with {code}: {errors.strip()[-300:]}")
        now = time.monotonic()
        if moved:
            last_progress, delay = now, 0.2
        elif now - last_progress > _STALL_WINDOW_S:
            raise TransportError(
                f"dataset sync made no progress for {_STALL_WINDOW_S:g}s (rsync {code}: "
                f"{errors.strip()[-200:]}); launch again to resume it"
            )
        else:
            delay = min(delay * 2, 2.0)  # cheap to try: a link that returns is used soon
        time.sleep(delay)


def _run_rsync(
    command: list[str],
    listing: bytes,
    total: int,
    progress: Progress | None,
    sent_files: set[str],
) -> tuple[bool, int, str]:
    """One rsync run: (moved any bytes, exit code, stderr); adds what it sent to sent_files."""
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors
        )
        assert child.stdin is not None and child.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            child.stdin.write(listing)
        with contextlib.suppress(BrokenPipeError):
            child.stdin.close()
        moved = False
        pending = b""
        while chunk := child.stdout.read1(1 << 14):
            pending += chunk
            *lines, pending = re.split(rb"[\r\n]", pending)
            for line in lines:
                if itemized := _RSYNC_SENT_FILE.match(line):
                    sent_files.add(itemized.group(1).decode("utf-8", errors="surrogateescape"))
                    continue
                match = _RSYNC_PROGRESS.match(line)
                if match:
                    sent = int(match.group(1))
                    moved = moved or sent > 0
                    if progress:
                        progress(min(sent, total), total)
        code = child.wait()
        errors.seek(0)
        return moved, code, errors.read().decode("utf-8", errors="replace")


def pull_dir(
    transport: Transport, remote_dir: str, local_dir: Path, *, progress: Progress | None = None
) -> SyncReport:
    """Bring new and changed files home; refuse (and report) names that would escape local_dir.

    The node keeps writing while this runs. Files still being written under a temporary name
    (see IN_PROGRESS_SUFFIXES) are left there. A listed file that is gone when its turn comes
    (renamed to its final name, pruned) is skipped and reported, whatever the transport called
    the error; any other failure is raised as it came.
    """
    local_dir.mkdir(parents=True, exist_ok=True)
    remote_files = transport.list_files(remote_dir)
    refused = tuple(item.path for item in remote_files if _unsafe(item))
    odd = [
        f"{item.path} ({_KIND_NAMES.get(item.kind, 'not a regular file')})"
        for item in remote_files
        if item.kind not in ("f", "l")
    ]
    wanted = [
        item
        for item in remote_files
        if item.path not in refused and item.kind == "f" and not _in_progress(item.path)
    ]
    clashing = {item.path for item in wanted if _clashes(local_dir, item.path)}
    odd += [f"{path} (a folder here, a file on the node, or under one)" for path in clashing]
    wanted = [item for item in wanted if item.path not in clashing]
    changed = [
        item
        for item in wanted
        if not _same(item, _local_file(local_dir, item.path)) or _racy(item, local_dir)
    ]
    total = sum(item.size for item in changed)
    _check_room(local_dir, changed)
    done = 0
    fetched = 0
    skipped: list[str] = []
    for item in changed:
        target = local_dir / item.path
        if not target.resolve().is_relative_to(local_dir.resolve()):
            # A symlink planted locally under runs/ would redirect the write.
            refused += (item.path,)
            continue
        remote = posixpath.join(remote_dir, item.path)
        try:
            transport.get(remote, target)
        except RemoteFileNotFoundError:
            # Gone since the listing: a temp file renamed to its final name, or a checkpoint
            # the node pruned. The next pull sees what took its place.
            skipped.append(item.path)
            continue
        except TransportError as exc:
            if not _gone(transport, remote, exc):
                raise
            skipped.append(item.path)  # the same, under another name for the error
            continue
        fetched += 1
        done += item.size
        if progress:
            progress(done, total)
    pruned = prune_superseded_checkpoints(local_dir, [item.path for item in wanted])
    return SyncReport(
        files_total=len(wanted),
        bytes_total=sum(item.size for item in wanted),
        files_sent=fetched,
        bytes_sent=done,
        refused=refused,
        pruned=pruned,
        skipped=tuple(skipped),
        odd=tuple(sorted(odd)),
    )


_KIND_NAMES = {"p": "a FIFO", "s": "a socket", "b": "a block device", "c": "a character device"}


def _clashes(local_dir: Path, relative: str) -> bool:
    """Whether a file at `relative` cannot land here: a folder stands at its name, or a file
    stands where one of its parent folders would be."""
    target = local_dir / relative
    if target.is_dir() and not target.is_symlink():
        return True
    parent = target.parent
    while parent != local_dir and parent.is_relative_to(local_dir):
        if parent.exists() and not parent.is_dir():
            return True
        parent = parent.parent
    return False


def _check_room(local_dir: Path, changed: list[RemoteFile]) -> None:
    """Refuse a pull this machine's disk cannot hold, before a byte moves, saying how much room
    it needs: a full disk here is a local error to fix here, never a lost node."""
    need = sum(item.size for item in changed)
    for item in changed:  # what each file replaces is freed as it lands
        with contextlib.suppress(OSError):
            need -= (local_dir / item.path).stat().st_size
    free = shutil.disk_usage(local_dir).free
    if need > free:
        raise LocalDiskFullError(
            f"not enough room for the checkpoints in {local_dir}: they need "
            f"{_megabytes(need)} and its disk has {_megabytes(free)} free; free "
            f"{_megabytes(need - free)} or more there"
        )


def _megabytes(count: int) -> str:
    return f"{max(count, 0) / 1e6:,.1f} MB"


def _in_progress(path: str) -> bool:
    """A file still being written under a temporary name, which the node renames when done."""
    *folders, name = PurePosixPath(path).parts or ("",)
    return name.endswith(IN_PROGRESS_SUFFIXES) or any(
        part in IN_PROGRESS_FOLDERS for part in folders
    )


def _gone(transport: Transport, remote: str, error: TransportError) -> bool:
    """Whether a file whose get failed with `error` is simply no longer on the node: asked of
    the node itself (a listing of its folder), since not every transport, and not every step
    of a copy, reports a vanished file as RemoteFileNotFoundError. A lost link or a timeout is
    not asked about (it would only wait, or be refused, again), and a failed question keeps
    the first error."""
    if isinstance(error, _LINK_ERRORS):
        return False
    folder, name = posixpath.split(remote)
    try:
        listing = transport.list_files(folder)
    except TransportError:
        return False
    return all(item.path != name for item in listing)


def prune_superseded_checkpoints(local_dir: Path, remote_paths: list[str]) -> tuple[str, ...]:
    """Remove home copies of checkpoints the node has already pruned (it keeps the newest
    `checkpoints.keep` in each folder), so runs/<job id>/ does not grow for the whole run.

    Folder by folder, nested ones too (a workload that trains a model of its own first, such
    as latent_walk's small DCGAN, keeps its checkpoints in a subfolder): only files named as
    the bundled workloads name them (ckpt-<step>.pt), and only those older than the oldest the
    node still has in that same folder. A folder in which the node lists none (preempted,
    wiped) is not touched.
    """
    oldest_kept: dict[str, int] = {}
    for path in remote_paths:
        folder, name = posixpath.split(path)
        if match := CHECKPOINT_NAME.match(name):
            step = int(match.group(1))
            oldest_kept[folder] = min(step, oldest_kept.get(folder, step))
    root = local_dir.resolve()
    pruned = []
    for folder, oldest in sorted(oldest_kept.items()):
        here = local_dir / folder
        # A symlink planted under runs/ must not lead the deletions elsewhere.
        if not here.is_dir() or not here.resolve().is_relative_to(root):
            continue
        for path in sorted(here.iterdir()):
            match = CHECKPOINT_NAME.match(path.name)
            if match and int(match.group(1)) < oldest and path.is_file() and not path.is_symlink():
                path.unlink()
                pruned.append(posixpath.join(folder, path.name))
    return tuple(pruned)


def _unsafe(item: RemoteFile) -> bool:
    parts = PurePosixPath(item.path).parts
    return item.is_symlink or item.path.startswith("/") or ".." in parts or not parts


def _racy(item: RemoteFile, local_dir: Path) -> bool:
    """A file whose home copy was made in the second it was last written, or before: written
    again within that second (a command's own `state.json`), it keeps its size and whole-second
    mtime, so the copy would look current for good ("racily clean", as git calls it). Such a
    copy is fetched again once; the copy made then is made a second later, and is clean."""
    try:
        copied_at = (local_dir / item.path).lstat().st_ctime  # get() sets mtime, not ctime
    except OSError:
        return True
    return int(item.mtime) >= int(copied_at)


def _same(mine: RemoteFile, theirs: RemoteFile | None) -> bool:
    return theirs is not None and mine.size == theirs.size and int(mine.mtime) == int(theirs.mtime)


def _local_file(root: Path, relative: str) -> RemoteFile | None:
    try:
        stat = (root / relative).lstat()
    except OSError:
        return None
    return RemoteFile(path=relative, size=stat.st_size, mtime=stat.st_mtime)


def _local_manifest(root: Path, skip: Callable[[str], bool] | None = None) -> list[RemoteFile]:
    """Every file below root that `skip` keeps; a folder `skip` refuses (asked with a trailing
    slash) is not walked; a dangling symlink is no file to send."""
    files: list[RemoteFile] = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        here = Path(folder).relative_to(root).as_posix()
        prefix = "" if here == "." else here + "/"
        if skip is not None:
            dirs[:] = [name for name in dirs if not skip(prefix + name + "/")]
        for name in names:
            if skip is not None and skip(prefix + name):
                continue
            path = Path(folder) / name
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            files.append(
                RemoteFile(
                    path=path.relative_to(root).as_posix(), size=stat.st_size, mtime=stat.st_mtime
                )
            )
    return sorted(files, key=lambda item: item.path)


def _verify(transport: Transport, remote_dir: str, expected: list[RemoteFile]) -> None:
    """After a push, every local file is on the node with the same size."""
    remote = {item.path: item.size for item in transport.list_files(remote_dir)}
    missing = [item.path for item in expected if remote.get(item.path) != item.size]
    if missing:
        raise TransportError(
            f"dataset sync did not verify: {len(missing)} file(s) differ on the node, "
            f"first {missing[0]!r}; launch again to resume the sync"
        )
