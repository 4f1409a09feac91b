"""The machinery behind tests/test_fault_matrix.py: one "world" per provider (its mocked cloud, the
node played by the loopback sshd, a Controller wired to both), a workload whose log and
checkpoints can be checked line by line, fault injectors that act at a chosen lifecycle step,
and the checks every scenario ends with (what leaked, what was lost).

The node's part is played for real, as in test_aws_end_to_end.py: the startup script the cloud
would run (AWS user data, GCP's startup-script metadata, Paperspace's startup script) runs once
on this machine with stubs for what only a VM has (shutdown, docker, usermod, systemctl,
getent), and the node's SSH endpoint is the loopback sshd (or a CuttingProxy in front of it).
A node the cloud no longer has is a VM that is gone: its processes are ended by the harness
(`reap`), as the cloud would; a process still running where the cloud still has the node, or
on the local provider, is a leak.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpujobs.api.controller import Controller
from gpujobs.clock import SystemClock
from gpujobs.lifecycle.machine import CancelToken, LifecycleConfig
from gpujobs.paths import HomeLayout
from gpujobs.providers.base import TAG_KEY, Node, Provider
from gpujobs.providers.catalog import Catalog, parse_catalog
from gpujobs.providers.cloud import CloudNodeSettings
from gpujobs.remote.connect import connect_node
from gpujobs.remote.transport import Transport
from gpujobs.spec import JobSpec, parse_spec
from gpujobs.state import JobRecord, JobState, Store
from gpujobs.testing import FakeClock, FaultyTransport
from gpujobs.testing.ssh import CuttingProxy, LoopbackSshd
from tests.conftest import write_stubs
from tests.test_gcp_provider import CATALOG as GCP_CATALOG

CALLER = "198.51.100.23"
FAST = LifecycleConfig(
    poll_interval_s=0.05,
    stop_grace_s=10,
    liveness_every_s=0.5,
    bootstrap_poll_s=0.1,
    loss_check_every_s=0.5,
)
AWS_REGIONS = ["us-east-1", "us-west-2"]
GCP_PROJECT = "test-project"
GCP_REGIONS = ["us-central1", "europe-west4"]
PAPERSPACE_REGIONS = ["ny2", "ams1"]
STUBS = {
    # What only a real VM has: each stub records how it was called.
    "shutdown": 'echo "shutdown $*" >> "$STUB_LOG"',
    "systemd-run": 'echo "systemd-run $*" >> "$STUB_LOG"',
    "systemctl": 'echo "systemctl $*" >> "$STUB_LOG"',
    "docker": 'echo "docker $*" >> "$STUB_LOG"',
    "usermod": 'echo "usermod $*" >> "$STUB_LOG"',
    # The login user, with a home of the node's own (the bootstrap installs keys there).
    "getent": 'echo "$2:x:0:0::$NODE_HOME:/bin/sh"',
}


class SkippingClock(SystemClock):
    """Real time, except that a wait of `threshold_s` or more (a retry's backoff) passes at
    once: the lifecycle's short polls really wait, its teardown retries do not."""

    def __init__(self, threshold_s: float = 0.25) -> None:
        self.threshold_s = threshold_s
        self.skipped = 0.0

    def now(self) -> float:
        return time.time() + self.skipped

    def monotonic(self) -> float:
        return time.monotonic() + self.skipped

    def sleep(self, seconds: float) -> None:
        if seconds >= self.threshold_s:
            self.skipped += seconds
        elif seconds > 0:
            time.sleep(seconds)


# -- the workload ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    """A shell loop that prints `line 0` .. `line N-1`, writes checkpoint `ckpt-000i.txt` (its
    first line is i, then `ckpt_bytes` of noise) after each, and prints `done`. On TERM it saves
    `on-term.txt` holding the last line's number and prints `got TERM after line K`."""

    lines: int = 6
    pause_s: float = 0.03
    ckpt_bytes: int = 0
    show_data: bool = False  # first print `data <md5 of the dataset's files>`
    resumes: bool = False  # start after the newest checkpoint in $GPUJOBS_CKPT_DIR
    # Put a child in the background that outlives the workload (`sleep 300 &`): teardown must
    # stop it, the launch script's pid having exited by then.
    leaves_child: bool = False
    # Leave a FIFO among the checkpoints (a pull must skip and report it, not hang or fail).
    hostile: bool = False

    def command(self) -> str:
        noise = f"; head -c {self.ckpt_bytes} /dev/urandom" if self.ckpt_bytes else ""
        data = (
            'echo "data $(cat "$GPUJOBS_DATA_DIR"/*.bin | md5sum | cut -c1-32)"\n'
            if self.show_data
            else ""
        )
        child = "sleep 300 > /dev/null 2>&1 &\n" if self.leaves_child else ""
        hostile = 'mkfifo "$C/a-fifo"\n' if self.hostile else ""
        return (
            f"{child}"
            'C="$GPUJOBS_CKPT_DIR"; last=-1\n'
            'trap \'echo "$last" > "$C/on-term.txt"; echo "got TERM after line $last"; '
            "exit 0' TERM\n"
            f"{data}"
            f"{_RESUME if self.resumes else 'i=0'}; while [ $i -lt {self.lines} ]; do\n"
            '  echo "line $i"; last=$i\n'
            f'  {{ echo $i{noise}; }} > "$C/ckpt.tmp" && '
            'mv "$C/ckpt.tmp" "$C/$(printf ckpt-%04d.txt $i)" || '
            '{ echo "cannot save checkpoint $i" >&2; exit 1; }\n'
            f"  i=$((i+1)); sleep {self.pause_s} & wait $!\n"
            "done\n"
            f"{hostile}"
            "echo done\n"
        )


# The newest checkpoint's number + 1 (its first line holds the number), or 0.
_RESUME = (
    'newest=$(ls "$C" 2>/dev/null | grep "^ckpt-[0-9]*\\.txt$" | sort | tail -n 1); i=0; '
    'if [ -n "$newest" ]; then i=$(( $(head -n 1 "$C/$newest") + 1 )); fi; '
    'echo "resumed at line $i"'
)


def log_lines(path: Path) -> list[str] | None:
    return path.read_text(errors="replace").splitlines() if path.exists() else None


def numbered(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if re.fullmatch(r"line \d+", line)]


def checkpoint_number(path: Path) -> int | None:
    if not path.exists():
        return None
    first = path.read_bytes().split(b"\n", 1)[0]
    return int(first) if first.strip().lstrip(b"-").isdigit() else None


def lost_items(
    mode: str, home: HomeLayout, record: JobRecord, workload: Workload, data_md5: str = ""
) -> list[str]:
    """What did not come home whole. Modes:
    - complete: every line exactly once, `done`, and the last checkpoint home;
    - cancelled: lines 0..K each once, `got TERM after line J` once, and on-term.txt (= J) home;
    - prefix: what came home has no line twice and none skipped (a job that failed mid-run);
    - none: the workload never started, nothing to lose."""
    if mode == "none":
        return []
    runs = Path(record.runs_dir)
    lost: list[str] = []
    sources = {"local log": home.log_file(record.id), "runs/<job>/job.log": runs / "job.log"}
    for label, path in sources.items():
        lines = log_lines(path)
        if lines is None:
            if mode != "prefix" or label == "local log":
                lost.append(f"{label} missing")
            continue
        got = numbered(lines)
        if mode == "resumed":
            # A lost node redoes what it did after its last checkpoint home: lines since then
            # may come twice, none may be skipped, and the run ends complete.
            got = sorted(set(got))
            mode_here = "complete"
        else:
            mode_here = mode
        if len(set(got)) != len(got):
            twice = sorted({n for n in got if got.count(n) > 1})
            lost.append(f"{label}: line(s) {twice[:5]} twice")
        if got != list(range(len(got))):
            lost.append(f"{label}: lines out of order or skipped")
        if mode_here == "complete":
            if got != list(range(workload.lines)):
                missing = sorted(set(range(workload.lines)) - set(got))
                lost.append(f"{label}: {len(missing)} line(s) missing")
            if "done" not in lines:
                lost.append(f"{label}: no `done`")
        if data_md5 and f"data {data_md5}" not in lines:
            lost.append(f"{label}: the dataset on the node differs")
        if mode == "cancelled":
            said = [line for line in lines if line.startswith(_TERM_SAID)]
            if len(said) != 1:
                lost.append(f"{label}: `got TERM` {len(said)} times")
    if mode in ("complete", "resumed"):
        last = workload.lines - 1
        if checkpoint_number(runs / f"ckpt-{last:04d}.txt") != last:
            lost.append(f"checkpoint ckpt-{last:04d}.txt not home")
    elif mode == "cancelled":
        # What the workload saved on TERM is what it said it saved, and that is home.
        said = [ln for ln in log_lines(home.log_file(record.id)) or [] if ln.startswith(_TERM_SAID)]
        saved = checkpoint_number(runs / "on-term.txt")
        if saved is None:
            lost.append("on-term.txt (the checkpoint saved on TERM) not home")
        elif said and said[0] != f"{_TERM_SAID}{saved}":
            lost.append(f"on-term.txt says {saved}, the workload said {said[0]!r}")
    return lost


_TERM_SAID = "got TERM after line "


# -- the event sink --------------------------------------------------------------------------------
class Watcher:
    """An EventSink that keeps what it is told, lets threads wait for a state, and runs hooks
    on each log chunk (in the driver's thread)."""

    def __init__(self) -> None:
        self.states: list[JobState] = []
        self.logs = bytearray()
        self.notes: list[str] = []
        self.on_log: list[Callable[[bytes], None]] = []
        self.on_state: list[Callable[[JobState], None]] = []  # run in the driver's thread
        self._entered: dict[JobState, threading.Event] = {s: threading.Event() for s in JobState}
        self._changed = threading.Condition()

    @property
    def current(self) -> JobState | None:
        return self.states[-1] if self.states else None

    def state(self, job_id: str, state: JobState, message: str) -> None:
        with self._changed:
            self.states.append(state)
            self._entered[state].set()
            self._changed.notify_all()
        for hook in list(self.on_state):
            hook(state)

    def log(self, data: bytes) -> None:
        with self._changed:
            self.logs += data
            self._changed.notify_all()
        for hook in list(self.on_log):
            hook(bytes(self.logs))

    def note(self, message: str) -> None:
        self.notes.append(message)

    def progress(self, label: str, done: int, total: int) -> None:
        return None

    def wait_state(self, state: JobState, timeout: float = 60) -> bool:
        return self._entered[state].wait(timeout)


# -- nodes played by the loopback sshd -------------------------------------------------------------
class NodeHost:
    """Plays the cloud's machines: runs each node's startup script once (with stubs), admits
    the key the cloud would install, and connects to the loopback sshd (`port`: the sshd's,
    or a CuttingProxy's) instead of the node's cloud address."""

    def __init__(
        self,
        sshd: LoopbackSshd,
        home: HomeLayout,
        root: Path,
        *,
        script_of: Callable[[Node], str],
        key_of: Callable[[Node], str],
        rewrites: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.sshd, self.home, self.root = sshd, home, root
        self.script_of, self.key_of, self.rewrites = script_of, key_of, rewrites
        self.port = sshd.port
        self.booted: set[str] = set()
        self.transports: list[Transport] = []
        self.wrap: Callable[[Transport], Transport] | None = None
        self.node_home = root.parent / "node-home"
        self.stubs = root.parent / "stubs"
        self.stub_log = root.parent / "stub.log"
        for folder in (self.node_home, root.parent / "etc-ssh"):
            folder.mkdir(parents=True, exist_ok=True)
        write_stubs(self.stubs, STUBS)

    def connect(self, node: Node) -> Transport:
        if node.node_id not in self.booted:
            self.booted.add(node.node_id)
            self._boot(node)
        keys = self.sshd.folder / "authorized_keys"
        for key in self.key_of(node).splitlines():
            if key.strip() and key.strip() not in keys.read_text():
                with keys.open("a") as handle:
                    handle.write(key.strip() + "\n")
        here = node.model_copy(
            update={"host": self.sshd.host, "port": self.port, "user": self.sshd.user}
        )
        transport = connect_node(here, self.home, reconnect_window_s=30)
        if self.wrap is not None:
            transport = self.wrap(transport)
        self.transports.append(transport)
        return transport

    def wipe(self, node: Node) -> None:
        """The machine is gone: its processes die at once, its disk with them."""
        workdir = Path(node.workdir)
        for pid in job_processes(node.job_id):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(workdir)], check=True)

    def close_all(self) -> None:
        """What the OS does to a killed driver's connections."""
        for transport in self.transports:
            with contextlib.suppress(Exception):
                transport.close()

    def _boot(self, node: Node) -> None:
        script = self.script_of(node)
        for old, new in self.rewrites:
            script = script.replace(old, new)
        env = {
            "PATH": f"{self.stubs}:/usr/bin:/bin:/usr/sbin:/sbin",
            "STUB_LOG": str(self.stub_log),
            "NODE_HOME": str(self.node_home),
        }
        subprocess.run(["bash", "-c", script], env=env, check=True, timeout=60)


def job_processes(job_id: str) -> list[int]:
    """Processes of the job on this machine: its workload (by its environment) and its launch
    script (by its path)."""
    mark_env = f"GPUJOBS_JOB_ID={job_id}\0".encode()
    mark_path = f"/work/{job_id}/".encode()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if mark_env in environ or mark_path in cmdline:
            found.append(int(entry.name))
    return found


def wait_gone(job_id: str, timeout: float = 3.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := job_processes(job_id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def reap(job_id: str) -> None:
    for pid in job_processes(job_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# -- fault injection at a lifecycle step -----------------------------------------------------------
class StepFaultTransport(FaultyTransport):
    """A Transport that raises `error` once: at the first call of `method` while the job is in
    `state` (as the watcher last heard). No rsync: syncs go file by file through `put`."""

    def __init__(
        self,
        inner: Transport,
        watcher: Watcher,
        state: JobState,
        method: str,
        error: BaseException,
        fired: list[str],
    ) -> None:
        super().__init__(inner)
        self.watcher, self.state_, self.method = watcher, state, method
        self.error, self.fired = error, fired

    def _maybe_fail(self, method: str) -> None:
        if method == self.method and self.watcher.current is self.state_ and not self.fired:
            self.fired.append(f"{method} in {self.state_.value}")
            raise self.error


class ArmedProvider:
    """A provider whose `method` first runs `arm()` (which injects a fault into the mocked
    cloud), so that an API fault lands in that step and no earlier one."""

    def __init__(self, inner: Provider, method: str, arm: Callable[[], None]) -> None:
        self._inner, self._method, self._arm = inner, method, arm
        self.name = inner.name

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name == self._method:

            def armed(*args: Any, **kwargs: Any) -> Any:
                self._arm()
                return value(*args, **kwargs)

            return armed
        return value

    def for_spec(self, spec: JobSpec) -> Provider:
        inner = self._inner.for_spec(spec)  # type: ignore[attr-defined]
        return ArmedProvider(inner, self._method, self._arm)  # type: ignore[return-value]


class Cutter:
    """Drops every SSH connection through `proxy` `times` times, `every_s` apart, while the job
    is in `state`; slows the link to `rate` bytes/s meanwhile, so the cuts land mid-transfer.
    `landed` counts the cuts that dropped at least one connection."""

    def __init__(
        self,
        proxy: CuttingProxy,
        watcher: Watcher,
        state: JobState,
        *,
        times: int,
        every_s: float,
        rate: float | None = None,
    ) -> None:
        self.proxy, self.watcher, self.state = proxy, watcher, state
        self.times, self.every_s, self.rate = times, every_s, rate
        self.landed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cutter", daemon=True)

    def __enter__(self) -> Cutter:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.proxy.rate_bytes_per_s = None

    def _run(self) -> None:
        while not self.watcher.wait_state(self.state, timeout=0.05):
            if self._stop.is_set():
                return
        if self.rate:
            self.proxy.rate_bytes_per_s = self.rate
        while self.landed < self.times and not self._stop.is_set():
            if self._stop.wait(self.every_s) or self.watcher.current is not self.state:
                break
            if self.proxy.cut():
                self.landed += 1
        self.proxy.rate_bytes_per_s = None


# -- worlds: one mocked cloud each -----------------------------------------------------------------
def paperspace_catalog() -> Catalog:
    return parse_catalog(
        {
            "provider": "paperspace",
            "as_of": "2026-01-01",
            "source": "test",
            "instance_types": [
                {
                    "name": "A4000",
                    "gpu": "A4000",
                    "gpus": 1,
                    "cpus": 8,
                    "memory_gb": 45,
                    "prices": {"ny2": [0.76, None], "ams1": [0.8, None]},
                }
            ],
        }
    )


@dataclass
class World:
    """One scenario's surroundings: the provider under test on its mocked cloud, the node
    host, the controller, and what the scenario's injectors and checks need."""

    provider: str
    home: HomeLayout
    store: Store
    tmp_path: Path
    sshd: LoopbackSshd
    watcher: Watcher = field(default_factory=Watcher)
    cancel: CancelToken = field(default_factory=CancelToken)
    nodes: NodeHost | None = None
    controller: Controller | None = None
    cloud: Provider | None = None
    aws: Any = None  # AwsFakes
    aws_session: Any = None  # the one boto3 session, with the fakes' hooks
    gcp: Any = None  # FakeComputeApi
    ps: Any = None  # FakePaperspace
    wrap_provider: Callable[[Provider], Provider] | None = None
    regions: list[str] = field(default_factory=list)
    gpu: str = ""
    dataset_md5: str = ""
    fired: list[str] = field(default_factory=list)  # injected transport faults that fired
    cuts: int = 0  # SSH cuts that landed in the scenario's step
    notes: list[str] = field(default_factory=list)  # what the scenario adds to its row
    stack: contextlib.ExitStack | None = None  # closes what injectors start (an sshd)
    ssh_host: LoopbackSshd | None = None  # the ssh provider's host (default: `sshd`)

    # -- the spec -----------------------------------------------------------------------------
    def spec_text(self, workload: Workload, *, dataset: bool = False, extra: str = "") -> str:
        lines = ["name: fm", f"providers: [{self.provider}]"]
        if self.provider not in ("local", "ssh"):
            lines += [
                f"regions: [{', '.join(self.regions)}]",
                f"resources: {{gpu: {self.gpu}}}",
                "runtime: host",
                "budget: {max_hours: 1}",
            ]
        if self.provider == "ssh":
            host = self.ssh_host or self.sshd
            lines += [
                "ssh:",
                f'  hosts: ["{host.target}"]',
                f"  identity_file: {host.client_key}",
                f"  workdir: {self.ssh_root}",
            ]
        if dataset:
            lines.append("dataset: {source: ./dataset}")
        lines.append(f"command: {json.dumps(workload.command())}")
        return "\n".join(lines) + "\n" + extra

    def spec_text_only(self, workload: Workload, *, extra: str = "") -> Path:
        """spec.yaml written, not parsed (the CLI is to read it)."""
        path = self.tmp_path / "spec.yaml"
        path.write_text(self.spec_text(workload, extra=extra))
        return path

    def spec(self, workload: Workload, *, dataset: bool = False, extra: str = "") -> JobSpec:
        text = self.spec_text(workload, dataset=dataset, extra=extra)
        (self.tmp_path / "spec.yaml").write_text(text)
        return parse_spec(text, label="spec.yaml", base_dir=self.tmp_path)

    def make_dataset(self, files: int = 6, size: int = 400_000) -> None:
        folder = self.tmp_path / "dataset"
        folder.mkdir(exist_ok=True)
        digest = hashlib.md5()
        for index in range(files):
            data = os.urandom(size)
            (folder / f"part-{index}.bin").write_bytes(data)
            digest.update(data)
        self.dataset_md5 = digest.hexdigest()

    # -- the controller -----------------------------------------------------------------------
    def build(self) -> None:
        """(Re)build the controller: after an injector wrapped the provider."""
        assert self.cloud is not None
        provider = self.wrap_provider(self.cloud) if self.wrap_provider else self.cloud
        self.controller = Controller(
            self.home,
            self.store,
            lambda: {self.provider: provider},
            config=FAST,
            clock=SkippingClock(),
            connect=self.nodes.connect if self.nodes is not None else None,
        )

    def launch(self, spec: JobSpec) -> JobRecord:
        assert self.controller is not None
        record, lock = self.controller.submit(spec, self.tmp_path / "spec.yaml", self.runs)
        return self.controller.drive(record.id, spec, lock, self.cancel, self.watcher)

    @property
    def runs(self) -> Path:
        return self.tmp_path / "runs"

    @property
    def ssh_root(self) -> Path:
        """The ssh provider's `workdir` on its host (this machine)."""
        return self.tmp_path / "lab host"

    # -- what is left -------------------------------------------------------------------------
    def clear_faults(self) -> None:
        if self.aws is not None:
            self.aws.faults.clear()
        if self.gcp is not None:
            self.gcp.clear_faults()
        if self.ps is not None:
            self.ps.faults.clear()

    def cloud_leftovers(self) -> list[str]:
        if self.aws is not None:
            from gpujobs.testing.aws import tagged_leftovers

            return tagged_leftovers(self.aws_session, AWS_REGIONS, TAG_KEY)
        if self.gcp is not None:
            return [f"instance {name} in {zone}" for zone, name in self.gcp.instances] + [
                f"firewall rule {name}" for name in self.gcp.firewalls
            ]
        if self.ps is not None:
            return [f"machine {m['name']} ({m['id']})" for m in self.ps.live_machines()] + [
                f"startup script {s['name']}" for s in self.ps.scripts.values()
            ]
        return []

    def leftovers(self, job_id: str) -> list[str]:
        """Every tagged resource left on the mocked cloud, the job's key, its work folder on
        the local provider, and its processes: on the local provider any is a leak; on a
        cloud, those of a node the cloud has deleted end with its VM (the harness ends them,
        as the cloud would), and those of a node it still has are a leak."""
        left = self.cloud_leftovers()
        if self.home.job_key_dir(job_id).exists():
            left.append(f"job key {self.home.job_key_dir(job_id).name}")
        if self.provider == "local" and (self.home.work / job_id).exists():
            left.append(f"work folder {job_id}")
        if self.provider == "ssh" and (self.ssh_root / "work" / job_id).exists():
            left.append(f"work folder {job_id} on the host")
        if self.provider in ("local", "ssh"):  # this machine is the host: nothing may run on
            alive = wait_gone(job_id)
        else:  # the node is a VM: what runs there ends with it, unless the cloud still has it
            node_left = any(item.startswith(("instance ", "machine ")) for item in left)
            alive = job_processes(job_id) if node_left else []
        if alive:
            left.append(f"{len(alive)} process(es) of the job alive")
        reap(job_id)
        return left


def make_world(
    provider: str,
    *,
    sshd: LoopbackSshd,
    home: HomeLayout,
    store: Store,
    tmp_path: Path,
    stack: contextlib.ExitStack,
) -> World:
    world = World(provider, home, store, tmp_path, sshd, stack=stack)
    root = tmp_path / "node" / "opt gpujobs"
    settings = CloudNodeSettings(ssh_user=sshd.user, root=str(root))
    if provider == "aws":
        from moto import mock_aws

        from gpujobs.providers.aws import AwsProvider
        from gpujobs.testing.aws import AwsFakes

        stack.enter_context(mock_aws())
        # On-demand and spot G/VT vCPUs.
        codes = ("L-DB2E81BA", "L-3819A6DF")
        fakes = AwsFakes(applied_quotas={(r, c): 64 for r in AWS_REGIONS for c in codes})
        session = fakes.session()  # one: each new session parses EC2's API model again
        world.aws, world.aws_session = fakes, session
        world.regions, world.gpu = AWS_REGIONS, "T4"
        world.cloud = AwsProvider(
            session_factory=lambda: session,
            caller_address=lambda: CALLER,
            clock=FakeClock(),
            settings=settings,
        )

        def aws_script(node: Node) -> str:
            ec2 = session.client("ec2", region_name=node.region)
            answer = ec2.describe_instance_attribute(InstanceId=node.node_id, Attribute="userData")
            return base64.b64decode(answer["UserData"]["Value"]).decode()

        world.nodes = NodeHost(
            sshd,
            home,
            root,
            script_of=aws_script,
            key_of=lambda node: (home.job_key_dir(node.job_id) / "id_ed25519.pub").read_text(),
        )
    elif provider == "gcp":
        from unittest import mock

        from gpujobs.providers.gcp import GcpProvider
        from gpujobs.testing.gcp import FakeComputeApi

        # Credentials `check()` finds (HOME is the test's own), and no other ADC than these.
        adc = Path.home() / ".config" / "gcloud" / "application_default_credentials.json"
        adc.parent.mkdir(parents=True, exist_ok=True)
        adc.write_text(json.dumps({"type": "authorized_user", "refresh_token": "fake"}))
        stack.enter_context(
            mock.patch.dict(os.environ, {"GOOGLE_APPLICATION_CREDENTIALS": str(adc)})
        )
        api = FakeComputeApi(project=GCP_PROJECT)
        for region in GCP_REGIONS:
            api.set_quota(region, "NVIDIA_T4_GPUS", 4, 0)
            api.set_quota(region, "CPUS", 24, 0)
        api.set_global_quota("GPUS_ALL_REGIONS", 8, 0)
        world.gcp, world.regions, world.gpu = api, GCP_REGIONS, "T4"
        world.cloud = GcpProvider(
            project=GCP_PROJECT,
            catalog=GCP_CATALOG,
            client_factory=api.client_factory,
            caller_address=lambda: CALLER,
            clock=FakeClock(),
            settings=settings,
            call_timeout_s=7.0,
        )

        def gcp_metadata(node: Node) -> dict[str, str]:
            zone, _, name = node.node_id.partition("/")
            items = api.instances[(zone, name)]["metadata"]["items"]
            return {item["key"]: item["value"] for item in items}

        world.nodes = NodeHost(
            sshd,
            home,
            root,
            script_of=lambda node: gcp_metadata(node)["startup-script"],
            # What GCP's guest agent installs: the ssh-keys metadata, `user:key`.
            key_of=lambda node: gcp_metadata(node)["ssh-keys"].split(":", 1)[1],
        )
    elif provider == "paperspace":
        from gpujobs.providers.paperspace import PaperspaceProvider
        from gpujobs.testing.paperspace import FakePaperspace

        fake = FakePaperspace()
        world.ps, world.regions, world.gpu = fake, PAPERSPACE_REGIONS, "A4000"
        world.cloud = PaperspaceProvider(
            api_key=fake.api_key,
            catalog=paperspace_catalog(),
            transport=fake.transport(),
            caller_address=lambda: CALLER,
            clock=FakeClock(),
            settings=settings,
        )

        def ps_script(node: Node) -> str:
            script_id = fake.machines[node.node_id]["_request"]["startupScriptId"]
            return str(fake.scripts[script_id]["script"])

        node_keys = root.parent / "node-home" / ".ssh" / "authorized_keys"
        world.nodes = NodeHost(
            sshd,
            home,
            root,
            script_of=ps_script,
            # The startup script installs the job's key for the login user: admit that one.
            key_of=lambda node: node_keys.read_text() if node_keys.exists() else "",
            rewrites=[("/etc/ssh/sshd_config.d/", f"{root.parent}/etc-ssh/")],
        )
    elif provider == "local":
        from gpujobs.providers.local import LocalProvider

        world.cloud = LocalProvider(home.work)
    elif provider == "ssh":
        from gpujobs.providers.ssh import SshProvider
        from gpujobs.remote.ssh import HostKeyPins

        world.cloud = SshProvider(None, HostKeyPins(home.known_hosts))
    else:
        raise ValueError(provider)
    if world.nodes is not None:
        stack.callback(world.nodes.close_all)
    if world.cloud is not None:
        world.build()
    return world


# -- real CLI processes (the local provider) -------------------------------------------------------
def gpujobs_popen(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gpujobs", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
        **kwargs,
    )


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie child of ours counts as gone.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    return True


def format_table(rows: list[tuple[str, str, str, str]]) -> list[str]:
    header = ("scenario", "outcome", "leaked", "lost")
    width = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(4)] if rows else []
    width = [min(w, 72) for w in width]

    def cells(row: tuple[str, ...]) -> str:
        return "  ".join(
            (value if len(value) <= width[i] else value[: width[i] - 1] + "…").ljust(width[i])
            for i, value in enumerate(row)
        ).rstrip()

    return [cells(header), cells(tuple("-" * w for w in width)), *(cells(row) for row in rows)]
