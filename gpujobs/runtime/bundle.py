"""Which files of the bundled workloads (`jobs/`) a node needs."""

from __future__ import annotations

# Everything under jobs/ that is not code a node needs.
_SKIPPED_NAMES = {"__pycache__", ".pytest_cache"}


def is_bundle_junk(relative_path: str) -> bool:
    """Files of jobs/ that a node does not need (caches, compiled bytecode)."""
    parts = relative_path.split("/")
    return bool(_SKIPPED_NAMES.intersection(parts)) or relative_path.endswith((".pyc", ".pyo"))
