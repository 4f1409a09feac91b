"""Datasets the node fetches itself, through the whole lifecycle: mnist from s3:// (moto's S3
server on loopback) on the local provider and over a real loopback sshd, and an https archive
with a sha256; the second job on a host takes the dataset from the host's cache."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import struct
import tarfile
from pathlib import Path

import numpy as np

from gpujobs.testing.ssh import LoopbackSshd
from tests.conftest import gpujobs_cli, write_spec
from tests.fetch_peers import https_server, moto_s3


def mnist_files(count: int = 400) -> dict[str, bytes]:
    """MNIST-shaped IDX files (gzip, as the real mirrors ship them)."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, count, dtype=np.uint8)
    files = {}
    for name, array in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
        dims = struct.pack(f">{array.ndim}I", *array.shape)
        files[f"{name}.gz"] = gzip.compress(header + dims + array.tobytes())
    return files


def _launch(spec: Path, timeout: float = 300) -> dict:
    done = gpujobs_cli("launch", str(spec), timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    job = json.loads(gpujobs_cli("status", "--json").stdout)[0]  # the newest first
    assert job["state"] == "SUCCEEDED"
    job["stderr"] = done.stderr
    job["stdout"] = done.stdout
    return job


def test_mnist_from_s3_on_the_local_provider_and_again_from_cache(
    tmp_path: Path, monkeypatch
) -> None:
    with moto_s3(monkeypatch) as (s3, _endpoint):
        s3.create_bucket(Bucket="course-data")
        for name, body in mnist_files().items():
            s3.put_object(Bucket="course-data", Key=f"mnist/{name}", Body=body)
        spec = write_spec(
            tmp_path,
            """
            name: mnist-s3
            workload: mnist_cnn
            args: {epochs: 1, batch_size: 64, seed: 1}
            dataset: {source: s3://course-data/mnist}
            """,
        )
        first = _launch(spec)
        assert "2 fetched" in first["stderr"], first["stderr"][-2000:]
        log = (Path(first["runs_dir"]) / "job.log").read_text()
        assert "epoch 1/1" in log  # trained on the fetched files: no --synthetic was given
        assert "gpujobs fetch: s3://course-data/mnist: done" in log
        assert "testing" not in log and "testing" not in first["stderr"]  # no secret shown
        second = _launch(spec)
        assert "0 fetched" in second["stderr"] and "2 from cache" in second["stderr"]
    # `gpujobs gc` reports the host's dataset cache, and prunes what no job used lately. (Without
    # the test's AWS keys: gc would sweep the real AWS with them.)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    report = json.loads(gpujobs_cli("gc", "--json", env=env).stdout)["dataset_cache"]
    assert [(e["source"], e["removed"]) for e in report] == [("s3://course-data/mnist", False)]
    assert report[0]["bytes"] > sum(len(body) for body in mnist_files().values())
    kept = gpujobs_cli("gc", "--yes", "--cache-days", "1", env=env)
    assert "dataset cache on this machine: 1 source(s)" in kept.stderr
    assert "removed from the dataset cache" not in kept.stderr
    pruned = gpujobs_cli("gc", "--yes", "--cache-days", "0", env=env)
    assert "removed from the dataset cache: s3://course-data/mnist" in pruned.stderr


def test_mnist_from_s3_over_ssh(sshd: LoopbackSshd, tmp_path: Path, monkeypatch) -> None:
    remote_root = tmp_path / "lab-machine"
    with moto_s3(monkeypatch) as (s3, _endpoint):
        s3.create_bucket(Bucket="course-data")
        for name, body in mnist_files().items():
            s3.put_object(Bucket="course-data", Key=f"mnist/{name}", Body=body)
        spec = write_spec(
            tmp_path,
            f"""
            name: mnist-s3-ssh
            workload: mnist_cnn
            args: {{epochs: 1, batch_size: 64, seed: 1}}
            providers: [ssh]
            ssh:
              hosts: ["{sshd.target}"]
              identity_file: {sshd.client_key}
              workdir: {remote_root}
            dataset: {{source: "s3://course-data/mnist/"}}
            """,
        )
        job = _launch(spec, timeout=400)
    assert "2 fetched" in job["stderr"], job["stderr"][-2000:]
    assert "epoch 1/1" in (Path(job["runs_dir"]) / "job.log").read_text()
    # The host keeps the fetched objects for the next job; the job's env file is gone.
    cached = list((remote_root / "cache" / "fetch").glob("*/objects/train-images-idx3-ubyte.gz"))
    assert len(cached) == 1
    assert not list(remote_root.rglob("fetch.env"))


def test_an_https_archive_with_its_sha256(tmp_path: Path, monkeypatch) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, body in mnist_files().items():
            info = tarfile.TarInfo(f"mnist/{name}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    archive = raw.getvalue()
    with https_server(tmp_path, monkeypatch) as (base, served):
        served.files["/mnist.tar.gz"] = archive
        spec = write_spec(
            tmp_path,
            f"""
            name: mnist-https
            command: ls -R "$GPUJOBS_DATA_DIR"
            dataset:
              source: {base}/mnist.tar.gz
              sha256: {hashlib.sha256(archive).hexdigest()}
            """,
        )
        job = _launch(spec)
    log = (Path(job["runs_dir"]) / "job.log").read_text()
    assert "train-images-idx3-ubyte.gz" in log


def test_a_dataset_bigger_than_disk_gb_is_refused_at_planning(tmp_path: Path, monkeypatch) -> None:
    with moto_s3(monkeypatch) as (s3, _endpoint):
        s3.create_bucket(Bucket="big-set")
        for index in range(3):
            s3.put_object(Bucket="big-set", Key=f"frames/{index}.bin", Body=b"x" * 400_000)
        spec = write_spec(
            tmp_path,
            """
            name: too-big
            command: "true"
            resources: {disk_gb: 0.001}
            dataset: {source: s3://big-set/frames}
            """,
        )
        planned = json.loads(gpujobs_cli("plan", "--json", str(spec)).stdout)["dataset"]
        assert planned["bytes"] == 1_200_000
        assert planned["sources"] == [
            {"source": "s3://big-set/frames", "bytes": 1_200_000, "objects": 3, "note": ""}
        ]
        assert planned["egress_basis"] == "s3://big-set/frames out of aws at $0.09/GB"
        shown = gpujobs_cli("plan", str(spec)).stderr
        assert "dataset: s3://big-set/frames: 1.2 MB in 3 object(s); resources.disk_gb: 0.001" in (
            shown
        )
        done = gpujobs_cli("launch", str(spec), timeout=120)
        assert done.returncode == 2, done.stderr
        line = done.stderr.strip().splitlines()[-1]
        assert "the dataset is 1.2 MB (s3://big-set/frames: 1.2 MB in 3 object(s))" in line
        assert "more than resources.disk_gb: 0.001; ask for disk_gb: 10" in line, line
        assert "s3://big-set/frames" in line and "3 object(s)" in line
        assert "Traceback" not in done.stderr
        missing = write_spec(
            tmp_path,
            """
            name: no-bucket
            command: "true"
            resources: {disk_gb: 10}
            dataset: {source: s3://no-such-bucket/frames}
            """,
            name="missing.yaml",
        )
        done = gpujobs_cli("launch", str(missing), timeout=120)
        assert done.returncode == 2 and "HTTP 404" in done.stderr, done.stderr
    assert json.loads(gpujobs_cli("status", "--json").stdout) == []


def test_checkpoints_are_uploaded_to_s3_by_the_node(tmp_path: Path, monkeypatch) -> None:
    with moto_s3(monkeypatch) as (s3, _endpoint):
        s3.create_bucket(Bucket="lab-ckpt")
        spec = write_spec(
            tmp_path,
            """
            name: mnist-upload
            workload: mnist_cnn
            args: {synthetic: 300, epochs: 2, batch_size: 64, seed: 1}
            checkpoints: {upload: s3://lab-ckpt/runs/mnist, keep: 2}
            """,
        )
        job = _launch(spec)
        listed = s3.list_objects_v2(Bucket="lab-ckpt", Prefix="runs/mnist/")
        uploaded = {item["Key"].removeprefix("runs/mnist/") for item in listed["Contents"]}
        home = {p.name for p in Path(job["runs_dir"]).glob("ckpt-*.pt")}
        assert home and home <= uploaded, (home, uploaded)
        newest = sorted(home)[-1]
        body = s3.get_object(Bucket="lab-ckpt", Key=f"runs/mnist/{newest}")["Body"].read()
        assert body == (Path(job["runs_dir"]) / newest).read_bytes()
        assert "testing" not in (Path(job["runs_dir"]) / "job.log").read_text()


def test_files_from_a_bucket_object_and_prefix(tmp_path: Path, monkeypatch) -> None:
    with moto_s3(monkeypatch) as (s3, _endpoint):
        s3.create_bucket(Bucket="lab-weights")
        s3.put_object(Bucket="lab-weights", Key="vgg/vgg19-tiny.pth", Body=b"weights-v1")
        s3.put_object(Bucket="lab-weights", Key="glove/a.txt", Body=b"alpha")
        s3.put_object(Bucket="lab-weights", Key="glove/b.txt", Body=b"beta")
        spec = write_spec(
            tmp_path,
            """
            name: files-s3
            command: cat weights/vgg19-tiny.pth; echo; cat glove/a.txt glove/b.txt
            files:
              weights/vgg19-tiny.pth: s3://lab-weights/vgg/vgg19-tiny.pth
              glove: s3://lab-weights/glove/
            """,
        )
        job = _launch(spec)
    log = (Path(job["runs_dir"]) / "job.log").read_text()
    assert "weights-v1\nalphabeta" in log, log[-500:]
