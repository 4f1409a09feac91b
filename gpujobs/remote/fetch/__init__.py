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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gpujobs.errors import ProvisioningError
from gpujobs.remote.fetch.credentials import credentials_for
from gpujobs.remote.transport import Transport

_HERE = Path(__file__).parent
_TOOL_FILES = ("node.py", "sources.py", "upload.py")


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
    on_line: Callable[[str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    poll_s: float = 1.0,
    timeout_s: float = 7 * 24 * 3600,
    sleep: Callable[[float], None] = time.sleep,
    write_private: Callable[[str, str], None] | None = None,
) -> list[str]:
    """Fetch `sources` into `dest` on the node; returns the fetcher's summary lines.

    The fetcher runs detached on the node (a dropped connection does not stop it) and its
    progress lines are passed to `on_line` as they come. `env`: the job's own variables (an
    SSL_CERT_FILE, an AWS_REGION) to which the credentials the sources need are added;
    `scratch`: a folder of the job's for this fetch's files; `should_stop`: asked between
    polls, True stops the fetch (what it finished stays in the cache)."""
    tool = _ship_tool(transport, cache)
    run_dir = posixpath.join(scratch, f"fetch-{time.time_ns()}")
    transport.run(["mkdir", "-p", run_dir, posixpath.join(cache, "fetch")])
    request = {
        "sources": [{k: v for k, v in vars(s).items() if v is not None} for s in sources],
        "dest": dest,
        "cache": posixpath.join(cache, "fetch"),
        "log": log,
        "workers": workers,
        "chunk_bytes": chunk_bytes,
    }
    paths = {key: posixpath.join(run_dir, name) for key, name in _RUN_FILES.items()}
    write = write_private or (lambda text, path: _put_private(transport, text, path))
    write(json.dumps(request), paths["request"])
    environment = {**env, **credentials_for([s.source for s in sources])}
    write(
        "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(environment.items())),
        paths["env"],
    )
    write(_script(paths, python, posixpath.join(tool, "node.py")), paths["script"])
    transport.start(paths["script"], cwd=run_dir)
    return _follow(transport, paths, on_line, should_stop, poll_s, timeout_s, sleep)


_RUN_FILES = {"request": "request.json", "env": "fetch.env", "script": "fetch.sh",
              "out": "output", "exit": "exit_code"}  # fmt: skip


def _script(paths: dict[str, str], python: str, node: str) -> str:
    """Source the credentials, remove their file, run the fetcher, record its exit code. The
    secrets never appear in an argv; the file goes even if sourcing it fails."""
    q = shlex.quote
    return (
        f"if . {q(paths['env'])}; then rm -f {q(paths['env'])}\n"
        f"  {q(python)} {q(node)} {q(paths['request'])} > {q(paths['out'])} 2>&1; code=$?\n"
        f"else rm -f {q(paths['env'])}; code=90; fi\n"
        f"echo $code > {q(paths['exit'])}.tmp && mv {q(paths['exit'])}.tmp {q(paths['exit'])}\n"
    )


def _follow(
    transport: Transport,
    paths: dict[str, str],
    on_line: Callable[[str], None] | None,
    should_stop: Callable[[], bool] | None,
    poll_s: float,
    timeout_s: float,
    sleep: Callable[[float], None],
) -> list[str]:
    deadline = time.monotonic() + timeout_s
    offset, pending, output = 0, b"", []
    while True:
        code_text = transport.read(paths["exit"], 0, 16).strip()  # before the last output read
        chunk = transport.read(paths["out"], offset)
        offset += len(chunk)
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        for raw in lines:
            line = raw.decode(errors="replace")
            output.append(line)
            if on_line is not None and line.startswith("gpujobs fetch:"):
                on_line(line.removeprefix("gpujobs "))
        if code_text and not chunk:
            break
        if (should_stop is not None and should_stop()) or time.monotonic() > deadline:
            pid = transport.read(posixpath.join(posixpath.dirname(paths["out"]),
                                                ".started/pid"), 0, 32).strip()  # fmt: skip
            if pid:
                transport.run(["sh", "-c", 'kill -TERM -"$1"', "sh", pid.decode()], check=False)
            if time.monotonic() > deadline:
                raise ProvisioningError(f"the node's dataset fetch took over {timeout_s:g} s")
            return []
        sleep(poll_s)
    if pending:
        output.append(pending.decode(errors="replace"))
    code = int(code_text) if code_text.isdigit() else -1
    if code != 0:
        said = [line for line in output if line.startswith("gpujobs fetch failed")]
        reason = said[-1].split(": ", 1)[1] if said else "\n".join(output[-5:]) or f"exit {code}"
        raise ProvisioningError(f"the node could not fetch the dataset: {reason}")
    return [
        line.removeprefix("gpujobs ")
        for line in output
        if line.startswith("gpujobs fetch:") and ": done," in line
    ]


def start_checkpoint_upload(
    transport: Transport,
    *,
    python: str,
    target: str,
    folder: str,
    workdir: str,
    exit_code: str,
    cache: str,
    log: str | None,
    env: dict[str, str],
    endpoint_url: str | None = None,
    every_s: float = 5.0,
    write_private: Callable[[str, str], None] | None = None,
) -> int:
    """Start the node's checkpoint uploader (upload.py) detached: it sends each checkpoint
    written in `folder` to `target` (s3://bucket/prefix) and ends once `exit_code` is written
    or `workdir` is gone. Returns its pid."""
    tool = _ship_tool(transport, cache)
    run_dir = posixpath.join(workdir, f".upload-{time.time_ns()}")
    transport.run(["mkdir", "-p", run_dir])
    request = {"folder": folder, "target": target, "exit_code": exit_code, "workdir": workdir,
               "log": log, "every_s": every_s, "endpoint_url": endpoint_url}  # fmt: skip
    paths = {key: posixpath.join(run_dir, name) for key, name in _RUN_FILES.items()}
    write = write_private or (lambda text, path: _put_private(transport, text, path))
    write(json.dumps(request), paths["request"])
    environment = {**env, **credentials_for([target])}
    write(
        "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(environment.items())),
        paths["env"],
    )
    write(_script(paths, python, posixpath.join(tool, "upload.py")), paths["script"])
    return transport.start(paths["script"], cwd=run_dir)


def _ship_tool(transport: Transport, cache: str) -> str:
    tool = posixpath.join(cache, "fetch-tool", tool_version())
    transport.run(["mkdir", "-p", tool])
    for name in _TOOL_FILES:
        transport.put(_HERE / name, posixpath.join(tool, name))
    return tool


def _put_private(transport: Transport, text: str, remote: str) -> None:
    with tempfile.TemporaryDirectory(prefix="gpujobs-") as folder:
        local = Path(folder) / "file"
        fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        transport.put(local, remote, mode=0o600)
