"""Datasets up, checkpoints down, through any Transport, sending only what changed.

A file is unchanged when its size and mtime match (put/get keep mtimes), the same rule rsync uses
by default. Pulled names are checked before anything is written: a checkpoint folder on a node is
not trusted to stay inside `runs/<job id>/`.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gpujobs.errors import TransportError
from gpujobs.remote.transport import RemoteFile, Transport

# (bytes done, bytes total) after each file.
Progress = Callable[[int, int], None]

# How the bundled workloads name checkpoints (jobs/common/checkpoint.py).
CHECKPOINT_NAME = re.compile(r"^ckpt-(\d+)\.pt$")

# mtimes survive copies to within filesystem resolution; compare at this tolerance.
_MTIME_TOLERANCE_S = 0.01


@dataclass(frozen=True)
class SyncReport:
    files_total: int
    bytes_total: int
    files_sent: int
    bytes_sent: int
    refused: tuple[str, ...] = ()
    pruned: tuple[str, ...] = ()


def push_dir(
    transport: Transport,
    local_dir: Path,
    remote_dir: str,
    *,
    progress: Progress | None = None,
    skip: Callable[[str], bool] | None = None,
) -> SyncReport:
    """Mirror a local folder onto the node (additions and changes; nothing is deleted).

    `skip(relative_path)` leaves out files the node does not need.
    """
    local_files = [
        item for item in _local_manifest(local_dir) if skip is None or not skip(item.path)
    ]
    remote = {item.path: item for item in transport.list_files(remote_dir)}
    changed = [item for item in local_files if not _same(item, remote.get(item.path))]
    total = sum(item.size for item in changed)
    done = 0
    for item in changed:
        transport.put(local_dir / item.path, posixpath.join(remote_dir, item.path))
        done += item.size
        if progress:
            progress(done, total)
    _verify(transport, remote_dir, local_files)
    return SyncReport(
        files_total=len(local_files),
        bytes_total=sum(item.size for item in local_files),
        files_sent=len(changed),
        bytes_sent=done,
    )


def pull_dir(
    transport: Transport, remote_dir: str, local_dir: Path, *, progress: Progress | None = None
) -> SyncReport:
    """Bring new and changed files home; refuse (and report) names that would escape local_dir."""
    local_dir.mkdir(parents=True, exist_ok=True)
    remote_files = transport.list_files(remote_dir)
    refused = tuple(item.path for item in remote_files if _unsafe(item))
    wanted = [item for item in remote_files if item.path not in refused]
    changed = [item for item in wanted if not _same(item, _local_file(local_dir, item.path))]
    total = sum(item.size for item in changed)
    done = 0
    for item in changed:
        target = local_dir / item.path
        if not target.resolve().is_relative_to(local_dir.resolve()):
            # A symlink planted locally under runs/ would redirect the write.
            refused += (item.path,)
            continue
        transport.get(posixpath.join(remote_dir, item.path), target)
        done += item.size
        if progress:
            progress(done, total)
    pruned = prune_superseded_checkpoints(local_dir, [item.path for item in wanted])
    return SyncReport(
        files_total=len(wanted),
        bytes_total=sum(item.size for item in wanted),
        files_sent=len(changed),
        bytes_sent=done,
        refused=refused,
        pruned=pruned,
    )


def prune_superseded_checkpoints(local_dir: Path, remote_paths: list[str]) -> tuple[str, ...]:
    """Remove home copies of checkpoints the node has already pruned (it keeps the newest
    `checkpoints.keep`), so runs/<job id>/ does not grow for the whole run.

    Only files named as the bundled workloads name them (ckpt-<step>.pt, top level) and only
    those older than the oldest the node still has: a node that lost its files (preempted,
    wiped) lists none, and then nothing at home is touched.
    """
    remote_steps = [
        int(match.group(1)) for name in remote_paths if (match := CHECKPOINT_NAME.match(name))
    ]
    if not remote_steps:
        return ()
    oldest_kept = min(remote_steps)
    pruned = []
    for path in sorted(local_dir.iterdir()):
        match = CHECKPOINT_NAME.match(path.name)
        if match and int(match.group(1)) < oldest_kept and path.is_file():
            path.unlink()
            pruned.append(path.name)
    return tuple(pruned)


def _unsafe(item: RemoteFile) -> bool:
    parts = PurePosixPath(item.path).parts
    return item.is_symlink or item.path.startswith("/") or ".." in parts or not parts


def _same(mine: RemoteFile, theirs: RemoteFile | None) -> bool:
    return (
        theirs is not None
        and mine.size == theirs.size
        and abs(mine.mtime - theirs.mtime) <= _MTIME_TOLERANCE_S
    )


def _local_file(root: Path, relative: str) -> RemoteFile | None:
    try:
        stat = (root / relative).lstat()
    except OSError:
        return None
    return RemoteFile(path=relative, size=stat.st_size, mtime=stat.st_mtime)


def _local_manifest(root: Path) -> list[RemoteFile]:
    files: list[RemoteFile] = []
    for folder, _dirs, names in os.walk(root, followlinks=True):
        for name in names:
            path = Path(folder) / name
            stat = path.stat()
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
