"""A real OpenSSH sshd on 127.0.0.1 with throwaway keys, and a TCP proxy that cuts connections on
demand. Used by gpujobs' tests and benchmarks (SSH is never mocked), and usable by users' tests.

The sshd runs as the current user from a private folder: its own host key, its own
authorized_keys holding one throwaway client key, no passwords, no PAM. Run as root it needs
/run/sshd (privilege separation), which it makes.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import selectors
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

_SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/usr/bin/sshd")
_START_TIMEOUT_S = 10.0


def sshd_binary() -> str | None:
    for candidate in _SSHD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("sshd")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_key(path: Path, comment: str = "gpujobs-test") -> Path:
    """An ed25519 key pair at `path` and `path`.pub, made by ssh-keygen."""
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


class LoopbackSshd:
    """`with LoopbackSshd(folder) as sshd:` -> sshd.port, sshd.user, sshd.client_key."""

    def __init__(self, folder: Path, *, port: int | None = None, sftp: bool = True) -> None:
        binary = sshd_binary()
        if binary is None:
            raise RuntimeError("sshd not found: install openssh-server")
        self.binary = binary
        self.folder = folder
        self.port = port or free_port()
        self.user = getpass.getuser()
        self.host = "127.0.0.1"
        # False: no `Subsystem sftp`, as on hardened hosts; only exec channels work.
        self.sftp = sftp
        self.host_key = folder / "host_ed25519"
        self.client_key = folder / "client_ed25519"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        """user@host:port, as a spec's ssh.hosts entry names it."""
        return f"{self.user}@{self.host}:{self.port}"

    def __enter__(self) -> LoopbackSshd:
        self.folder.mkdir(parents=True, exist_ok=True)
        make_key(self.host_key, "gpujobs-test-host")
        make_key(self.client_key, "gpujobs-test-client")
        (self.folder / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        config = self.folder / "sshd_config"
        config.write_text(
            f"Port {self.port}\n"
            f"ListenAddress {self.host}\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {self.folder / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.folder / 'authorized_keys'}\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            # The throwaway files live in a temp folder whose modes sshd would reject.
            "StrictModes no\n"
            "PermitRootLogin prohibit-password\n"
            # Tests open many connections at once (and reconnect after every cut).
            "MaxStartups 200:30:400\n"
            "MaxSessions 200\n"
            "LogLevel ERROR\n" + ("Subsystem sftp internal-sftp\n" if self.sftp else "")
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self._process = subprocess.Popen(
            [self.binary, "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=(self.folder / "sshd.log").open("ab"),
        )
        self._wait_for_banner()

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    def new_host_key(self) -> None:
        """Restart with a different host key: what a reinstalled (or spoofed) machine looks
        like to a client that pinned the old one."""
        self.stop()
        make_key(self.host_key, "gpujobs-test-host-2")
        self.start()

    def _wait_for_banner(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                log = (self.folder / "sshd.log").read_text(errors="replace")
                raise RuntimeError(f"sshd exited at start: {log.strip()[-500:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=1) as probe,
            ):
                if probe.recv(4).startswith(b"SSH-"):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not answer on port {self.port}")


class CuttingProxy:
    """A TCP forwarder from 127.0.0.1:<port> to a target that can drop every connection at
    once (`cut()`), the way a flaky Wi-Fi or a sleeping laptop drops an SSH session."""

    def __init__(
        self,
        target_port: int,
        *,
        target_host: str = "127.0.0.1",
        rate_bytes_per_s: float | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        # A slow link, so that a transfer is still under way when the next cut comes.
        self.rate_bytes_per_s = rate_bytes_per_s
        self.bytes_forwarded = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._selector = selectors.DefaultSelector()
        self._peers: dict[socket.socket, socket.socket] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="cutting-proxy", daemon=True)
        self.cuts = 0
        self.connections = 0

    def __enter__(self) -> CuttingProxy:
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.cut()
        self._listener.close()

    def cut(self) -> int:
        """Drop every open connection (both directions, as a reset); returns how many."""
        with self._lock:
            sockets = list(self._peers)
            self._peers.clear()
        for sock in sockets:
            with contextlib.suppress(Exception):
                self._selector.unregister(sock)
            with contextlib.suppress(OSError):
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
            with contextlib.suppress(OSError):
                sock.close()
        dropped = len(sockets) // 2
        if dropped:
            self.cuts += 1
        return dropped

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._peers) // 2

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _events in self._selector.select(timeout=0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                else:
                    self._forward(sock)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._peers[client] = upstream
            self._peers[upstream] = client
            self.connections += 1
        self._selector.register(client, selectors.EVENT_READ)
        self._selector.register(upstream, selectors.EVENT_READ)

    def _forward(self, sock: socket.socket) -> None:
        with self._lock:
            peer = self._peers.get(sock)
        if peer is None:
            return
        try:
            data = sock.recv(1 << 16)
            if data:
                peer.setblocking(True)
                peer.sendall(data)
                peer.setblocking(False)
                self.bytes_forwarded += len(data)
                if self.rate_bytes_per_s:
                    time.sleep(len(data) / self.rate_bytes_per_s)
                return
        except OSError:
            pass
        self._close_pair(sock, peer)

    def _close_pair(self, sock: socket.socket, peer: socket.socket) -> None:
        with self._lock:
            self._peers.pop(sock, None)
            self._peers.pop(peer, None)
        for item in (sock, peer):
            with contextlib.suppress(Exception):
                self._selector.unregister(item)
            with contextlib.suppress(OSError):
                item.close()
