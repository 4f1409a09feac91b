"""The node-side checkpoint uploader: `python3 upload.py REQUEST.json` copies each checkpoint to a
bucket (`checkpoints.upload: s3://bucket/prefix`) as the workload writes it, so a job whose
laptop is gone still keeps its checkpoints.

Shipped beside sources.py and run detached with the node's python3 (standard library only). It
looks at the checkpoint folder every few seconds and uploads each file that is new or changed
and has stayed the same size and mtime for one look (the workloads write by temp file and
rename; temp and hidden files are skipped), with its Content-MD5, which S3 checks. It ends
after a last look once the job's exit code is written, or when the job's folder is gone
(teardown).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.parse
from pathlib import Path

try:  # on the laptop, inside the package; on a node, beside this file
    from gpujobs.remote.fetch.sources import AwsKeys, request, s3_endpoint, sigv4
except ImportError:  # pragma: no cover - the node's way
    from sources import AwsKeys, request, s3_endpoint, sigv4  # type: ignore

_SINGLE_PUT_LIMIT = 5 * 10**9  # S3's limit for one PUT


def _say(log: Path | None, text: str) -> None:
    print(f"gpujobs {text}", flush=True)
    if log is not None:
        with log.open("a", encoding="utf-8") as handle:
            handle.write(f"gpujobs {text}\n")


def put_object(target: str, path: Path, endpoint_url: str | None = None) -> None:
    """One file to `s3://bucket/key`, signed, with its MD5 for the store to check."""
    bucket, _, key = target[len("s3://") :].partition("/")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    endpoint = s3_endpoint(endpoint_url)
    base = f"{endpoint}/{bucket}" if endpoint else f"https://{bucket}.s3.{region}.amazonaws.com"
    url = f"{base}/{urllib.parse.quote(key, safe='/-_.~')}"
    data = path.read_bytes()
    headers = {
        "Content-MD5": base64.b64encode(hashlib.md5(data).digest()).decode(),
        "Content-Length": str(len(data)),
    }
    keys = AwsKeys.from_env()
    if keys is not None:
        payload = hashlib.sha256(data).hexdigest()
        headers = sigv4(keys, region, "PUT", url, headers, payload)
    with request(url, headers, method="PUT", body=data, timeout=600) as answer:
        answer.read()


def upload_loop(job: dict) -> int:
    folder, target = Path(job["folder"]), job["target"].rstrip("/")
    exit_file, workdir = Path(job["exit_code"]), Path(job["workdir"])
    log = Path(job["log"]) if job.get("log") else None
    every = float(job.get("every_s", 5))
    sent: dict[str, tuple[int, float]] = {}
    seen: dict[str, tuple[int, float]] = {}
    while True:
        finishing = exit_file.exists() or not workdir.exists()
        now_seen = {}
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            name = path.relative_to(folder).as_posix()
            if not path.is_file() or path.name.startswith(".") or path.suffix == ".tmp":
                continue
            if name == "job.log":
                continue
            try:
                info = path.stat()
            except OSError:
                continue  # pruned by the workload meanwhile
            mark = (info.st_size, info.st_mtime)
            now_seen[name] = mark
            if sent.get(name) == mark or (seen.get(name) != mark and not finishing):
                continue  # already there, or still being written: next look
            if info.st_size > _SINGLE_PUT_LIMIT:
                _say(log, f"upload: {name}: over 5 GB, not uploaded")
                sent[name] = mark
                continue
            try:
                put_object(f"{target}/{name}", path, job.get("endpoint_url"))
            except (urllib.error.URLError, OSError) as exc:
                _say(log, f"upload: {name}: failed ({getattr(exc, 'code', '')} "
                          f"{getattr(exc, 'reason', exc)}), retried at the next look")  # fmt: skip
                continue
            sent[name] = mark
            _say(log, f"upload: {name} -> {target}/{name} ({info.st_size} bytes)")
        seen = now_seen
        if finishing:
            return 0
        time.sleep(every)


def main(argv: list[str]) -> int:
    """REQUEST.json: {"folder", "target", "exit_code", "workdir", "log"?, "every_s"?,
    "endpoint_url"?}."""
    return upload_loop(json.loads(Path(argv[1]).read_text()))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
