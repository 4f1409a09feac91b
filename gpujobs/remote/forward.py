"""Local port forwarding over a job's SSH connection: 127.0.0.1:<local> on this machine to
localhost:<port> on the node (sshd tries its IPv6 and IPv4 loopback, so a server bound to
either answers), through direct-tcpip channels of the job's own SSH login (the
node's firewall never opens the port).

A dropped link (Wi-Fi, a laptop that slept) does not end the forward: the next connection made
to the local port reconnects with the transport's backoff, within its reconnect window. What was
open through the old link ends with it, as with `ssh -L`; browsers and TensorBoard reconnect.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable

import paramiko

from gpujobs.errors import GpuJobsError, TransportError
from gpujobs.remote.ssh import SSHTransport

_CHUNK = 1 << 15


class PortForward:
    """`with PortForward(transport, 6006) as fwd: fwd.local_port` -> the node's 6006 here."""

    def __init__(
        self,
        transport: SSHTransport,
        remote_port: int,
        local_port: int = 0,
        *,
        remote_host: str = "localhost",
        on_note: Callable[[str], None] | None = None,
    ) -> None:
        self.transport = transport
        self.remote = (remote_host, remote_port)
        self.on_note = on_note or (lambda _message: None)
        try:
            self._listener = socket.create_server(("127.0.0.1", local_port))
        except OSError as exc:
            raise GpuJobsError(
                f"cannot listen on 127.0.0.1:{local_port} ({exc.strerror or exc}): "
                f"give another local port, e.g. {remote_port}:{_free_port()}"
            ) from None
        self.local_port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()  # one SSH transport, one opener at a time
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, name=f"forward-{remote_port}", daemon=True
        )
        self.channels = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    def __enter__(self) -> PortForward:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(timeout=5)
        with self._lock:
            self.transport.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                readable, _, _ = select.select([self._listener], [], [], 0.5)
            except (OSError, ValueError):
                return  # closed
            if not readable:
                continue
            try:
                client, peer = self._listener.accept()
            except OSError:
                continue
            threading.Thread(
                target=self._handle, args=(client, peer), name="forward-conn", daemon=True
            ).start()

    def _handle(self, client: socket.socket, peer: tuple[str, int]) -> None:
        with client:
            channel = self._open(peer)
            if channel is None:
                return
            with channel:
                _pump(client, channel, self._stop)

    def _open(self, peer: tuple[str, int]) -> paramiko.Channel | None:
        refused: list[str] = []

        def attempt() -> paramiko.Channel | None:
            # The transport's private connection is this forward's own (it was made for it).
            link = self.transport._connected().get_transport()
            assert link is not None
            try:
                return link.open_channel("direct-tcpip", self.remote, peer, timeout=15)
            except paramiko.ChannelException as exc:
                # The link is fine; nothing listens on the node's port (yet).
                refused.append(exc.text or str(exc))
                return None

        with self._lock:
            try:
                channel = self.transport._retrying(attempt)
            except TransportError as exc:
                self.on_note(f"port {self.remote[1]}: {exc}")
                return None
        if channel is None:
            self.on_note(
                f"port {self.remote[1]}: nothing answers on the node ({refused[-1]}); is the "
                "server started?"
            )
            return None
        self.channels += 1
        return channel


def _pump(client: socket.socket, channel: paramiko.Channel, stop: threading.Event) -> None:
    """Copy both ways until either side closes."""
    while not stop.is_set():
        try:
            readable, _, _ = select.select([client, channel], [], [], 1.0)
        except (OSError, ValueError):
            return
        try:
            if client in readable:
                data = client.recv(_CHUNK)
                if not data:
                    return
                channel.sendall(data)
            if channel in readable:
                data = channel.recv(_CHUNK)
                if not data:
                    return
                client.sendall(data)
        except (OSError, EOFError, paramiko.SSHException):
            return
        if channel.closed or (channel.eof_received and not channel.recv_ready()):
            return


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
