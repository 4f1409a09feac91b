"""Node-side dataset pulls: the laptop sends a request, the node fetches (node.py, sources.py).

`fetch_on_node` ships the fetcher (standard library only) into the host's cache folder, writes
the request and the credentials the sources need into 0600 files (the credentials are sourced
by the shell and the file removed before the fetcher starts: never on a command line, in the
store or in a log), and runs it with the node's python3.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shlex
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpujobs.errors import ProvisioningError
from gpujobs.remote.fetch.credentials import credentials_for
from gpujobs.remote.transport import Transport

_HERE = Path(__file__).parent
_TOOL_FILES = ("node.py", "sources.py")
# Source the env file, remove it, then run the fetcher: its secrets never appear in argv.
_RUN = '. "$1" && rm -f "$1" && exec "$2" "$3" "$4"'


@dataclass(frozen=True)
class SourceRequest:
    source: str
    sha256: str | None = None
    endpoint_url: str | None = None


def tool_version() -> str:
    digest = hashlib.sha256()
    for name in _TOOL_FILES:
        digest.update((_HERE / name).read_bytes())
    return digest.hexdigest()[:16]


def fetch_on_node(
    transport: Transport,
    *,
    python: str,
    sources: Sequence[SourceRequest],
    dest: str,
    cache: str,
    log: str | None,
    scratch: str,
    env: dict[str, str],
    workers: int = 16,
    chunk_bytes: int | None = None,
    timeout_s: float = 24 * 3600,
    write_private: Callable[[str, str], None] | None = None,
) -> list[str]:
    """Fetch `sources` into `dest` on the node; returns the fetcher's summary lines.

    `env`: the job's own variables (an SSL_CERT_FILE, an AWS_REGION) to which the credentials the
    sources need are added; `scratch`: a folder of the job's for the request files."""
    tool = posixpath.join(cache, "fetch-tool", tool_version())
    transport.run(["mkdir", "-p", tool, scratch, posixpath.join(cache, "fetch")])
    for name in _TOOL_FILES:
        transport.put(_HERE / name, posixpath.join(tool, name))
    request = {
        "sources": [{k: v for k, v in vars(s).items() if v is not None} for s in sources],
        "dest": dest,
        "cache": posixpath.join(cache, "fetch"),
        "log": log,
        "workers": workers,
        "chunk_bytes": chunk_bytes,
    }
    request_path = posixpath.join(scratch, "fetch-request.json")
    env_path = posixpath.join(scratch, "fetch.env")
    write = write_private or (lambda text, path: _put_private(transport, text, path))
    write(json.dumps(request), request_path)
    environment = {**env, **credentials_for([s.source for s in sources])}
    write(
        "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(environment.items())),
        env_path,
    )
    argv = ["sh", "-c", _RUN, "sh", env_path, python, posixpath.join(tool, "node.py"),
            request_path]  # fmt: skip
    result = transport.run(argv, timeout=timeout_s, check=False)
    if not result.ok:
        said = [line for line in result.stderr.splitlines() if "gpujobs fetch failed" in line]
        reason = said[-1].split(": ", 1)[1] if said else result.tail(5)
        raise ProvisioningError(f"the node could not fetch the dataset: {reason}")
    return [
        line.removeprefix("gpujobs ")
        for line in result.stdout.splitlines()
        if line.startswith("gpujobs fetch:") and ": done," in line
    ]


def _put_private(transport: Transport, text: str, remote: str) -> None:
    with tempfile.TemporaryDirectory(prefix="gpujobs-") as folder:
        local = Path(folder) / "file"
        fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        transport.put(local, remote, mode=0o600)
