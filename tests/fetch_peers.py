"""Real protocol peers on loopback for the fetch tests: moto's S3 server with boto3's client, and
an https server with a throwaway CA (trustme) that serves files with ETag and Range, and can cut a
read part way through."""

from __future__ import annotations

import hashlib
import http.server
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@contextmanager
def moto_s3(monkeypatch) -> Iterator[tuple[object, str]]:
    """(a boto3 S3 client, the endpoint); the fetcher finds it through AWS_ENDPOINT_URL_S3."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    try:
        yield client, endpoint
    finally:
        server.stop()


@dataclass
class Served:
    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: int | None = None  # bytes of the next GET before the connection drops
    bytes_sent: int = 0
    gets: int = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    served: Served

    def log_message(self, *args: object) -> None:
        return None

    def _head(self) -> bytes | None:
        body = self.served.files.get(self.path)
        if body is None:
            self.send_error(404)
            return None
        return body

    def do_HEAD(self) -> None:
        body = self._head()
        if body is None:
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"' + hashlib.md5(body).hexdigest() + '"')
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self) -> None:
        body = self._head()
        if body is None:
            return
        self.served.gets += 1
        start, end = 0, len(body)
        ranged = self.headers.get("Range")
        if ranged:
            first, _, last = ranged.removeprefix("bytes=").partition("-")
            start, end = int(first), (int(last) + 1 if last else len(body))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        chunk = body[start:end]
        if self.served.cut_after is not None:
            chunk = chunk[: self.served.cut_after]
            self.served.cut_after = None
            self.wfile.write(chunk)
            self.served.bytes_sent += len(chunk)
            self.close_connection = True
            return
        self.wfile.write(chunk)
        self.served.bytes_sent += len(chunk)


@contextmanager
def https_server(tmp_path: Path, monkeypatch) -> Iterator[tuple[str, Served]]:
    """(base URL, what it serves); SSL_CERT_FILE names the throwaway CA, as a lab's own CA."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    served = Served()
    handler = type("Handler", (_Handler,), {"served": served})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def http_fake(answer) -> Iterator[str]:
    """A plain-HTTP fake of a download API on loopback: `answer(method, path, query, headers)`
    gives (status, headers, body); a Range header is served from the body as a real server
    would."""
    from urllib.parse import parse_qs, urlsplit

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return None

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            status, headers, body = answer(method, parts.path, parse_qs(parts.query), self.headers)
            ranged = self.headers.get("Range")
            if status == 200 and ranged:
                first, _, last = ranged.removeprefix("bytes=").partition("-")
                start, end = int(first), int(last) + 1 if last else len(body)
                headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{len(body)}"}
                status, body = 206, body[start:end]
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_HEAD(self) -> None:
            self._serve("HEAD")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
