"""Dataset upload over the loopback sshd (gpujobs.testing.ssh.LoopbackSshd): 10,000 files of
random bytes totalling 1 GiB, a first copy and a re-sync after 1% of the files change, through
gpujobs' three paths (push_dir method="rsync"; method="files", the SFTP one; and method="files"
on a second sshd without the SFTP subsystem) beside plain `rsync -a` over the same sshd, measured
in the same run (these machines are noisy: compare, don't trust absolute numbers). A first copy
into an empty folder goes as one tar stream over the open link on every path (SyncReport.method
says "stream"); the re-sync goes by rsync, or as a stream of the changed files. Targets (issue
25): first copy >= 1x plain rsync's speed on the rsync path, >= 0.8x on the other two; re-sync
<= 1.1x plain rsync's time on each path.

    python tests/bench/sync.py [--files 10000] [--total-mb 1024] [--repeats 1] [--dir /var/tmp]
    python tests/bench/sync.py --files 1000 --total-mb 100 --repeats 3   # a quick run

Every side reads its source from a warm page cache (the dataset was just written; dropping the
cache needs root), and writes land in the page cache too; `sync` runs, untimed, before each
measurement so that one run's writeback does not slow the next. The order of the three paths
rotates with each repeat; figures are medians. gpujobs' transport is connected before its clock
starts, as the driver's is when it syncs (its login time is printed apart); plain rsync's ssh
login is inside its time, as is gpujobs' own rsync's. Everything (dataset, copies, sshd) lives in
one temporary folder on a real disk, removed at the end.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from gpujobs.remote.ssh import HostKeyPins, SshSettings, SshTarget, SSHTransport
from gpujobs.remote.sync import SyncMethod, SyncReport, push_dir
from gpujobs.testing.ssh import LoopbackSshd

RESYNC_TIME = 1.1  # at most, as a multiple of plain rsync's time
CHANGED_FRACTION = 0.01
FILES_PER_FOLDER = 100
BASELINE = "rsync -a (baseline)"
NO_SFTP = "gpujobs tar/exec (no SFTP)"  # a second sshd without `Subsystem sftp`
OURS: dict[str, SyncMethod] = {
    "gpujobs rsync": "rsync",
    "gpujobs files (SFTP)": "files",
    NO_SFTP: "files",
}
# First copy: at least this fraction of plain rsync's speed.
FIRST_COPY_SPEED = {"gpujobs rsync": 1.0, "gpujobs files (SFTP)": 0.8, NO_SFTP: 0.8}


@dataclass
class Figures:
    first_s: list[float] = field(default_factory=list)
    resync_s: list[float] = field(default_factory=list)
    reports: list[tuple[SyncReport, SyncReport]] = field(default_factory=list)


def default_parent() -> str:
    """/var/tmp (on disk by convention) where it exists, else the temp folder."""
    return "/var/tmp" if os.path.isdir("/var/tmp") else tempfile.gettempdir()


def filesystem_type(path: Path) -> str:
    """The type of the mount holding `path` (from /proc/mounts; '?' where unreadable)."""
    best, kind = "", "?"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    resolved = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1]
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def make_dataset(root: Path, files: int, total_bytes: int, rng: random.Random) -> list[Path]:
    """`files` files of random bytes (incompressible), sizes spread log-normally, summing to
    `total_bytes`, FILES_PER_FOLDER to a folder."""
    weights = [rng.lognormvariate(0, 1.2) for _ in range(files)]
    scale = total_bytes / sum(weights)
    sizes = [max(1, int(weight * scale)) for weight in weights]
    largest = max(range(files), key=sizes.__getitem__)
    sizes[largest] = max(1, sizes[largest] + total_bytes - sum(sizes))
    paths = []
    for index, size in enumerate(sizes):
        path = root / f"{index // FILES_PER_FOLDER:03d}" / f"{index:05d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        paths.append(path)
    return paths


def change_some(paths: list[Path], rng: random.Random) -> list[Path]:
    """Rewrite CHANGED_FRACTION of the files (half at the same size, half resized) and move
    their mtimes on by whole seconds, as an edited dataset would look."""
    chosen = rng.sample(paths, max(1, round(len(paths) * CHANGED_FRACTION)))
    for number, path in enumerate(chosen):
        before = path.stat()
        size = (
            before.st_size
            if number % 2 == 0
            else max(1, int(before.st_size * rng.uniform(0.5, 1.5)))
        )
        path.write_bytes(os.urandom(size))
        mtime = int(before.st_mtime) + 10
        os.utime(path, (mtime, mtime))
    return chosen


def tree_size(root: Path) -> tuple[int, int]:
    """(files, bytes) below a folder."""
    count = total = 0
    for folder, _dirs, names in os.walk(root):
        for name in names:
            count += 1
            total += (Path(folder) / name).stat().st_size
    return count, total


def plain_rsync(sshd: LoopbackSshd, source: Path, dest: Path) -> float:
    """`rsync -a` over OpenSSH's client with the throwaway key, default cipher, no ssh config."""
    rsh = shlex.join(
        [
            "ssh", "-F", "/dev/null", "-i", str(sshd.client_key), "-p", str(sshd.port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
        ]
    )  # fmt: skip
    command = ["rsync", "-a", "-e", rsh, f"{source}/", f"{sshd.user}@{sshd.host}:{dest}/"]
    os.sync()
    started = time.perf_counter()
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - started


def ours(
    transport: SSHTransport, source: Path, dest: Path, method: SyncMethod
) -> tuple[float, SyncReport]:
    os.sync()
    started = time.perf_counter()
    report = push_dir(transport, source, str(dest), method=method)
    return time.perf_counter() - started, report


def connect(sshd: LoopbackSshd, folder: Path) -> tuple[SSHTransport, float, float]:
    """A transport to the sshd, logged in (the driver's is, by the time it syncs), with its
    login time and the median time of a no-op command (each starts the user's shell there)."""
    target = SshTarget(sshd.host, sshd.port, sshd.user, str(sshd.client_key))
    pins = HostKeyPins(folder / "known_hosts", user_file=folder / "no-user-known-hosts")
    transport = SSHTransport(target, pins, SshSettings(reconnect_window_s=30))
    started = time.perf_counter()
    transport.run(["true"])
    login_s = time.perf_counter() - started
    noop = []
    for _ in range(3):
        started = time.perf_counter()
        transport.run(["true"])
        noop.append(time.perf_counter() - started)
    return transport, login_s, statistics.median(noop)


def cipher(transport: SSHTransport) -> str:
    link = transport._client.get_transport() if transport._client else None
    return link.local_cipher if link else "?"


def check_copy(source: Path, dest: Path, changed: list[Path], expected: tuple[int, int]) -> str:
    """'' when the copy has the source's file count and bytes and the changed files' content."""
    found = tree_size(dest)
    if found != expected:
        return (
            f"{dest.name}: {found[0]} files, {found[1]} bytes; source {expected[0]}, {expected[1]}"
        )
    for path in changed:
        copy = dest / path.relative_to(source)
        if not filecmp.cmp(path, copy, shallow=False):
            return f"{dest.name}: {copy.relative_to(dest)} does not hold the changed content"
    return ""


def run(options: argparse.Namespace, work: Path) -> bool:
    rng = random.Random(options.seed)
    source = work / "source"
    started = time.perf_counter()
    paths = make_dataset(source, options.files, options.total_mb << 20, rng)
    expected = tree_size(source)
    print(
        f"dataset: {expected[0]} files, {expected[1] / 2**20:.0f} MiB of random bytes in "
        f"{work} ({filesystem_type(work)}), written in {time.perf_counter() - started:.1f}s"
    )
    figures = {label: Figures() for label in (BASELINE, *OURS)}
    failures: list[str] = []
    with (
        LoopbackSshd(work / "sshd") as sshd,
        LoopbackSshd(work / "sshd-no-sftp", sftp=False) as no_sftp,
    ):
        transports: dict[str, SSHTransport] = {}
        for label in OURS:
            server = no_sftp if label == NO_SFTP else sshd
            transports[label], login_s, noop_s = connect(server, work)
            print(
                f"{label}: paramiko login {login_s * 1000:.0f} ms (untimed below), "
                f"a no-op command {noop_s * 1000:.0f} ms, cipher {cipher(transports[label])}"
            )
        print("plain rsync: OpenSSH's default cipher (and its own login, timed)")
        try:
            for repeat in range(options.repeats):
                labels = list(figures)
                order = labels[repeat % 3 :] + labels[: repeat % 3]
                dests = {
                    label: work / f"copy-{repeat}-{number}" for number, label in enumerate(labels)
                }
                first: dict[str, SyncReport] = {}
                for label in order:
                    if label == BASELINE:
                        figures[label].first_s.append(plain_rsync(sshd, source, dests[label]))
                    else:
                        seconds, first[label] = ours(
                            transports[label], source, dests[label], OURS[label]
                        )
                        figures[label].first_s.append(seconds)
                changed = change_some(paths, rng)
                expected = tree_size(source)
                for label in order:
                    if label == BASELINE:
                        figures[label].resync_s.append(plain_rsync(sshd, source, dests[label]))
                    else:
                        seconds, again = ours(transports[label], source, dests[label], OURS[label])
                        figures[label].resync_s.append(seconds)
                        figures[label].reports.append((first[label], again))
                for label in labels:
                    problem = check_copy(source, dests[label], changed, expected)
                    if problem:
                        failures.append(f"{label}, repeat {repeat + 1}: {problem}")
                    shutil.rmtree(dests[label])
        finally:
            for transport in transports.values():
                transport.close()
    report(figures, expected[1], options.repeats)
    for failure in failures:
        print(f"COPY WRONG: {failure}")
    return not failures


def report(figures: dict[str, Figures], total_bytes: int, repeats: int) -> None:
    base_first = statistics.median(figures[BASELINE].first_s)
    base_resync = statistics.median(figures[BASELINE].resync_s)
    print(f"\nmedians of {repeats} run(s); every side reads from a warm page cache")
    print(
        f"{'path':<28}{'first':>9}{'MB/s':>8}{'speed/rsync':>13}{'re-sync':>10}"
        f"{'time/rsync':>12}  {'target':<20}met?"
    )
    for label, measured in figures.items():
        first = statistics.median(measured.first_s)
        resync = statistics.median(measured.resync_s)
        speed, slower = base_first / first, resync / base_resync
        if label == BASELINE:
            target, verdict = "-", ""
        else:
            target = f">={FIRST_COPY_SPEED[label]:.2f}x, <={RESYNC_TIME:.2f}x"
            missed = [
                *([f"first copy {speed:.2f}x"] if speed < FIRST_COPY_SPEED[label] else []),
                *([f"re-sync {slower:.2f}x"] if slower > RESYNC_TIME else []),
            ]
            verdict = f"MISSED ({', '.join(missed)})" if missed else "ok"
        print(
            f"{label:<28}{first:>8.2f}s{total_bytes / first / 1e6:>8.1f}{speed:>12.2f}x"
            f"{resync:>9.3f}s{slower:>11.2f}x  {target:<20}{verdict}"
        )
    print("\nSyncReport (last run): files_total bytes_total files_sent bytes_sent method")
    for label in OURS:
        for step, sent in zip(("first", "re-sync"), figures[label].reports[-1], strict=True):
            print(
                f"  {label:<28}{step:<9}{sent.files_total:>7}{sent.bytes_total:>12}"
                f"{sent.files_sent:>7}{sent.bytes_sent:>12}  {sent.method}"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--total-mb", type=int, default=1024, help="dataset size in MiB")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dir", default=default_parent(), help="parent of the work folder")
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    for tool in ("rsync", "ssh"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed")
    with tempfile.TemporaryDirectory(prefix="gpujobs-bench-sync-", dir=options.dir) as folder:
        work = Path(folder)
        if filesystem_type(work) in ("tmpfs", "ramfs"):
            print(f"warning: {work} is in memory ({filesystem_type(work)}), not on a disk")
        ok = run(options, work)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
