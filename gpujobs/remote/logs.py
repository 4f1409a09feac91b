"""Follow a node's log by byte offset into a local copy.

The local copy's size is the offset: after a dropped connection or a restarted client, reading
resumes exactly where the copy ends, so no byte is lost or shown twice.
"""

from __future__ import annotations

from pathlib import Path

from gpujobs.remote.transport import Transport

_CHUNK = 1 << 20


class LogFollower:
    def __init__(self, transport: Transport, remote_log: str, local_log: Path) -> None:
        self.transport = transport
        self.remote_log = remote_log
        self.local_log = local_log
        local_log.parent.mkdir(parents=True, exist_ok=True)
        local_log.touch(exist_ok=True)

    @property
    def offset(self) -> int:
        return self.local_log.stat().st_size

    def poll(self) -> bytes:
        """Everything new on the node since the last poll, appended to the local copy."""
        new = bytearray()
        while True:
            chunk = self.transport.read(self.remote_log, self.offset, _CHUNK)
            if not chunk:
                return bytes(new)
            with self.local_log.open("ab") as handle:
                handle.write(chunk)
            new += chunk
            if len(chunk) < _CHUNK:
                return bytes(new)


def tail_lines(path: Path, lines: int = 20, max_bytes: int = 64 * 1024) -> str:
    """The last lines of a local file, for error messages."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(size - max_bytes, 0))
            data = handle.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])
