"""The fetch cache of one host, as `gpujobs gc` sees it: each source's folder, its size and when
a job last used it; pruning removes the folders no job used for a while, never one a fetch holds
locked at that moment."""

from __future__ import annotations

import fcntl
import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CacheEntry:
    folder: Path
    source: str
    bytes: int
    last_used: float  # epoch seconds


def cache_entries(cache_root: Path) -> list[CacheEntry]:
    """`cache_root`: the host's cache folder (`<root>/cache`); its `fetch/` holds the sources."""
    entries = []
    fetch = cache_root / "fetch"
    for folder in sorted(fetch.iterdir()) if fetch.is_dir() else []:
        if not folder.is_dir():
            continue
        try:
            source = (folder / "source.txt").read_text().strip()
        except OSError:
            source = "(unknown source)"
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        entries.append(CacheEntry(folder, source, size, folder.stat().st_mtime))
    return entries


def prune(entries: list[CacheEntry], *, older_than_s: float, now: float) -> list[CacheEntry]:
    """Remove the entries unused for `older_than_s`; returns those removed."""
    removed = []
    for entry in entries:
        if now - entry.last_used < older_than_s:
            continue
        with (entry.folder / ".lock").open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a job is fetching it right now
            doomed = entry.folder.with_name(entry.folder.name + ".gc")
            os.replace(entry.folder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(entry)
    return removed
