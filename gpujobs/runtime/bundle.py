"""Which files of the bundled workloads (`jobs/`) a node needs."""

from __future__ import annotations

import functools
import hashlib

from gpujobs.workloads import jobs_package_dir

# Everything under jobs/ that is not code a node needs.
_SKIPPED_NAMES = {"__pycache__", ".pytest_cache"}


def is_bundle_junk(relative_path: str) -> bool:
    """Files of jobs/ that a node does not need (caches, compiled bytecode)."""
    parts = relative_path.split("/")
    return bool(_SKIPPED_NAMES.intersection(parts)) or relative_path.endswith((".pyc", ".pyo"))


@functools.cache
def bundle_digest() -> str:
    """The hash of every file of the bundled workloads a node needs (names and contents): a
    node that has this bundle needs nothing sent; any edit gives another digest. Read once
    per process (a launch), so a bundle edited meanwhile shows up at the next launch."""
    digest = hashlib.sha256()
    root = jobs_package_dir()
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and not is_bundle_junk(relative):
            digest.update(f"\0{relative}\0".encode() + path.read_bytes())
    return digest.hexdigest()[:16]
