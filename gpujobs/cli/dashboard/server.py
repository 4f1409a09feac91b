"""The dashboard's HTTP server: 127.0.0.1 only, every request carrying the session's random
token (compared in constant time), the Host header checked (no DNS rebinding), a stop only by
POST with the token in its body and, when the browser sends one, our own Origin. Pages go out
with a strict Content-Security-Policy: this server's JSON and pictures, one nonce'd script."""

from __future__ import annotations

import contextlib
import hmac
import json
import secrets
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from gpujobs.api.controller import Controller
from gpujobs.cli.dashboard import data, pages
from gpujobs.errors import GpuJobsError

_MAX_FORM = 4096


class Dashboard:
    """One dashboard session: its server, its token, and the controller it reads through."""

    def __init__(self, controller_factory: Callable[[], Controller], port: int = 0) -> None:
        self.controller_factory = controller_factory
        self.token = secrets.token_urlsafe(24)
        handler = type("Handler", (_Handler,), {"dashboard": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.stops: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"

    def serve_forever(self) -> None:
        self.server.serve_forever(poll_interval=0.2)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="gpujobs-ui", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def stop_job(self, job_id: str) -> None:
        """What `gpujobs down` does, in the background: the page returns at once."""

        def run() -> None:
            controller = self.controller_factory()
            with contextlib.suppress(GpuJobsError):  # the job page shows what became of it
                controller.down(job_id)

        thread = threading.Thread(target=run, name=f"gpujobs-ui-stop-{job_id}", daemon=True)
        thread.start()
        self.stops.append(thread)


class _Handler(BaseHTTPRequestHandler):
    dashboard: Dashboard
    server_version = "gpujobs-ui"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        return None  # the URLs carry the token: nothing is logged

    # -- routing ----------------------------------------------------------------------------
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if not self._allowed(query.get("token", [""])[0]):
            return
        parts = [unquote(part) for part in url.path.strip("/").split("/") if part]
        controller = self.dashboard.controller_factory()
        nonce = secrets.token_urlsafe(12)
        token = self.dashboard.token
        try:
            if not parts:
                self._html(pages.jobs_page(data.jobs(controller), token, nonce), nonce)
            elif parts == ["budget"]:
                self._html(pages.budget_page(controller.budget_report(), token, nonce), nonce)
            elif len(parts) == 2 and parts[0] == "job":
                job = data.job(controller, parts[1])
                shown = data.pictures(controller, job["id"])
                self._html(pages.job_page(job, shown, token, nonce), nonce)
            elif len(parts) == 3 and parts[0] == "job" and parts[2] == "picture":
                self._picture(controller, parts[1], query.get("name", [""])[0])
            elif parts == ["api", "jobs"]:
                self._json(data.jobs(controller))
            elif len(parts) == 4 and parts[:2] == ["api", "job"] and parts[3] == "log":
                offset = int(query.get("offset", ["0"])[0] or 0)
                chunk, after = data.log_since(controller, parts[2], offset)
                state = controller.find(parts[2]).state.value
                text = chunk.decode("utf-8", errors="replace")
                self._json({"text": text, "offset": after, "state": state})
            elif len(parts) == 4 and parts[:2] == ["api", "job"] and parts[3] == "metrics":
                self._json(data.metrics(controller, parts[2]))
            else:
                self._fail(HTTPStatus.NOT_FOUND, "no such page")
        except GpuJobsError as exc:
            self._fail(HTTPStatus.NOT_FOUND, str(exc))
        except ValueError:
            self._fail(HTTPStatus.BAD_REQUEST, "bad request")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_FORM:
            self._fail(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too large")
            return
        form = parse_qs(self.rfile.read(length).decode("utf-8", errors="replace"))
        if not self._allowed(form.get("token", [""])[0]):
            return
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{self.headers.get('Host')}":
            self._fail(HTTPStatus.FORBIDDEN, "a request from another site")
            return
        parts = [unquote(part) for part in url.path.strip("/").split("/") if part]
        if len(parts) != 3 or parts[0] != "job" or parts[2] != "stop":
            self._fail(HTTPStatus.NOT_FOUND, "no such action")
            return
        try:
            record = self.dashboard.controller_factory().find(parts[1])
        except GpuJobsError as exc:
            self._fail(HTTPStatus.NOT_FOUND, str(exc))
            return
        self.dashboard.stop_job(record.id)
        self.send_response(HTTPStatus.SEE_OTHER)
        self.send_header("Location", f"/job/{record.id}?token={self.dashboard.token}")
        self._security_headers()
        self.end_headers()

    # -- checks and answers -----------------------------------------------------------------
    def _allowed(self, token: str) -> bool:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        if host not in ("127.0.0.1", "localhost"):
            self._fail(HTTPStatus.FORBIDDEN, "this dashboard answers on 127.0.0.1 only")
            return False
        if not hmac.compare_digest(token.encode(), self.dashboard.token.encode()):
            self._fail(
                HTTPStatus.FORBIDDEN, "a missing or wrong token: open the URL gpujobs ui printed"
            )
            return False
        return True

    def _security_headers(self, nonce: str | None = None) -> None:
        script = f"'nonce-{nonce}'" if nonce else "'none'"
        self.send_header(
            "Content-Security-Policy",
            f"default-src 'none'; script-src {script}; style-src {script}; img-src 'self'; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        )
        # The URL carries the token: it never goes to another site. (Not no-referrer: a
        # browser then sends `Origin: null` with our own form, and the Origin check fails.)
        self.send_header("Referrer-Policy", "same-origin")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")

    def _send(self, status: HTTPStatus, body: bytes, kind: str, nonce: str | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self._security_headers(nonce)
        self.end_headers()
        self.wfile.write(body)

    def _html(self, text: str, nonce: str) -> None:
        self._send(HTTPStatus.OK, text.encode(), "text/html; charset=utf-8", nonce)

    def _json(self, value: object) -> None:
        self._send(HTTPStatus.OK, json.dumps(value).encode(), "application/json")

    def _fail(self, status: HTTPStatus, message: str) -> None:
        self._send(status, f"{status.value} {message}\n".encode(), "text/plain; charset=utf-8")

    def _picture(self, controller: Controller, job_id: str, name: str) -> None:
        path = data.picture_path(controller, job_id, name)
        if path is None:
            self._fail(HTTPStatus.NOT_FOUND, "no such picture")
            return
        kind = {".png": "image/png", ".gif": "image/gif"}.get(path.suffix.lower(), "image/jpeg")
        self._send(HTTPStatus.OK, path.read_bytes(), kind)
