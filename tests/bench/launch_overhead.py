"""Launch overhead on a ready ssh host: `command: echo hi` through gpujobs.api.launch on the
loopback sshd (gpujobs.testing.ssh.LoopbackSshd), launch -> first log line and launch ->
SUCCEEDED, beside a plain `ssh host echo hi` measured in the same run, with the time spent in
each lifecycle state (PLANNING = the host probe, PROVISIONING, SETTING_UP, SYNCING, RUNNING,
COLLECTING = the last pull, TEARING_DOWN). Target (issue 25): overhead <= 1.0 s.

    python tests/bench/launch_overhead.py [--runs 5]

The first launch on a host makes the venv and sends the code; the later ones find them there
(a ready host), and those are the figures reported. Each measured launch starts as a new
`gpujobs launch` process would: no parked connection (remote/ssh_pool.py) and no cached probe
from the launch before it. A last row times the whole CLI (`gpujobs launch spec.yaml`, Python's
start-up and imports included). Compare, don't trust absolute numbers: the machine is shared.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_OVERHEAD_S = 1.0


class Timeline:
    """An EventSink that stamps every state and the first log line."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.states: list[tuple[str, float]] = []
        self.first_log: float | None = None

    def state(self, job_id: str, state: object, message: str) -> None:
        self.states.append((getattr(state, "value", str(state)), time.monotonic() - self.start))

    def log(self, data: bytes) -> None:
        if self.first_log is None and b"hi" in data:
            self.first_log = time.monotonic() - self.start

    def note(self, message: str) -> None:
        return None

    def progress(self, label: str, done: int, total: int) -> None:
        return None

    def breakdown(self, end: float) -> dict[str, float]:
        spans: dict[str, float] = {}
        marks = [*self.states, ("end", end)]
        for (name, at), (_, following) in itertools.pairwise(marks):
            spans[name] = spans.get(name, 0.0) + following - at
        return spans


def plain_ssh(sshd: object, known_hosts: Path) -> float:
    started = time.monotonic()
    subprocess.run(
        [
            "ssh",
            "-i",
            str(sshd.client_key),  # type: ignore[attr-defined]
            "-p",
            str(sshd.port),  # type: ignore[attr-defined]
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "BatchMode=yes",
            f"{sshd.user}@{sshd.host}",  # type: ignore[attr-defined]
            "echo hi",
        ],
        check=True,
        capture_output=True,
    )
    return time.monotonic() - started


def forget_this_process() -> None:
    """What a new process would not have: parked SSH links and cached host probes."""
    from gpujobs.providers import ssh as ssh_provider
    from gpujobs.remote import ssh_pool

    ssh_pool.close_all()
    ssh_provider._probed.clear()


def cli_launch(spec_file: Path) -> float:
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "gpujobs", "launch", str(spec_file)],
        check=True,
        capture_output=True,
    )
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="gpujobs-bench-launch-"))
    os.environ["GPUJOBS_HOME"] = str(folder / "home")
    os.environ["GPUJOBS_SSH_CONFIG"] = str(folder / "no-ssh-config")
    os.chdir(folder)

    from gpujobs import api
    from gpujobs.testing.ssh import LoopbackSshd

    with LoopbackSshd(folder / "sshd") as sshd:
        spec = {
            "name": "echo-hi",
            "command": "echo hi",
            "providers": ["ssh"],
            "ssh": {
                "hosts": [sshd.target],
                "identity_file": str(sshd.client_key),
                "workdir": str(folder / "lab-root"),
            },
        }
        plain_ssh(sshd, folder / "plain_known_hosts")  # first contact, key recorded
        api.launch(spec, on_event=Timeline())  # the host gets its venv: now it is ready
        plains, firsts, totals, spans = [], [], [], []
        spec_file = folder / "echo-hi.yaml"
        spec_file.write_text(json.dumps(spec))  # YAML is a superset of JSON
        clis, cli_plains = [], []
        for _ in range(options.runs):
            plains.append(plain_ssh(sshd, folder / "plain_known_hosts"))
            forget_this_process()
            timeline = Timeline()
            job = api.launch(spec, on_event=timeline)
            total = time.monotonic() - timeline.start
            assert job.status().state.value == "SUCCEEDED", job.status()
            totals.append(total)
            firsts.append(timeline.first_log or total)
            spans.append(timeline.breakdown(total))
            cli_plains.append(plain_ssh(sshd, folder / "plain_known_hosts"))
            clis.append(cli_launch(spec_file))

    plain = statistics.median(plains)
    first, total = statistics.median(firsts), statistics.median(totals)
    print(f"runs: {options.runs} (medians), host ready (venv made by a first launch)")
    print(f"plain `ssh host echo hi`         {plain:6.3f} s")
    print(f"gpujobs launch -> first log line {first:6.3f} s   overhead {first - plain:+.3f} s")
    print(f"gpujobs launch -> SUCCEEDED      {total:6.3f} s   overhead {total - plain:+.3f} s")
    cli, cli_plain = statistics.median(clis), statistics.median(cli_plains)
    print(
        f"`gpujobs launch spec.yaml` (CLI)  {cli:6.3f} s   overhead {cli - cli_plain:+.3f} s "
        f"(plain ssh {cli_plain:.3f} s; Python start-up and imports included)"
    )
    print("where the time goes (median per state):")
    for name in spans[0]:
        values = [span.get(name, 0.0) for span in spans]
        print(f"  {name:<14} {statistics.median(values):6.3f} s")
    verdict = "meets" if total - plain <= TARGET_OVERHEAD_S else "misses"
    print(f"target: overhead <= {TARGET_OVERHEAD_S:.1f} s: {verdict}")


if __name__ == "__main__":
    main()
