"""rsync onto a node, through the `rsync -e` shell a transport offers: the node's own folder made
and its rsync looked for by the same remote command that starts it (no command before it), files
resumed across dropped links, what was sent read from rsync's itemized output.

Used by sync.push_dir; the transport supplies the ssh command (its key, pinned host keys, route)
and remembers, in `has_rsync`, a node found without rsync, so a later sync goes file by file at
once.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from gpujobs.errors import TransportError
from gpujobs.remote.transport import RemoteFile

# rsync --info=progress2 --no-human-readable: "   1048576  12%  ..." (bytes so far this run).
_PROGRESS = re.compile(rb"^\s*(\d+)\s+\d+%")
# rsync --itemize-changes: ">f+++++++++ path" for each file it sends, with characters unsafe
# to print (a newline, bytes that are not text) written as \#ooo, in octal.
_SENT_FILE = re.compile(rb"^[<>]f\S* (.*)$")
_ESCAPED = re.compile(rb"\\#([0-7]{3})")

# rsync exit codes that mean the link failed (socket I/O, protocol stream, timeouts, ssh),
# worth a retry; anything else is a real error.
_LINK_FAILURES = frozenset({10, 12, 14, 30, 35, 255})
# How long rsync is retried without moving a byte before the link counts as down for good
# (rsync reports progress about once a second while it moves data).
STALL_WINDOW_S = 120.0

# What the node runs in place of plain `rsync` (--rsync-path; $1 the folder, then rsync's own
# server arguments): the folder made, all its levels (rsync makes only the last), and a missing
# rsync said so, in words this side looks for, since rsync itself only sees its link close.
_NO_RSYNC = "gpujobs-sync: no rsync on the node"
_NO_FOLDER = "gpujobs-sync: cannot make the folder"
_REMOTE_START = (
    f'[ -d "$1" ] || mkdir -p -- "$1" || {{ echo "{_NO_FOLDER}" >&2; exit 3; }}; shift; '
    f'command -v rsync >/dev/null 2>&1 || {{ echo "{_NO_RSYNC}" >&2; exit 4; }}; '
    'exec rsync "$@"'
)


@runtime_checkable
class RsyncCapable(Protocol):
    # Whether the node has rsync: None until a sync tried; False once one found none there.
    has_rsync: bool | None

    def rsync_shell(self) -> tuple[str, str]:
        """(`rsync -e` command, remote prefix such as 'host:')."""
        ...


class NoRemoteRsync(TransportError):
    """The node has no rsync (on the login shell's PATH)."""


def route(transport: object, *, required: bool) -> RsyncCapable | None:
    """The transport, where rsync can run (here, and on the node as far as is known); else
    None, or, when `required`, a TransportError saying what is missing. Asks the node
    nothing: a node without rsync is found out by the first rsync run (NoRemoteRsync)."""
    capable = isinstance(transport, RsyncCapable)
    local = shutil.which("rsync") is not None
    if capable and local and transport.has_rsync is not False:
        return transport
    if required:
        missing = (
            "this transport" if not capable else "rsync here" if not local else "rsync on the node"
        )
        raise TransportError(f"sync method rsync asked for, but {missing} is missing")
    return None


class Manifest(Protocol):
    """What the local side holds, as sync's walk found it."""

    @property
    def files(self) -> Sequence[RemoteFile]: ...

    # rsync walking the folder itself (links followed) would find exactly these files.
    @property
    def walkable(self) -> bool: ...


def push(
    transport: RsyncCapable,
    local_dir: Path,
    remote_dir: str,
    manifest: Callable[[], Manifest],
    progress: Callable[[int, int], None] | None,
    *,
    may_walk: bool = True,
) -> set[str]:
    """rsync the files the manifest lists, resuming across dropped links: partial files are
    kept in a hidden folder and continued, whole files already there are skipped by rsync's
    own check (size and mtime). Symlinks are sent as the files they point to, as the manifest
    counts them. Returns the names it sent; raises NoRemoteRsync (and notes it on the
    transport) when the node has none.

    `manifest()` is called once, while rsync's ssh logs in (before rsync reads its list or
    walks). rsync walks local_dir itself, which is faster than a list it is given (0.15 s on
    10,000 files), unless `may_walk` is false or the manifest is not `walkable`: then that
    rsync is stopped (still logging in) and another is given the list (--files-from)."""
    rsh, prefix = transport.rsync_shell()

    def command(walk: bool) -> list[str]:
        return [
            "rsync", "--archive", "--copy-links", "--no-devices", "--no-specials",
            *([] if walk else ["--from0", "--files-from=-"]),
            "--partial", "--partial-dir=.gpujobs-partial",
            "--info=progress2", "--no-human-readable", "--outbuf=N", "--itemize-changes",
            "--timeout=60", "-e", rsh,
            f"--rsync-path=sh -c {shlex.quote(_REMOTE_START)} sh {shlex.quote(remote_dir)}",
            f"{local_dir}/", f"{prefix}{remote_dir}/",
        ]  # fmt: skip

    listing = _Listing(manifest)
    last_progress = time.monotonic()
    delay = 0.2
    sent: set[str] = set()
    while True:
        walk = may_walk and listing.walkable is not False
        moved, code, errors = _run(command(walk), listing, progress, sent, walk=walk)
        if walk and listing.walkable is False:
            continue  # stopped to be given the list
        if code == 0:
            transport.has_rsync = True
            if progress:
                progress(listing.total, listing.total)
            return sent
        if _NO_RSYNC in errors:
            transport.has_rsync = False
            raise NoRemoteRsync("rsync is not installed on the node (or not on its PATH)")
        if _NO_FOLDER in errors:
            raise TransportError(f"cannot make {remote_dir} on the node: {_last(errors, 2)}")
        if code not in _LINK_FAILURES:
            raise TransportError(f"rsync exited with {code}: {errors.strip()[-300:]}")
        now = time.monotonic()
        if moved:
            last_progress, delay = now, 0.2
        elif now - last_progress > STALL_WINDOW_S:
            raise TransportError(
                f"dataset sync made no progress for {STALL_WINDOW_S:g}s (rsync {code}: "
                f"{errors.strip()[-200:]}); launch again to resume it"
            )
        else:
            delay = min(delay * 2, 2.0)  # cheap to try: a link that returns is used soon
        time.sleep(delay)


class _Listing:
    """The manifest, made once (beside the first rsync's login), and rsync's --files-from
    input made from it."""

    def __init__(self, manifest: Callable[[], Manifest]) -> None:
        self.manifest = manifest
        self.data: bytes | None = None
        self.total = 0
        self.walkable: bool | None = None  # None: not made yet
        self.error: BaseException | None = None

    def feed(self, child: subprocess.Popen[bytes], walk: bool) -> None:
        """Make the manifest if not made yet; then give rsync the list on its stdin (in a
        thread of its own: rsync reads stdin and writes stdout as it pleases, so the two must
        not wait on each other), or stop an rsync that walks where its walk would find other
        files."""
        sink = child.stdin
        assert sink is not None
        try:
            if self.data is None:
                made = self.manifest()
                self.total = sum(item.size for item in made.files)
                self.data = b"".join(
                    item.path.encode("utf-8", "surrogateescape") + b"\0" for item in made.files
                )
                self.walkable = made.walkable
            if walk and not self.walkable:
                child.kill()
            elif not walk:
                with contextlib.suppress(BrokenPipeError):
                    sink.write(self.data)
        except BaseException as exc:  # the manifest's own error: raised in the caller's thread
            self.error = exc
            child.kill()
        finally:
            with contextlib.suppress(BrokenPipeError):
                sink.close()


def _run(
    command: list[str],
    listing: _Listing,
    progress: Callable[[int, int], None] | None,
    sent_files: set[str],
    *,
    walk: bool,
) -> tuple[bool, int, str]:
    """One rsync run: (moved any bytes, exit code, stderr); adds what it sent to sent_files."""
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors
        )
        assert child.stdin is not None and child.stdout is not None
        feeder = threading.Thread(target=listing.feed, args=(child, walk), daemon=True)
        feeder.start()
        moved = False
        pending = b""
        try:
            while chunk := child.stdout.read1(1 << 16):
                pending += chunk
                *lines, pending = re.split(rb"[\r\n]", pending)
                for line in lines:
                    if itemized := _SENT_FILE.match(line):
                        name = _ESCAPED.sub(lambda code: bytes([int(code[1], 8)]), itemized[1])
                        sent_files.add(name.decode("utf-8", errors="surrogateescape"))
                        continue
                    match = _PROGRESS.match(line)
                    if match:
                        sent = int(match.group(1))
                        moved = moved or sent > 0
                        if progress:
                            progress(min(sent, listing.total), listing.total)
            code = child.wait()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            feeder.join()
        if listing.error is not None:
            raise listing.error
        errors.seek(0)
        return moved, code, errors.read().decode("utf-8", errors="replace")


def _last(text: str, lines: int) -> str:
    return " ".join(text.strip().splitlines()[-lines:])
