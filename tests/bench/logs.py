"""Latency of a log line from the node to this machine: a writer process appends lines stamped
with their time.time() to a node's job.log; the reader follows it as the driver does (each turn:
NodeSession.follow(), then exit_code(), alive() every liveness_every_s, then a sleep of
LifecycleConfig.poll_interval_s) and takes now - stamp for every complete line it gets. Over
SSH to the loopback sshd (gpujobs.testing.ssh.LoopbackSshd), beside the same loop over
LocalTransport measured in the same run, so the SSH cost shows apart from the poll interval's
(these machines are noisy: compare, don't trust absolute numbers). Target: p95 <= 200 ms over SSH.

    python tests/bench/logs.py [--seconds 30] [--rate 20] [--poll-s 0.25] [--cuts 0]

--cuts N adds a run over SSH through CuttingProxy that drops the connection N times, evenly
spread: latency including reconnects, reported apart (no target). Every run checks that each
line written arrived once: none lost, none twice.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from gpujobs.lifecycle.machine import LifecycleConfig
from gpujobs.lifecycle.node_session import NodeSession
from gpujobs.remote.ssh import HostKeyPins, SshSettings, SshTarget, SSHTransport
from gpujobs.remote.transport import LocalTransport, Transport
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.testing.ssh import CuttingProxy, LoopbackSshd

TARGET_P95_S = 0.2
LINE_BYTES = 100  # about a training log line

# argv: log path, lines per second, seconds, line length. One write per line, O_APPEND, as a
# workload's line-buffered stdout does; prints how many lines it wrote.
WRITER = """
import os, sys, time
path, rate, seconds, width = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
count = int(rate * seconds)
started = time.monotonic()
for seq in range(count):
    delay = started + seq / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    head = f"{seq} {time.time():.6f} step={seq} loss=0.123456 "
    os.write(fd, (head + "x" * max(0, width - len(head) - 1) + "\\n").encode())
os.close(fd)
print(count)
"""


@dataclass
class Run:
    label: str
    latencies_s: list[float] = field(default_factory=list)
    sequence: list[int] = field(default_factory=list)
    turns_s: list[float] = field(default_factory=list)  # follow() + exit_code() of one turn
    written: int = 0
    note: str = ""

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_s)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]

    @property
    def lost(self) -> int:
        return len(set(range(self.written)) - set(self.sequence))

    @property
    def doubled(self) -> int:
        return len(self.sequence) - len(set(self.sequence))


def follow(label: str, transport: Transport, workdir: Path, options: argparse.Namespace) -> Run:
    """Start a writer on the 'node' (workdir) and follow its log with the driver's loop."""
    run = Run(label)
    workdir.mkdir(parents=True)
    layout = NodeLayout(str(workdir))
    argv = [layout.log, str(options.rate), str(options.seconds), str(LINE_BYTES)]
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, *argv], stdout=subprocess.PIPE, text=True
    )
    local_log = workdir.parent / f"{workdir.name}-local.log"
    session = NodeSession(transport, layout, local_log, pid=writer.pid)
    config = LifecycleConfig()
    next_liveness = time.monotonic() + config.liveness_every_s
    pending = b""
    try:
        while True:
            finished = writer.poll() is not None  # before the read: nothing can follow it
            started = time.monotonic()
            chunk = session.follow()
            shown = time.time()
            session.exit_code()
            run.turns_s.append(time.monotonic() - started)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                seq, stamp = line.split(b" ", 2)[:2]
                run.sequence.append(int(seq))
                run.latencies_s.append(shown - float(stamp))
            if finished and not chunk:
                break
            if time.monotonic() >= next_liveness:
                next_liveness = time.monotonic() + config.liveness_every_s
                session.alive()
            time.sleep(options.poll_s)
    finally:
        if writer.poll() is None:
            writer.kill()
        output, _ = writer.communicate()
    run.written = int(output.strip() or 0)
    if pending:
        run.note = f"{len(pending)} bytes of an unfinished last line"
    return run


def ssh_transport(sshd: LoopbackSshd, folder: Path, port: int) -> SSHTransport:
    target = SshTarget(sshd.host, port, sshd.user, str(sshd.client_key))
    pins = HostKeyPins(folder / "known_hosts", user_file=folder / "no-user-known-hosts")
    return SSHTransport(target, pins, SshSettings(reconnect_window_s=30))


@contextmanager
def cutting(proxy: CuttingProxy, cuts: int, seconds: float) -> Iterator[None]:
    """Drop every connection through the proxy `cuts` times, evenly over `seconds`."""
    stop = threading.Event()

    def cutter() -> None:
        for _ in range(cuts):
            if stop.wait(seconds / (cuts + 1)):
                return
            proxy.cut()

    thread = threading.Thread(target=cutter, name="cutter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_all(options: argparse.Namespace, folder: Path) -> list[Run]:
    runs = [follow("local (no SSH)", LocalTransport(), folder / "local", options)]
    with LoopbackSshd(folder / "sshd") as sshd:
        transport = ssh_transport(sshd, folder, sshd.port)
        transport.run(["true"])  # logged in, as the driver is when the workload starts
        try:
            runs.append(follow("ssh", transport, folder / "ssh", options))
        finally:
            transport.close()
        if options.cuts:
            with CuttingProxy(sshd.port) as proxy:
                transport = ssh_transport(sshd, folder, proxy.port)
                transport.run(["true"])
                try:
                    with cutting(proxy, options.cuts, options.seconds):
                        run = follow(
                            f"ssh, {options.cuts} cut(s)", transport, folder / "cut", options
                        )
                finally:
                    transport.close()
                run.note = f"{proxy.cuts} cut(s), {transport.connections - 1} reconnect(s)" + (
                    f"; {run.note}" if run.note else ""
                )
                runs.append(run)
    return runs


def report(runs: list[Run], options: argparse.Namespace) -> bool:
    """Prints the table; False when a line was lost or shown twice."""
    print(
        f"poll interval {options.poll_s:.3f} s ({options.poll_source}); {options.rate:g} lines/s "
        f"for {options.seconds:g} s; a line waits up to one loop turn, so the poll alone puts "
        f"p95 near {0.95 * options.poll_s * 1000:.0f} ms"
    )
    print(
        f"{'run':<18}{'lines':>11}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}{'turn':>8}"
        f"{'lost':>6}{'twice':>6}  {'target':<10}met?"
    )
    intact = True
    for run in runs:
        p95 = run.percentile(0.95)
        if run.label == "ssh":
            target = f"<={TARGET_P95_S * 1000:.0f} ms"
            verdict = "ok" if p95 <= TARGET_P95_S else f"MISSED (p95 {p95 * 1000:.0f} ms)"
        else:
            target, verdict = "-", ""
        print(
            f"{run.label:<18}{f'{len(run.sequence)}/{run.written}':>11}"
            f"{run.percentile(0.5) * 1000:>6.0f}ms{p95 * 1000:>6.0f}ms"
            f"{run.percentile(0.99) * 1000:>6.0f}ms{max(run.latencies_s, default=0) * 1000:>6.0f}ms"
            f"{statistics.median(run.turns_s) * 1000:>6.1f}ms{run.lost:>6}{run.doubled:>6}"
            f"  {target:<10}{verdict}"
        )
        if run.note:
            print(f"  {run.label}: {run.note}")
        intact = intact and not run.lost and not run.doubled and len(run.sequence) == run.written
    print("turn: median time of one follow() + exit_code(), the loop's work before its sleep")
    return intact


def main() -> None:
    driver_poll = LifecycleConfig().poll_interval_s
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0, help="how long each writer writes")
    parser.add_argument("--rate", type=float, default=20.0, help="lines per second")
    parser.add_argument("--poll-s", type=float, default=None, help=f"default {driver_poll}")
    parser.add_argument("--cuts", type=int, default=0, help="a run with N dropped connections")
    options = parser.parse_args()
    options.poll_source = "given" if options.poll_s is not None else "the driver's"
    options.poll_s = driver_poll if options.poll_s is None else options.poll_s
    with tempfile.TemporaryDirectory(prefix="gpujobs-bench-logs-") as folder:
        runs = run_all(options, Path(folder))
    if not report(runs, options):
        print("LINES WRONG: a line was lost, shown twice, or left unfinished")
        sys.exit(1)


if __name__ == "__main__":
    main()
