"""The bundled workloads in `jobs/`: where the package is and which workloads it holds. Plain
ground floor: the spec validates `workload:` against it, and the runtimes send the package."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from gpujobs.errors import GpuJobsError


@lru_cache(maxsize=1)
def jobs_package_dir() -> Path:
    """The folder of the `jobs` package that ships beside gpujobs."""
    found = importlib.util.find_spec("jobs")
    if found is None or not found.submodule_search_locations:
        raise GpuJobsError(
            "the bundled workloads (package `jobs`) are not installed: reinstall gpujobs"
        )
    return Path(next(iter(found.submodule_search_locations)))


def bundled_workloads() -> list[str]:
    """Names usable as `workload:`, one per runnable package in jobs/ (common is a library)."""
    root = jobs_package_dir()
    return sorted(
        child.name
        for child in root.iterdir()
        if child.is_dir() and (child / "__main__.py").is_file()
    )
