"""One error tree. The CLI prints `str(error)` and exits with `error.exit_code`.

Messages are written for the user: they say what is wrong and what to do, in one line, and never
carry a secret (credentials are named, never shown).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130


# Values known to be secret in this process (a spec's `env` values, read before it validates).
# Every message the CLI shows passes through `redact`, so a secret that found its way into an
# exception (an SDK echoing a header, a shell error quoting a line) is still never printed.
_SECRETS: set[str] = set()
# Shorter values ("1", "true", "cpu") are words of ordinary messages, not secrets worth hiding.
_MIN_SECRET_LENGTH = 4
REDACTED = "***"


def register_secrets(values: object, _depth: int = 0) -> None:
    """Remember every string in `values` (nested lists and mappings too) as a secret."""
    if _depth > 8:
        return  # not an env value any spec would validate: it is refused anyway
    if isinstance(values, str):
        if len(values) >= _MIN_SECRET_LENGTH:
            _SECRETS.add(values)
    elif isinstance(values, dict):
        for item in values.values():
            register_secrets(item, _depth + 1)
    elif isinstance(values, (list, tuple)):
        for item in values:
            register_secrets(item, _depth + 1)
    elif isinstance(values, (int, float)) and not isinstance(values, bool):
        register_secrets(str(values))


def redact(text: str) -> str:
    """`text` with every registered secret replaced by ***, the longest first."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class GpuJobsError(Exception):
    """Base of every error gpujobs raises on purpose."""

    exit_code = EXIT_JOB_FAILED


class BadInputError(GpuJobsError):
    """The user asked for something that cannot be done as asked; nothing was started."""

    exit_code = EXIT_BAD_INPUT


class SpecError(BadInputError):
    """A job spec that does not load or does not validate."""


class UnknownJobError(BadInputError):
    def __init__(self, job_ref: str) -> None:
        super().__init__(f"no job matches {job_ref!r}: `gpujobs status --all` lists the jobs")


class NoPlacementError(BadInputError):
    """No offer of any allowed provider satisfies the spec; carries every reason."""


class BudgetRefusedError(NoPlacementError):
    """The job's worst case does not fit in what its budgets leave; says by how much and what
    would fit. Nothing was started."""


# Provider errors: raised by providers, translated from SDK exceptions at their boundary.
class ProviderError(GpuJobsError):
    """Something a provider said or did that stopped the launch. `code` keeps the cloud's own
    error code, so callers decide on it rather than on the message's wording."""

    def __init__(self, message: str = "", *, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class ProviderAuthError(ProviderError):
    """Credentials missing or refused: stop at once, never fail over."""


class NoCapacityError(ProviderError):
    """The placement has no machine right now: fail over to the next placement."""


class QuotaExceededError(ProviderError):
    """The account's quota does not allow this placement: fail over, and say what to request."""


class ProvisioningError(ProviderError):
    """Creating or starting the node failed for another reason."""


class NotTerminatedError(ProviderError):
    """Teardown could not confirm that a node is gone; the user must check it."""


# Transport errors: raised by remote/, translated from paramiko/OS errors at the boundary.
class TransportError(GpuJobsError):
    """Talking to a node failed."""


class LocalDiskFullError(GpuJobsError):
    """This machine's disk cannot hold what must come home: a local error, never a lost node."""


def is_disk_full(exc: BaseException) -> bool:
    """A write on this machine failed for want of room: the store's ("database or disk is
    full") or a file's (ENOSPC, EDQUOT)."""
    import errno
    import sqlite3

    if isinstance(exc, sqlite3.OperationalError):
        return "disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class TransportTimeoutError(TransportError):
    pass


class RemoteFileNotFoundError(TransportError):
    """A file on the node is not there (any more): listed, then renamed or removed."""


class ConnectionLostError(TransportError):
    """A node stopped answering and did not come back within the reconnect window."""


class SshAuthError(TransportError):
    """The node refused our key: a wrong user, key or host, not a transient fault."""


class HostKeyChangedError(TransportError):
    """The node shows a host key other than the one pinned on first contact."""


class CommandFailedError(TransportError):
    """A command on a node exited non-zero; the message shows the command and its last lines."""

    def __init__(self, command: str, exit_code: int, output_tail: str) -> None:
        self.command = command
        self.exit_code_of_command = exit_code
        self.output_tail = output_tail
        tail = f": {output_tail.strip()}" if output_tail.strip() else ""
        super().__init__(f"`{command}` exited with {exit_code}{tail}")


class UnsafePathError(TransportError):
    """A remote file name that would land outside the job's own directory."""


class JobFailedError(GpuJobsError):
    """The workload ran and failed; carries its exit code and log tail."""


class Cancelled(GpuJobsError):
    exit_code = EXIT_CANCELLED
