"""The node-side fetcher against real peers on loopback: S3 (moto's server, objects put with
boto3) and https (a TLS server with a throwaway CA)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

from gpujobs.errors import ProvisioningError
from gpujobs.remote.fetch import SourceRequest, fetch_on_node
from gpujobs.remote.transport import LocalTransport
from tests.fetch_peers import https_server, moto_s3

CHUNK = 1 << 20  # ranges of 1 MiB, so a few MiB make a ranged, resumable read


def _fetch(
    tmp_path: Path, *sources: SourceRequest, dest: str = "data", seen: list[str] | None = None
) -> list[str]:
    return fetch_on_node(
        LocalTransport(),
        python=sys.executable,
        sources=sources,
        dest=str(tmp_path / dest),
        cache=str(tmp_path / "cache"),
        log=str(tmp_path / "job.log"),
        scratch=str(tmp_path / "scratch"),
        env={},
        workers=4,
        chunk_bytes=CHUNK,
        poll_s=0.05,
        on_line=None if seen is None else seen.append,
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_s3_prefix_is_fetched_verified_and_cached(tmp_path: Path, monkeypatch) -> None:
    with moto_s3(monkeypatch) as (s3, _endpoint):
        s3.create_bucket(Bucket="lab-data")
        objects = {f"mnist/train/{i}.bin": bytes([i]) * (1000 + i) for i in range(20)}
        objects["mnist/labels.csv"] = b"id,label\n1,7\n"
        objects["mnist2/other.bin"] = b"not in the prefix"
        for key, body in objects.items():
            s3.put_object(Bucket="lab-data", Key=key, Body=body)

        seen: list[str] = []
        lines = _fetch(tmp_path, SourceRequest("s3://lab-data/mnist"), seen=seen)
        assert seen[0].startswith("fetch: s3://lab-data/mnist: 21 object(s), 21 to fetch")
        assert seen[-1] == lines[0]  # the node's lines, as they came
        got = _files(tmp_path / "data")
        want = {k.removeprefix("mnist/"): v for k, v in objects.items() if k.startswith("mnist/")}
        assert got == want
        assert "21 fetched" in lines[0]

        # Unchanged: nothing fetched again; changed: only that object.
        s3.put_object(Bucket="lab-data", Key="mnist/labels.csv", Body=b"id,label\n1,8\n")
        lines = _fetch(tmp_path, SourceRequest("s3://lab-data/mnist/"), dest="data2")
        assert "1 fetched" in lines[0] and "20 from cache" in lines[0]
        assert (tmp_path / "data2" / "labels.csv").read_bytes() == b"id,label\n1,8\n"
        assert (tmp_path / "data" / "labels.csv").read_bytes() == b"id,label\n1,7\n"
    log = (tmp_path / "job.log").read_text()
    assert "fetch: s3://lab-data/mnist: done" in log
    assert "testing" not in log  # no credential in the log


def test_large_s3_object_in_ranges(tmp_path: Path, monkeypatch) -> None:
    body = hashlib.sha256(b"seed").digest() * ((CHUNK * 2 + 12345) // 32)
    with moto_s3(monkeypatch) as (s3, _endpoint):
        s3.create_bucket(Bucket="big")
        s3.put_object(Bucket="big", Key="weights/model.bin", Body=body)
        _fetch(tmp_path, SourceRequest("s3://big/weights/model.bin"))
    assert (tmp_path / "data" / "model.bin").read_bytes() == body


def test_s3_errors_name_the_cause(tmp_path: Path, monkeypatch) -> None:
    with moto_s3(monkeypatch) as (s3, _endpoint):
        s3.create_bucket(Bucket="empty")
        with pytest.raises(ProvisioningError, match="nothing there"):
            _fetch(tmp_path, SourceRequest("s3://empty/nope"))
        with pytest.raises(ProvisioningError, match="HTTP 404"):
            _fetch(tmp_path, SourceRequest("s3://no-such-bucket/x"))


def _tar_gz(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return gzip.compress(raw.getvalue())


def test_https_archive_with_sha256_is_unpacked(tmp_path: Path, monkeypatch) -> None:
    archive = _tar_gz({"covers/a.txt": b"alpha", "covers/b/c.txt": b"gamma"})
    digest = hashlib.sha256(archive).hexdigest()
    with https_server(tmp_path, monkeypatch) as (base, served):
        served.files["/sets/covers.tar.gz"] = archive
        _fetch(tmp_path, SourceRequest(f"{base}/sets/covers.tar.gz", sha256=digest))
        assert _files(tmp_path / "data") == {"covers/a.txt": b"alpha", "covers/b/c.txt": b"gamma"}
        gets = served.gets
        _fetch(tmp_path, SourceRequest(f"{base}/sets/covers.tar.gz", sha256=digest), dest="d2")
        assert served.gets == gets  # from the cache
        with pytest.raises(ProvisioningError, match="sha256 is"):
            _fetch(tmp_path, SourceRequest(f"{base}/sets/covers.tar.gz", sha256="0" * 64))


def test_a_cut_mid_object_resumes(tmp_path: Path, monkeypatch) -> None:
    body = bytes(range(256)) * (3 * (1 << 20) // 256)
    with https_server(tmp_path, monkeypatch) as (base, served):
        served.files["/big.bin"] = body
        served.cut_after = len(body) // 2
        _fetch(tmp_path, SourceRequest(f"{base}/big.bin"))
        assert (tmp_path / "data" / "big.bin").read_bytes() == body
        assert len(body) <= served.bytes_sent < 1.3 * len(body)


def test_an_interrupted_fetch_continues_from_its_record(tmp_path: Path, monkeypatch) -> None:
    """A fetcher killed mid-way (the node's job restarted) leaves its ranges recorded; the next
    run reads only the missing ones."""
    size = CHUNK * 3
    body = hashlib.sha256(b"x").digest() * (size // 32)
    with https_server(tmp_path, monkeypatch) as (base, served):
        served.files["/ranges.bin"] = body
        from gpujobs.remote.fetch import sources

        obj = sources.list_url(f"{base}/ranges.bin")[0]
        key_dirs = tmp_path / "cache" / "fetch"
        # What a killed run leaves: the part file with its first two ranges and their record.
        _fetch(tmp_path, SourceRequest(f"{base}/ranges.bin"))
        (cached,) = list(key_dirs.glob("*/objects/ranges.bin"))
        part = cached.with_name("ranges.bin.part")
        part.write_bytes(body[: CHUNK * 2] + bytes(CHUNK))
        cached.with_name("ranges.bin.part.json").write_text(
            json.dumps({"version": obj.version, "done": [0, CHUNK]})
        )
        cached.unlink()
        (cached.parent.parent / "manifest.json").write_text("{}")
        served.bytes_sent = 0
        _fetch(tmp_path, SourceRequest(f"{base}/ranges.bin"), dest="again")
        assert served.bytes_sent == CHUNK
        assert (tmp_path / "again" / "ranges.bin").read_bytes() == body


def test_a_dataset_the_nodes_disk_cannot_hold_is_refused_before_a_byte_moves(
    tmp_path: Path, monkeypatch
) -> None:
    """The node's own free disk, not only `disk_gb`: a 4 MB tmpfs as the node's cache."""
    import subprocess

    cache = tmp_path / "cache"
    cache.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(cache)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"a small disk needs `mount -t tmpfs` (root): {mounted.stderr!r}")
    try:
        with moto_s3(monkeypatch) as (s3, _endpoint):
            s3.create_bucket(Bucket="covers")
            for i in range(3):
                s3.put_object(Bucket="covers", Key=f"big/{i}.bin", Body=bytes(3_000_000))
            with pytest.raises(ProvisioningError, match=r"needs 9\.0 MB on the node") as caught:
                _fetch(tmp_path, SourceRequest("s3://covers/big"))
        assert "resources.disk_gb" in str(caught.value)
        assert not any(cache.rglob("*.bin")), "nothing was fetched"
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=False)
