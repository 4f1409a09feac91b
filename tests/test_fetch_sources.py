"""Google Cloud Storage, the Hugging Face Hub and Kaggle, each through a local HTTP fake of its
download API with the response shapes the real one gives; the credentials they need reach the
node through the job's env file, found where their own tools keep them."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path
from urllib.parse import unquote

import pytest

from gpujobs.errors import ProvisioningError
from gpujobs.remote.fetch import SourceRequest, fetch_on_node
from gpujobs.remote.transport import LocalTransport
from tests.fetch_peers import http_fake


def _fetch(tmp_path: Path, source: str, dest: str = "data") -> list[str]:
    return fetch_on_node(
        LocalTransport(),
        python=sys.executable,
        sources=[SourceRequest(source)],
        dest=str(tmp_path / dest),
        cache=str(tmp_path / "cache"),
        log=str(tmp_path / "job.log"),
        scratch=str(tmp_path / "scratch"),
        env={},
        workers=4,
        poll_s=0.05,
    )


def _json(data: object) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(data).encode()


def test_gs_prefix_through_the_json_api(tmp_path: Path, monkeypatch) -> None:
    objects = {"covers/a.jpg": b"\xff\xd8jpeg-a", "covers/sub/b.jpg": b"\xff\xd8jpeg-bb"}
    generation = {"n": 1}
    media_reads = []
    tampered: dict[str, bytes] = {}  # served instead of what the listing describes

    def answer(method, path, query, headers):
        if path == "/storage/v1/b/art-data/o":
            prefix = query.get("prefix", [""])[0]
            items = [
                {
                    "name": name,
                    "size": str(len(body)),
                    "md5Hash": base64.b64encode(hashlib.md5(body).digest()).decode(),
                    "generation": str(generation["n"]),
                }
                for name, body in objects.items()
                if name.startswith(prefix)
            ]
            return _json({"kind": "storage#objects", "items": items})
        if path.startswith("/storage/v1/b/art-data/o/") and query.get("alt") == ["media"]:
            name = unquote(path.rsplit("/", 1)[1])
            media_reads.append(name)
            return 200, {}, tampered.get(name, objects[name])
        return 404, {}, b'{"error": {"code": 404}}'

    with http_fake(answer) as endpoint:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        _fetch(tmp_path, "gs://art-data/covers")
        assert (tmp_path / "data" / "sub" / "b.jpg").read_bytes() == b"\xff\xd8jpeg-bb"
        assert (tmp_path / "data" / "a.jpg").read_bytes() == b"\xff\xd8jpeg-a"
        _fetch(tmp_path, "gs://art-data/covers/", dest="again")
        assert len(media_reads) == 2, "the same generation is not read again"
        generation["n"] = 2
        objects["covers/a.jpg"] = b"\xff\xd8jpeg-a2"
        _fetch(tmp_path, "gs://art-data/covers", dest="third")
        assert (tmp_path / "third" / "a.jpg").read_bytes() == b"\xff\xd8jpeg-a2"
        generation["n"] = 3
        tampered["covers/a.jpg"] = b"\xff\xd8jpeg-XX"  # same size, other bytes than md5Hash says
        with pytest.raises(ProvisioningError, match="md5"):
            _fetch(tmp_path, "gs://art-data/covers", dest="fourth")


def test_hf_dataset_pinned_to_its_commit_with_the_token(tmp_path: Path, monkeypatch) -> None:
    files = {"README.md": b"# reviews\n", "data/train.parquet": b"PAR1" + bytes(5000) + b"PAR1"}
    commit = "3f2a9c0d1e"
    seen_auth = set()

    def answer(method, path, query, headers):
        seen_auth.add(headers.get("Authorization"))
        if headers.get("Authorization") != "Bearer hf_secret_token":
            return 401, {}, b'{"error": "Invalid credentials"}'
        if path == "/api/datasets/lab/reviews/revision/v1.0":
            return _json({"id": "lab/reviews", "sha": commit})
        if path == f"/api/datasets/lab/reviews/tree/{commit}":
            return _json(
                [{"type": "directory", "path": "data", "oid": "d1", "size": 0}]
                + [
                    {
                        "type": "file",
                        "path": name,
                        "size": len(body),
                        "oid": hashlib.sha1(body).hexdigest(),
                        **(
                            {"lfs": {"oid": hashlib.sha256(body).hexdigest(), "size": len(body)}}
                            if name.endswith(".parquet")
                            else {}
                        ),
                    }
                    for name, body in files.items()
                ]
            )
        prefix = f"/datasets/lab/reviews/resolve/{commit}/"
        if path.startswith(prefix):
            return 200, {}, files[unquote(path[len(prefix) :])]
        return 404, {}, b""

    with http_fake(answer) as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
        _fetch(tmp_path, "hf://datasets/lab/reviews@v1.0")
    assert (tmp_path / "data" / "data" / "train.parquet").read_bytes() == files[
        "data/train.parquet"
    ]
    assert (tmp_path / "data" / "README.md").read_bytes() == b"# reviews\n"
    assert seen_auth == {"Bearer hf_secret_token"}
    assert "hf_secret_token" not in (tmp_path / "job.log").read_text()
    assert not list(tmp_path.rglob("fetch.env")), "the env file goes once it is read"


def test_kaggle_dataset_with_the_key_from_kaggle_json(tmp_path: Path, monkeypatch) -> None:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as zipped:
        zipped.writestr("train.csv", "PassengerId,Survived\n1,0\n2,1\n")
        zipped.writestr("test.csv", "PassengerId\n3\n")
    archive = raw.getvalue()
    expected = "Basic " + base64.b64encode(b"ada:kaggle-key-123").decode()

    def answer(method, path, query, headers):
        if headers.get("Authorization") != expected:
            return 401, {}, b'{"code": 401, "message": "Unauthenticated"}'
        if path == "/api/v1/competitions/data/download-all/titanic":
            return 200, {"Content-Type": "application/zip", "ETag": '"v7"'}, archive
        return 404, {}, b""

    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    with http_fake(answer) as endpoint:
        monkeypatch.setenv("KAGGLE_API_ENDPOINT", f"{endpoint}/api/v1")
        with pytest.raises(ProvisioningError, match="Kaggle needs your API key"):
            _fetch(tmp_path, "kaggle://competitions/titanic")
        kaggle = Path.home() / ".kaggle"
        kaggle.mkdir()
        (kaggle / "kaggle.json").write_text('{"username": "ada", "key": "kaggle-key-123"}')
        _fetch(tmp_path, "kaggle://competitions/titanic")
    assert (tmp_path / "data" / "train.csv").read_text().startswith("PassengerId,Survived")
    assert (tmp_path / "data" / "test.csv").exists()
    assert "kaggle-key-123" not in (tmp_path / "job.log").read_text()
