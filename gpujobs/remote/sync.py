"""Datasets up, checkpoints down, through any Transport, sending only what changed.

A file is unchanged when its size and its mtime in whole seconds match (put/get, tar and rsync -a
keep mtimes; SFTP carries whole seconds only), the rule rsync uses by default. Uploads take the
fastest way the two ends allow, and every way is verified (every file on the node, with its
size) and survives a dropped link:

- a first copy into an empty folder, or many changed files: one tar stream over one exec
  channel of the open SSH connection (no login, no round trip per file), verified by the
  listing the node prints after unpacking, in the same channel;
- otherwise rsync, where both ends have it (its own size+mtime check, partial files resumed),
  with the folder made by the command that starts rsync there, and a node found without rsync
  remembered by the transport;
- otherwise file by file through the transport (SFTP over SSH; exec channels without SFTP).

A stream cut by a dropped link is not sent again (it would start over): rsync, or the file-by-
file path, goes on from what the node holds, resuming the file that was cut where it can.

Pulled names are checked before anything is written: a checkpoint folder on a node is not
trusted to stay inside `runs/<job id>/`.

Sources are local folders; an s3:// or gs:// source would plug in as another `_local_manifest`
+ copy pair (the node pulling from the bucket itself), behind the same push_dir.
"""

from __future__ import annotations

import contextlib
import functools
import os
import posixpath
import re
import shutil
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, Protocol, cast

from gpujobs.errors import (
    CommandFailedError,
    ConnectionLostError,
    HostKeyChangedError,
    LocalDiskFullError,
    RemoteFileNotFoundError,
    SshAuthError,
    TransportError,
    TransportTimeoutError,
)
from gpujobs.remote import rsync
from gpujobs.remote.transport import RemoteFile, Transport

# (bytes done, bytes total) after each file.
Progress = Callable[[int, int], None]
SyncMethod = Literal["auto", "rsync", "files"]

# How the bundled workloads name checkpoints (jobs/common/checkpoint.py).
CHECKPOINT_NAME = re.compile(r"^ckpt-(\d+)\.pt$")
# Files a pull leaves on the node: still being written under a temporary name, renamed when
# complete (the bundled workloads' .ckpt-*.tmp; the usual <name>.tmp; this transport's own
# partial uploads and rsync's partial folder when checkpoints were pushed back for a restart).
IN_PROGRESS_SUFFIXES = (".tmp", ".gpujobs-part")
IN_PROGRESS_FOLDERS = frozenset({".gpujobs-partial"})
# Errors about the link, not the file: no use asking the node whether the file is still there.
_LINK_ERRORS = (ConnectionLostError, TransportTimeoutError, SshAuthError, HostKeyChangedError)
# From this many changed files on, the file-by-file path sends them as one stream instead: a
# stream costs one command on the node (a new session and shell), a file over SFTP a few round
# trips, so the stream wins from a handful of files on a real link (tens on loopback).
STREAM_MIN_FILES = 8


class StreamsTrees(Protocol):
    """A transport that can send many files as one stream (SSH: tar over an exec channel);
    told apart by its put_tree (isinstance would evaluate exec_only, which may ask the node)."""

    @property
    def exec_only(self) -> bool:
        """No SFTP on the node: one file at a time costs a command each."""
        ...

    def put_tree(
        self,
        local_dir: Path,
        paths: Sequence[str],
        remote_dir: str,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> list[RemoteFile] | None:
        """Send `paths` under local_dir into remote_dir in one go; the folder's listing after
        (None: none to be had in the same go). ConnectionLostError when the link drops;
        CommandFailedError when the node refuses (exit code exec_files.NO_TAR: it cannot
        unpack a stream at all)."""
        ...

    def folder_is_empty(self, remote_dir: str) -> bool | None:
        """Missing or empty; None where asking would cost a command."""
        ...


@dataclass(frozen=True)
class SyncReport:
    files_total: int
    bytes_total: int
    files_sent: int
    bytes_sent: int
    refused: tuple[str, ...] = ()
    pruned: tuple[str, ...] = ()
    # How it went: stream (one tar stream), rsync, files (one by one), or none (nothing
    # changed); "stream+rsync" or "stream+files" when a dropped link cut the stream short.
    method: str = "files"
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
    where both ends have it, else copies file by file; "rsync" and "files" force one. Either
    may send a first copy into an empty folder (or, file by file, many files) as one stream.
    """
    manifest = functools.partial(_local_manifest, local_dir, skip)
    push = _Push(transport, local_dir, remote_dir, manifest, progress, skips=skip is not None)
    if method != "files" and (route := rsync.route(transport, required=method == "rsync")):
        try:
            return push.by_rsync(route)
        except rsync.NoRemoteRsync:
            if method == "rsync":
                raise TransportError(
                    "sync method rsync asked for, but rsync on the node is missing"
                ) from None
    return push.by_files()


class _Push:
    """One push_dir: the local manifest, and the ways to the node tried in turn."""

    def __init__(
        self,
        transport: Transport,
        local_dir: Path,
        remote_dir: str,
        manifest: Callable[[], _Manifest],
        progress: Progress | None,
        *,
        skips: bool,
    ) -> None:
        self.transport = transport
        self.local_dir = local_dir
        self.remote_dir = remote_dir
        self._manifest = manifest
        self._made: _Manifest | None = None
        self.skips = skips  # some files are left out: rsync must be given the list
        self.progress = progress
        self.used: list[str] = []  # ways that moved bytes, in order
        streams = callable(getattr(type(transport), "put_tree", None))
        self.streams = cast(StreamsTrees, transport) if streams else None

    @property
    def files(self) -> list[RemoteFile]:
        """The local manifest, made when first needed."""
        return self.manifest().files

    def manifest(self) -> _Manifest:
        if self._made is None:
            self._made = self._manifest()
        return self._made

    def by_rsync(self, route: rsync.RsyncCapable) -> SyncReport:
        if self.streams and self.streams.folder_is_empty(self.remote_dir) and self.files:
            if self._stream(self.files):
                return self._report(self.files, None)
            # Cut short: every file still goes (the folder was empty); rsync resumes.
            rsync.push(
                route, self.local_dir, self.remote_dir, self.manifest, self.progress,
                may_walk=not self.skips,
            )  # fmt: skip
            return self._report(self.files, "rsync")
        # rsync's exit status 0 is its own verification (each file it sent was checked whole,
        # the rest matched by size and mtime): no listing of ours before or after. The local
        # manifest is made while rsync's ssh logs in; rsync walks the folder itself unless
        # files are skipped or its walk would find others (rsync.push).
        sent = rsync.push(
            route, self.local_dir, self.remote_dir, self.manifest, self.progress,
            may_walk=not self.skips,
        )  # fmt: skip
        return self._report([item for item in self.files if item.path in sent], "rsync")

    def by_files(self) -> SyncReport:
        remote = _listing(self.transport.list_files(self.remote_dir))
        changed = [item for item in self.files if not _same(item, remote.get(item.path))]
        if not changed:
            _verify(remote, self.files)  # the listing just made is the check
            return self._report([], None)
        todo = changed
        streams = self.streams
        if streams and (streams.exec_only or len(changed) >= STREAM_MIN_FILES):
            while True:
                if self._stream(todo):
                    return self._report(changed, None)
                remote = _listing(self.transport.list_files(self.remote_dir))
                left = [item for item in todo if not _same(item, remote.get(item.path))]
                # Over SFTP a file cut short resumes where it stopped: one by one from here.
                # Without SFTP nothing resumes within a file: what is left goes as a stream
                # again, for as long as each one lands at least a file.
                again = streams.exec_only and len(left) < len(todo)
                todo = left
                if not again:
                    break
        total = sum(item.size for item in changed)
        done = total - sum(item.size for item in todo)
        for item in todo:
            target = posixpath.join(self.remote_dir, item.path)
            self.transport.put(self.local_dir / item.path, target, atomic=False)
            done += item.size
            if self.progress:
                self.progress(done, total)
        _verify(_listing(self.transport.list_files(self.remote_dir)), self.files)
        return self._report(changed, "files")

    def _stream(self, files: list[RemoteFile]) -> bool:
        """Send `files` as one stream and verify it: True; False when the link dropped during
        it, or the node has no tar to unpack it: the caller goes on by a way that resumes."""
        assert self.streams is not None
        total = sum(item.size for item in files)
        progress = self.progress
        try:
            listing = self.streams.put_tree(
                self.local_dir,
                [item.path for item in files],
                self.remote_dir,
                progress=(lambda done: progress(done, total)) if progress else None,
            )
        except ConnectionLostError:
            self._note("stream")  # some of it may have landed
            return False
        except CommandFailedError as exc:
            from gpujobs.remote.exec_files import NO_TAR  # only SSH streams: paramiko is loaded

            if exc.exit_code_of_command != NO_TAR:
                raise  # no folder, a full disk: one by one would fail the same way, less clearly
            return False
        self._note("stream")
        if listing is None:  # the node's find cannot list: a listing of the transport's own
            listing = self.transport.list_files(self.remote_dir)
        _verify(_listing(listing), self.files)
        if progress:
            progress(total, total)
        return True

    def _note(self, way: str) -> None:
        if self.used[-1:] != [way]:
            self.used.append(way)

    def _report(self, sent: list[RemoteFile], last: str | None) -> SyncReport:
        """`last`: the way that finished (None: the last one noted)."""
        if last:
            self._note(last)
        return SyncReport(
            files_total=len(self.files),
            bytes_total=sum(item.size for item in self.files),
            files_sent=len(sent),
            bytes_sent=sum(item.size for item in sent),
            method="+".join(self.used) or "none",
        )


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


@dataclass(frozen=True)
class _Manifest:
    files: list[RemoteFile]
    # rsync walking the folder itself (links followed) finds exactly these files: nothing
    # skipped, and no link loop, dangling link, unreadable folder or special file on the way.
    walkable: bool


def _local_manifest(root: Path, skip: Callable[[str], bool] | None = None) -> _Manifest:
    """Every regular file below root that `skip` keeps, symlinks followed (a file is sent as
    what it points to; a dangling one is no file to send; a link back to a folder above it is
    not walked again); a folder `skip` refuses (asked with a trailing slash) is not walked.
    One stat per file."""
    files: list[RemoteFile] = []
    walkable = skip is None
    pending: list[tuple[str, str, frozenset[tuple[int, int]]]] = [("", str(root), frozenset())]
    while pending:
        prefix, folder, above = pending.pop()
        try:
            here = os.stat(folder)
            if (here.st_dev, here.st_ino) in above:
                walkable = False
                continue  # a loop
            above = above | {(here.st_dev, here.st_ino)}
            with os.scandir(folder) as entries:
                found = list(entries)
        except OSError:
            walkable = False
            continue
        for entry in found:
            relative = prefix + entry.name
            try:
                if entry.is_dir():
                    if skip is None or not skip(relative + "/"):
                        pending.append((relative + "/", entry.path, above))
                    continue
                if skip is not None and skip(relative):
                    continue
                info = entry.stat()
            except OSError:
                walkable = False
                continue  # gone since, or a dangling symlink
            if stat.S_ISREG(info.st_mode):
                files.append(RemoteFile(path=relative, size=info.st_size, mtime=info.st_mtime))
            else:
                walkable = False
    return _Manifest(sorted(files, key=lambda item: item.path), walkable)


def _listing(files: list[RemoteFile]) -> dict[str, RemoteFile]:
    return {item.path: item for item in files}


def _verify(remote: dict[str, RemoteFile], expected: list[RemoteFile]) -> None:
    """After a push, every local file is on the node with the same size."""
    missing = [
        item.path
        for item in expected
        if (there := remote.get(item.path)) is None or there.size != item.size
    ]
    if missing:
        raise TransportError(
            f"dataset sync did not verify: {len(missing)} file(s) differ on the node, "
            f"first {missing[0]!r}; launch again to resume the sync"
        )
