"""The node-side fetcher: `python3 node.py REQUEST.json` pulls a job's dataset from where it
lives into the job's data folder, through a cache shared by the jobs of the host.

Shipped to the node beside sources.py and run with its python3; standard library only. Per
source, a cache folder keyed by the source's address holds each object at its version (ETag,
generation, revision): an unchanged object is not fetched again, a changed one is. Objects are
fetched many at a time, a large one in ranges at once; each range is recorded when written, so a
cut fetch continues where it stopped. Every object is verified (MD5 where the store gives one,
a sha256 you gave or the Hub's, and always its size) before it enters the cache. Progress lines
(bytes, rate, ETA) go to stdout and to the job log.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

try:  # on the laptop, inside the package; on a node, beside this file
    from gpujobs.remote.fetch.sources import FetchError, RemoteObject, list_source, request
except ImportError:  # pragma: no cover - the node's way
    from sources import FetchError, RemoteObject, list_source, request  # type: ignore

# A large object is read in ranges of this size, several at once. A cut read continues from its
# last byte; a killed fetcher redoes at most the ranges it had under way. (Fewer, larger ranges
# cost fewer requests: 64 MiB outran s5cmd's 50 MB parts in tests/bench/fetch.py.)
CHUNK = 64 << 20
_BLOCK = 1 << 20
_PROGRESS_EVERY_S = 2.0


class Progress:
    """Bytes done of a total, printed at most every few seconds as one line."""

    def __init__(self, total: int, log: Path | None) -> None:
        self.total, self.done, self.log = total, 0, log
        self.started = self.shown = time.monotonic()
        self.lock = threading.Lock()

    def add(self, count: int) -> None:
        with self.lock:
            self.done += count
            now = time.monotonic()
            if now - self.shown >= _PROGRESS_EVERY_S:
                self.shown = now
                self.say(self.line(now))

    def line(self, now: float) -> str:
        rate = self.done / max(now - self.started, 1e-6)
        left = max(self.total - self.done, 0)
        eta = f", ETA {left / rate:.0f} s" if rate > 0 and self.total else ""
        return f"fetch: {_mb(self.done)} of {_mb(self.total)} MB, {_mb(rate)} MB/s{eta}"

    def say(self, text: str) -> None:
        print(f"gpujobs {text}", flush=True)
        if self.log is not None:
            with self.log.open("a", encoding="utf-8") as handle:
                handle.write(f"gpujobs {text}\n")


def _mb(count: float) -> str:
    return f"{count / 1e6:.1f}"


class SourceCache:
    """One source's folder in the cache: objects at their versions, under a lock, so two jobs
    on one host fetch a source once."""

    def __init__(self, root: Path, key: str) -> None:
        self.folder = root / key
        self.objects = self.folder / "objects"
        self.manifest_path = self.folder / "manifest.json"
        self.objects.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with (self.folder / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def manifest(self) -> dict[str, str]:
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            return {}

    def save(self, manifest: dict[str, str]) -> None:
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, sort_keys=True))
        os.replace(tmp, self.manifest_path)
        os.utime(self.folder)  # gc prunes by last use

    def place(self, path: str) -> Path:
        target = (self.objects / path).resolve()
        if not str(target).startswith(str(self.objects.resolve()) + os.sep):
            raise FetchError(f"{path!r}: an object name that leaves its folder; refused")
        return target


def fetch_object(
    obj: RemoteObject, target: Path, progress: Progress, pool: ThreadPoolExecutor
) -> None:
    """`obj` into `target`, through `target.part` and its record of finished ranges."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    record = target.with_name(target.name + ".part.json")
    size = obj.size
    if size is None or not obj.ranges:  # a server that does not say, or serve ranges
        _read_range(obj, part, 0, None, progress, truncate=True)
    else:
        done = _resume_record(record, obj.version, size)
        if not done:
            with part.open("wb") as handle:
                handle.truncate(size)
        ranges = [(s, min(s + CHUNK, size)) for s in range(0, size, CHUNK) if s not in done]
        progress.add(sum(min(CHUNK, size - s) for s in done))
        lock = threading.Lock()
        if len(ranges) <= 1 and not done:  # a small object: one read in this thread, no record
            if ranges:
                _read_range(obj, part, 0, size, progress)
            ranges = []

        def one(span: tuple[int, int]) -> None:
            _read_range(obj, part, span[0], span[1], progress)
            with lock:
                done.add(span[0])
                record.write_text(json.dumps({"version": obj.version, "done": sorted(done)}))

        for future in [pool.submit(one, span) for span in ranges]:
            future.result()
    _verify(obj, part)
    os.replace(part, target)
    record.unlink(missing_ok=True)


def _resume_record(record: Path, version: str, size: int) -> set[int]:
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return set()
    part = record.with_name(record.name[: -len(".json")])
    if data.get("version") != version or not part.exists() or part.stat().st_size != size:
        return set()
    return set(data.get("done", []))


def _read_range(
    obj: RemoteObject, part: Path, start: int, end: int | None, progress: Progress,
    *, truncate: bool = False, attempts: int = 4,
) -> None:  # fmt: skip
    """Bytes [start, end) of the object at their place in `part`; a dropped read retries from
    where it stopped."""
    position = start
    for attempt in range(attempts):
        extra = {}
        if end is not None and not (start == 0 and end == obj.size and position == 0):
            extra["Range"] = f"bytes={position}-{end - 1}"
        try:
            with request(obj.url, obj.headers(obj.url, extra), timeout=120) as answer:
                if "Range" in extra and answer.status == 200:  # the server ignored the range
                    if start != 0 or end != obj.size:
                        raise FetchError(f"{obj.path}: the server does not serve byte ranges")
                    position = 0  # the whole object again, from its first byte
                mode = "wb" if truncate else "r+b"
                with part.open(mode) as handle:
                    handle.seek(position)
                    while block := answer.read(_BLOCK):
                        handle.write(block)
                        position += len(block)
                        progress.add(len(block))
            if end is None or position >= end:
                return
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403, 404):
                raise FetchError(f"{obj.path}: HTTP {exc.code} while reading") from None
        except (OSError, http.client.HTTPException):
            pass  # a dropped or cut read: again from where it stopped
        if truncate:
            position = 0  # no ranges from this server: start again
        time.sleep(min(0.5 * 2**attempt, 8))
    raise FetchError(f"{obj.path}: the read kept failing after {attempts} tries")


def _verify(obj: RemoteObject, part: Path) -> None:
    size = part.stat().st_size
    if obj.size is not None and size != obj.size:
        raise FetchError(f"{obj.path}: got {size} bytes, the source says {obj.size}")
    for name, expected in (("md5", obj.md5), ("sha256", obj.sha256)):
        if expected:
            digest = hashlib.new(name)
            with part.open("rb") as handle:
                while block := handle.read(_BLOCK * 4):
                    digest.update(block)
            if digest.hexdigest() != expected.lower():
                part.unlink(missing_ok=True)
                raise FetchError(
                    f"{obj.path}: its {name} is {digest.hexdigest()}, expected {expected}; "
                    "the download was corrupted or the source changed (fetch again, or fix "
                    "the sha256 in the spec)"
                )


def unpack(archive: Path, into: Path) -> None:
    """An archive's members under `into`; none may leave it (a zip-slip is refused)."""
    tmp = into.with_name(into.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    name = archive.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.namelist():
                _inside(tmp, member)
            zipped.extractall(tmp)
    elif name.endswith((".tar.zst", ".tar.zstd")):
        if shutil.which("zstd") is None:
            raise FetchError(f"{archive.name}: unpacking .tar.zst needs `zstd` on the node")
        zstd = subprocess.Popen(["zstd", "-dc", str(archive)], stdout=subprocess.PIPE)
        with zstd, tarfile.open(fileobj=zstd.stdout, mode="r|") as tar:
            tar.extractall(tmp, filter="data")
    else:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
    shutil.rmtree(into, ignore_errors=True)
    os.replace(tmp, into)


def _inside(folder: Path, member: str) -> None:
    if not str((folder / member).resolve()).startswith(str(folder.resolve()) + os.sep):
        raise FetchError(f"archive member {member!r} leaves its folder; refused")


def link_tree(source: Path, dest: Path) -> int:
    """Hard links (a copy across file systems) of a folder's files into `dest`."""
    count = 0
    for path in source.rglob("*"):
        if path.is_dir() or path.name.endswith((".part", ".part.json")):
            continue
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
        count += 1
    return count


def fetch_source(spec: dict, cache_root: Path, dest: Path, log: Path | None, workers: int) -> str:
    """One source into `dest` through its cache folder; returns a summary line."""
    source = spec["source"]
    same = source.rstrip("/") if source.startswith(("s3://", "gs://")) else source
    key = hashlib.sha256(
        json.dumps([same, spec.get("endpoint_url"), spec.get("sha256")]).encode()
    ).hexdigest()[:24]
    cache = SourceCache(cache_root, key)
    objects = list_source(source, sha256=spec.get("sha256"), endpoint_url=spec.get("endpoint_url"))
    if not objects:
        raise FetchError(f"{source}: nothing there (an empty or misspelt prefix?)")
    with cache.locked():
        (cache.folder / "source.txt").write_text(source + "\n")  # for `gpujobs gc`
        manifest = cache.manifest()
        stale = [o for o in objects if manifest.get(o.path) != o.version]
        need = sum(o.size or 0 for o in stale)
        _check_room(cache.folder, source, need + sum(o.size or 0 for o in stale if o.unpack))
        progress = Progress(need, log)
        progress.say(
            f"fetch: {source}: {len(objects)} object(s), {len(stale)} to fetch "
            f"({_mb(need)} MB), {len(objects) - len(stale)} from the node's cache"
        )
        with ThreadPoolExecutor(workers) as ranges, ThreadPoolExecutor(workers) as files:
            futures = {}
            for obj in stale:
                manifest.pop(obj.path, None)
                futures[obj.path] = files.submit(
                    fetch_object, obj, cache.place(obj.path), progress, ranges
                )
            try:
                for obj in stale:
                    futures[obj.path].result()
                    manifest[obj.path] = obj.version
            finally:
                cache.save(manifest)
        for obj in objects:
            if obj.unpack:
                unpacked = cache.folder / "unpacked" / obj.path
                if obj in stale or not unpacked.is_dir():
                    unpack(cache.place(obj.path), unpacked)
                link_tree(unpacked, dest)
            else:
                link_tree_one(cache.place(obj.path), dest / obj.path)
        elapsed = time.monotonic() - progress.started
    return (
        f"fetch: {source}: done, {len(stale)} fetched ({_mb(progress.done)} MB in "
        f"{elapsed:.1f} s), {len(objects) - len(stale)} from cache"
    )


def _check_room(folder: Path, source: str, need: int) -> None:
    """Refuse, before a byte moves, a fetch the node's disk cannot hold (an archive counts twice:
    it is kept beside what it unpacks to), saying how much room there is and what to ask for."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if need > free:
        ask = -(-int(need * 1.1 - free) // 10**9)
        raise FetchError(
            f"{source}: needs {_mb(need)} MB on the node and its disk has {_mb(free)} MB free "
            f"at {folder}; ask for about {ask} GB more (resources.disk_gb), or free the node's "
            "cache (`gpujobs gc`)"
        )


def link_tree_one(path: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(path, target)
    except OSError:
        shutil.copy2(path, target)


def main(argv: list[str]) -> int:
    """REQUEST.json: {"sources": [{"source", "sha256"?, "endpoint_url"?}], "dest", "cache",
    "log"?, "workers"?, "chunk_bytes"?}."""
    job = json.loads(Path(argv[1]).read_text())
    dest, cache_root = Path(job["dest"]), Path(job["cache"])
    log = Path(job["log"]) if job.get("log") else None
    dest.mkdir(parents=True, exist_ok=True)
    global CHUNK
    CHUNK = int(job.get("chunk_bytes") or CHUNK)
    try:
        for source in job["sources"]:
            line = fetch_source(source, cache_root, dest, log, int(job.get("workers", 16)))
            Progress(0, log).say(line)
    except FetchError as exc:
        print(f"gpujobs fetch failed: {exc}", file=sys.stderr, flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
