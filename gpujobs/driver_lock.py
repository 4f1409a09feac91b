"""Who is driving a job: an exclusive flock on `<home>/locks/<job id>.lock`.

The driver holds the lock for the job's whole life. The kernel drops it when the process dies, by
any death, kill -9 included, so "can I take the lock?" answers "is the driver gone?" without
trusting a pid that may have been recycled. A detached driver inherits the open lock from the
`launch --detach` process that created the job, so the lock is never free in between.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class DriverLock:
    def __init__(self, path: Path, fd: int | None = None) -> None:
        self.path = path
        self._fd = fd

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise RuntimeError("lock not held")
        return self._fd

    def acquire(self) -> bool:
        """Take the lock without waiting; False if another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def driver_alive(path: Path) -> bool:
    """True while some process holds the job's lock."""
    if not path.exists():
        return False
    probe = DriverLock(path)
    if probe.acquire():
        probe.release()
        return False
    return True
