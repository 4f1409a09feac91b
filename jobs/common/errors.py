"""Errors that a workload reports as one line on stderr with exit code 2 (no traceback)."""


class JobError(Exception):
    """A problem the user can fix (bad flag, missing or corrupt data); never a bug."""

    exit_code = 2


class UsageError(JobError):
    """A flag value that cannot work, e.g. ``--device cuda`` on a machine without CUDA."""


class DataError(JobError):
    """Input data that is missing, unreadable or malformed."""
