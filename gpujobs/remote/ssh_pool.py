"""Logged-in SSH connections kept for a short while after their transport closes, so the next
transport to the same host in this process takes the link instead of logging in again.

One launch opens a transport for the host probe, another to make the job's folder, one to
run the job and one to tear it down; each login is a TCP and key exchange and an
authentication (a tenth of a second on loopback, a few round trips on a real link). Parked
here, the probe's connection carries the whole launch.

A parked link is keyed by where it goes (the resolved route: host, port, user, keys,
bastions) and by the pins it was verified against, so a transport only ever takes a link
that its own checks would have accepted. Links idle longer than PARK_S, or found dead, are
closed; a forked child forgets the parent's links without touching them (closing would end
the parent's session).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass

import paramiko

# Long enough to span one launch's stages (probe -> provision -> run -> teardown), short
# enough that an idle sshd session is not held open for long.
PARK_S = 30.0


@dataclass
class ParkedLink:
    client: paramiko.SSHClient
    bastions: list[paramiko.SSHClient]
    sftp: paramiko.SFTPClient | None
    has_sftp: bool | None
    parked_at: float

    def alive(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def close(self) -> None:
        for closable in (self.sftp, self.client, *reversed(self.bastions)):
            if closable is not None:
                with contextlib.suppress(Exception):
                    closable.close()


_lock = threading.Lock()
_parked: dict[Hashable, ParkedLink] = {}


def park(key: Hashable, link: ParkedLink) -> None:
    """Keep `link` for the next transport with the same key (one per key: the older goes)."""
    if not link.alive():
        link.close()
        return
    with _lock:
        previous = _parked.pop(key, None)
        _parked[key] = link
        stale = _take_stale()
    for old in [previous, *stale]:
        if old is not None:
            old.close()


def take(key: Hashable) -> ParkedLink | None:
    """The link parked under `key`, if it is fresh and alive (it is then no longer parked)."""
    with _lock:
        link = _parked.pop(key, None)
        stale = _take_stale()
    for old in stale:
        old.close()
    if link is None:
        return None
    if time.monotonic() - link.parked_at > PARK_S or not link.alive():
        link.close()
        return None
    return link


def close_all() -> None:
    with _lock:
        links = list(_parked.values())
        _parked.clear()
    for link in links:
        link.close()


def _take_stale() -> list[ParkedLink]:
    """Remove and return the links parked too long (caller holds the lock)."""
    now = time.monotonic()
    stale = [key for key, link in _parked.items() if now - link.parked_at > PARK_S]
    return [_parked.pop(key) for key in stale]


def _forget_in_child() -> None:
    # The child shares the parent's sockets; closing them would end the parent's sessions.
    # A fresh lock too: the fork may have come while another thread held it.
    global _lock
    _lock = threading.Lock()
    _parked.clear()


atexit.register(close_all)
os.register_at_fork(after_in_child=_forget_in_child)
