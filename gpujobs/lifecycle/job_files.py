"""A job's own things on a node: its code folder (`workdir:`), the single files and folders it
needs (`files:`, kept in the node's cache by content so a second job sends nothing), and its
`setup:` (run once per node and environment, its output streamed like the job log).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import posixpath
import shlex
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gpujobs.clock import Clock
from gpujobs.errors import ProvisioningError
from gpujobs.lifecycle.events import CancelToken
from gpujobs.lifecycle.node_session import NodeSession
from gpujobs.remote.fetch import SourceRequest, fetch_on_node
from gpujobs.remote.ignore import CodeFilter
from gpujobs.remote.logs import tail_lines
from gpujobs.remote.sync import SyncReport, push_dir
from gpujobs.runtime.base import Runtime
from gpujobs.runtime.launcher import env_file, step_script
from gpujobs.spec import URL_SOURCE, JobSpec, is_fetched

# A code folder past this is more likely to hold data than code: say so, once.
LARGE_WORKDIR_BYTES = 100 * 1024 * 1024
# What a setup usually installs from: a change in any of them runs the setup again.
REQUIREMENT_FILES = (
    "requirements.txt", "requirements-dev.txt", "requirements.in", "pyproject.toml",
    "setup.py", "setup.cfg", "environment.yml", "environment.yaml", "Pipfile", "Pipfile.lock",
    "poetry.lock", "uv.lock", "conda.yaml",
)  # fmt: skip
SETUP_TIMEOUT_S = 2 * 3600.0
_HASH_CHUNK = 1 << 20

# Node-side download of a `files` URL: curl, else wget, else Python; into a partial file that
# is renamed when whole, so an interrupted download is never taken for a cached one.
_FETCH = (
    'set -e; dest=$1; url=$2; tmp="$dest.part"; mkdir -p "$(dirname "$dest")"\n'
    'if command -v curl >/dev/null 2>&1; then curl -fsSL --retry 3 -o "$tmp" "$url"\n'
    'elif command -v wget >/dev/null 2>&1; then wget -q -O "$tmp" "$url"\n'
    "else python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(*sys.argv[1:])' "
    '"$url" "$tmp"; fi\n'
    'mv "$tmp" "$dest"\n'
)


class ContentHashes:
    """sha256 of local files, remembered by (path, size, mtime) in a JSON file of the gpujobs
    home, so an unchanged 500 MB file is read once. Safe for the threads of a group's setup."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def of(self, file: Path) -> str:
        stat = file.stat()
        key = str(file.resolve())
        stamp = [stat.st_size, stat.st_mtime_ns]
        with self._lock:
            known = self._load()
            if (entry := known.get(key)) and entry[:2] == stamp:
                return str(entry[2])
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
        with self._lock:
            known = self._load()
            known[key] = [*stamp, digest.hexdigest()]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(known))
            os.replace(tmp, self.path)
        return digest.hexdigest()

    def _load(self) -> dict[str, list[object]]:
        try:
            loaded = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}


def send_workdir(
    session: NodeSession,
    spec: JobSpec,
    *,
    runs_root: Path | None,
    progress: Callable[[int, int], None],
    note: Callable[[str], None],
) -> SyncReport | None:
    """The code folder to the node's `src/`: only what changed, .gitignore honoured."""
    if spec.workdir is None:
        return None
    source = Path(spec.workdir)
    code = CodeFilter(source, also=[runs_root] if runs_root else [])
    report = push_dir(session.transport, source, session.layout.src, progress=progress,
                      skip=code.skips)  # fmt: skip
    if report.bytes_total > LARGE_WORKDIR_BYTES:
        note(
            f"workdir {source} is {report.bytes_total / 1024**2:,.0f} MB after .gitignore: is "
            "your data inside workdir? Give it as `dataset:` (synced once, verified) or list it "
            "in .gpujobsignore"
        )
    note(
        f"workdir: {report.files_total} files, {report.bytes_total:,} bytes, "
        f"{report.files_sent} sent ({report.method})"
    )
    return report


def send_files(
    session: NodeSession,
    spec: JobSpec,
    hashes: ContentHashes,
    *,
    progress: Callable[[str, int, int], None],
    note: Callable[[str], None],
    python: str = "python3",
) -> dict[str, str]:
    """Every `files` entry into the node's cache, where it is not already; returns node path ->
    its copy in the cache."""
    cached: dict[str, str] = {}
    sent = 0
    for node_path, source in spec.files.items():
        label = f"files: {node_path}"
        cached[node_path], was_sent = _cache_one(
            session, source, hashes, label, functools.partial(progress, label), python
        )
        sent += was_sent
    if cached:
        note(f"files: {len(cached)} ({sent} sent, {len(cached) - sent} already on the node)")
    return cached


def _cache_one(
    session: NodeSession,
    source: str,
    hashes: ContentHashes,
    label: str,
    progress: Callable[[int, int], None],
    python: str,
) -> tuple[str, bool]:
    """One `files` source in the node's cache: (its place there, whether anything was sent)."""
    root = posixpath.join(session.layout.cache, "files")
    if is_fetched(source) and not URL_SOURCE.match(source):
        return _fetch_object_store(session, source, root, python), True
    if URL_SOURCE.match(source):
        key = "url-" + hashlib.sha256(source.encode()).hexdigest()[:32]
        target = posixpath.join(root, key, posixpath.basename(urlsplit(source).path) or "file")
        if session.transport.read(target, 0, 1):
            return target, False
        _fetch(session, source, target, label)
        return target, True
    local = Path(source)
    if local.is_dir():
        target = posixpath.join(root, "dir-" + _folder_key(local), local.name)
        report = push_dir(session.transport, local, target, progress=progress)
        return target, report.files_sent > 0
    target = posixpath.join(root, hashes.of(local), local.name)
    if _remote_size(session, target) == local.stat().st_size:
        return target, False
    name = local.name
    push_dir(session.transport, local.parent, posixpath.dirname(target),
             skip=lambda path: path != name, progress=progress)  # fmt: skip
    return target, True


def setup_key(spec: JobSpec, environment_id: str) -> str:
    """What a setup's result depends on: its text, the requirement files of the code folder,
    and the environment it runs in."""
    digest = hashlib.sha256()
    for part in (spec.setup or "", environment_id):
        digest.update(part.encode() + b"\0")
    if spec.workdir is not None:
        for name in REQUIREMENT_FILES:
            path = Path(spec.workdir) / name
            if path.is_file():
                digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:24]


def run_setup(
    session: NodeSession,
    runtime: Runtime,
    spec: JobSpec,
    environment: dict[str, str],
    steps: StepRunner,
) -> None:
    """The spec's `setup:` on this node, unless the same one already ran in the same
    environment here. A failure raises with the log's tail."""
    if spec.setup is None:
        return
    layout, transport = session.layout, session.transport
    key = setup_key(spec, runtime.environment_id())
    argv = runtime.setup_argv(spec, layout, key)
    marker = posixpath.join(layout.cache, "setup", key)
    if transport.read(marker, 0, 1):
        steps.note("setup: already done on this node for this setup and requirements (skipped)")
        return
    steps.note("setup: running on the node (its output follows)")
    session.write_private(env_file(environment), layout.env_file)
    cwd = layout.run_dir(spec.workdir is not None)
    code = steps.run(session, argv, cwd=cwd, marker=marker, banner="setup (once per node)")
    if code != 0:
        lines = spec.setup.splitlines()
        raise ProvisioningError(
            f"setup failed (exit {code}) on the node: {shlex.quote(lines[0])}"
            f"{' ...' if len(lines) > 1 else ''}; its last lines:\n{steps.tail(session)}"
        )


@dataclass(frozen=True)
class StepRunner:
    """Runs a long step of a node's setup (a `setup:`, an image build) detached, as the job
    itself runs, so a dropped link does not stop it; its output joins the job log and is
    passed to `on_log` as it arrives; a cancel stops its whole process group."""

    clock: Clock
    cancel: CancelToken
    on_log: Callable[[bytes], None]
    note: Callable[[str], None]
    poll_s: float
    timeout_s: float = SETUP_TIMEOUT_S

    def run(
        self, session: NodeSession, argv: list[str], *, cwd: str, marker: str | None, banner: str
    ) -> int:
        """Its exit code; `marker` (if given) is written when it succeeds."""
        layout, transport = session.layout, session.transport
        transport.run(["rm", "-rf", layout.setup_dir])  # a step that failed here before
        transport.run(["mkdir", "-p", layout.setup_dir])
        script = step_script(argv, layout, cwd=cwd, marker=marker, banner=banner)
        session.write_private(script, layout.setup_script)
        pid = transport.start(layout.setup_script, cwd=layout.setup_dir)
        deadline = self.clock.monotonic() + self.timeout_s
        while True:
            if chunk := session.follow():
                self.on_log(chunk)
            raw = transport.read(layout.setup_exit_code, 0, 16).strip()
            if raw:
                break
            if self.cancel.cancelled:  # the step's whole process group: pip, docker build ...
                transport.run(["sh", "-c", 'kill -TERM -"$1"', "sh", str(pid)], check=False)
                self.cancel.raise_if_cancelled()
            if self.clock.monotonic() >= deadline:
                raise ProvisioningError(f"{banner} did not finish in {self.timeout_s / 60:g} min")
            self.clock.sleep(self.poll_s)
        if chunk := session.follow():
            self.on_log(chunk)
        return int(raw) if raw.isdigit() else -1

    def tail(self, session: NodeSession, lines: int = 8) -> str:
        return tail_lines(session.follower.local_log, lines)


def _fetch_object_store(session: NodeSession, source: str, root: str, python: str) -> str:
    """A bucket object or prefix, a Hub dataset or a Kaggle set, pulled by the node's fetcher
    through its cache (a listing when nothing changed); its place: the file when the source
    names one object, else the folder."""
    folder = posixpath.join(root, "src-" + hashlib.sha256(source.encode()).hexdigest()[:32])
    layout = session.layout
    fetch_on_node(session.transport, python=python, sources=[SourceRequest(source)],
                  dest=folder, cache=layout.cache, log=layout.log,
                  scratch=posixpath.join(layout.workdir, ".fetch"), env={},
                  write_private=session.write_private, poll_s=0.2)  # fmt: skip
    files = session.transport.list_files(folder)
    name = source.rstrip("/").rsplit("/", 1)[-1]
    if len(files) == 1 and files[0].path == name:
        return posixpath.join(folder, name)
    return folder


def _fetch(session: NodeSession, url: str, target: str, label: str) -> None:
    done = session.transport.run(["sh", "-c", _FETCH, "sh", target, url], timeout=3600,
                                 check=False)  # fmt: skip
    if not done.ok:
        shown = url.split("?", 1)[0]  # a signed URL's query is a secret
        raise ProvisioningError(
            f"{label}: the node could not download {shown} ({done.tail(2) or done.exit_code}); "
            "check the URL, or give a local file"
        )


def _remote_size(session: NodeSession, path: str) -> int | None:
    listed = session.transport.list_files(posixpath.dirname(path))
    name = posixpath.basename(path)
    return next((item.size for item in listed if item.path == name), None)


def _folder_key(folder: Path) -> str:
    """A folder's cache key: where it is on this machine. A changed file in it is synced
    incrementally into the same place (size and mtime), not sent as a new copy."""
    digest = hashlib.sha256(str(folder.resolve()).encode())
    return digest.hexdigest()[:32]
