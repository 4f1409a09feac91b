"""Dropped connections, for real: a TCP proxy between gpujobs and the loopback sshd cuts every
connection 20 times while a log streams and while a dataset syncs. No line may be lost or shown
twice; the sync must complete and verify."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpujobs.remote.logs import LogFollower
from gpujobs.remote.ssh import HostKeyPins
from gpujobs.remote.sync import push_dir
from gpujobs.testing.ssh import CuttingProxy, LoopbackSshd
from tests.conftest import ssh_transport

CUTS = 20


class Cutter:
    """Cuts the proxy's connections `times` times, each after a connection has been up for a
    random while, so cuts land in handshakes, mid-request and mid-transfer alike."""

    def __init__(self, proxy: CuttingProxy, times: int, up_s: tuple[float, float]) -> None:
        self.proxy = proxy
        self.times = times
        self.up_s = up_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.random = random.Random(7)

    def __enter__(self) -> Cutter:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)

    def _run(self) -> None:
        while self.proxy.cuts < self.times and not self.stop.is_set():
            if self.proxy.open_connections == 0:
                time.sleep(0.01)
                continue
            self.stop.wait(self.random.uniform(*self.up_s))
            self.proxy.cut()


@pytest.fixture
def proxy(sshd: LoopbackSshd) -> Iterator[CuttingProxy]:
    with CuttingProxy(sshd.port) as cutting:
        yield cutting


def test_a_log_streamed_through_20_cuts_loses_and_repeats_nothing(
    sshd: LoopbackSshd, proxy: CuttingProxy, pins: HostKeyPins, tmp_path: Path
) -> None:
    remote_log = tmp_path / "node" / "job.log"
    remote_log.parent.mkdir()
    lines = 3000
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            f"with open(sys.argv[1], 'a') as log:\n"
            f"    for i in range({lines}):\n"
            "        log.write(f'line {i:05d} ' + 'x' * 60 + '\\n'); log.flush()\n"
            "        time.sleep(0.002)\n",
            str(remote_log),
        ]
    )
    transport = ssh_transport(sshd, pins, port=proxy.port)
    local_log = tmp_path / "home" / "job.log"
    follower = LogFollower(transport, str(remote_log), local_log)
    with Cutter(proxy, CUTS, up_s=(0.05, 0.25)):
        while writer.poll() is None or proxy.cuts < CUTS:
            follower.poll()
            time.sleep(0.02)
            if writer.poll() is not None and time.monotonic() > _deadline(writer):
                break
    follower.poll()
    transport.close()
    assert proxy.cuts == CUTS
    assert transport.connections > CUTS // 2, "it really reconnected"
    received = local_log.read_bytes()
    assert received == remote_log.read_bytes()
    numbers = [int(line.split()[1]) for line in received.decode().splitlines()]
    assert numbers == list(range(lines)), "every line once, in order"


_STARTED: dict[int, float] = {}


def _deadline(process: subprocess.Popen[bytes]) -> float:
    return _STARTED.setdefault(process.pid, time.monotonic() + 30)


def _dataset(root: Path) -> int:
    """A dataset with many small files and two large ones (which get cut mid-file)."""
    rng = random.Random(3)
    total = 0
    for index in range(100):
        folder = root / f"class-{index % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(rng.randint(1, 40_000))
        (folder / f"img {index:04d}.bin").write_bytes(data)
        total += len(data)
    for name in ("shard-a.bin", "shard-b.bin"):
        data = os.urandom(5 << 19)
        (root / name).write_bytes(data)
        total += len(data)
    return total


def _digest(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and ".gpujobs-partial" not in path.parts
    }


# A slow link, so that the transfer is still running at the 20th cut. rsync needs ~0.35 s to
# start (ssh handshake, its own); SFTP reconnects in ~0.1 s, so it is cut sooner.
@pytest.mark.parametrize(
    ("method", "rate", "up_s"), [("rsync", 0.8e6, (0.5, 0.8)), ("files", 1.0e6, (0.25, 0.45))]
)
def test_a_sync_cut_20_times_completes_and_verifies(
    sshd: LoopbackSshd,
    pins: HostKeyPins,
    tmp_path: Path,
    method: str,
    rate: float,
    up_s: tuple[float, float],
) -> None:
    source = tmp_path / "dataset"
    size = _dataset(source)
    target = tmp_path / "node" / "data"
    with CuttingProxy(sshd.port, rate_bytes_per_s=rate) as slow:
        transport = ssh_transport(sshd, pins, port=slow.port, window_s=60)
        with Cutter(slow, CUTS, up_s=up_s):
            report = push_dir(transport, source, str(target), method=method)  # type: ignore[arg-type]
            cuts_during_sync = slow.cuts
        transport.close()
    # A first copy into an empty folder starts as one stream; the first cut ends it (sent again
    # it would start over), and the method named goes on from what the node holds.
    assert report.method == f"stream+{method}"
    assert cuts_during_sync == CUTS, f"only {cuts_during_sync} cuts landed during the sync"
    assert (report.files_total, report.bytes_total) == (102, size)
    assert _digest(target) == _digest(source)
    # Resumed, not restarted: what crossed the link is not much more than the dataset itself.
    assert slow.bytes_forwarded < 1.6 * size, slow.bytes_forwarded
