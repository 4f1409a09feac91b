"""Working on a live job's node: a shell or one command there (`gpujobs ssh`), Host entries
for the system ssh and VS Code (`gpujobs ssh-config`), and ports forwarded to localhost
(`gpujobs forward`, and the spec's `ports:` during a launch).

Everything reaches the node the way the driver does: the job's own key and the host key
pinned at first contact, never the user's unverified known_hosts or a key on a command line.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gpujobs.errors import BadInputError, GpuJobsError
from gpujobs.lifecycle.events import PassingSink
from gpujobs.spec import REDACTED
from gpujobs.state import JobRecord, JobState

if TYPE_CHECKING:
    from gpujobs.api.controller import Controller
    from gpujobs.lifecycle.events import CancelToken, EventSink
    from gpujobs.models import Node
    from gpujobs.remote.forward import PortForward
    from gpujobs.remote.ssh import SshTarget
    from gpujobs.spec import JobSpec

# A shell that exists in every image and on every host, and bash when there is one.
_INTERACTIVE = "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"


@dataclass(frozen=True)
class NodeAccess:
    """How to reach one live node of a job, and where its work happens there."""

    job_id: str
    node: Node
    alias: str  # gpujobs-<job>[-K]: the Host name in the ssh config
    target: SshTarget | None  # None: the node is this machine (local provider)
    run_dir: str  # the job's working folder on the node
    container: str | None  # the docker runtime's container, where the job's command runs
    container_workdir: str | None


@dataclass(frozen=True)
class ShellCommand:
    argv: list[str]
    cwd: str | None  # local nodes: run there


def live_nodes(controller: Controller, record: JobRecord) -> list[Node]:
    from gpujobs.models import Node

    rows = [row for row in controller.store.nodes(record.id) if row.terminated_at is None]
    nodes = [Node.model_validate_json(row.node_json) for row in rows]
    return sorted(nodes, key=lambda node: node.rank)


def node_access(controller: Controller, job_ref: str, rank: int = 0) -> NodeAccess:
    record = controller.find(job_ref)
    if record.state.is_terminal:
        raise BadInputError(
            f"{record.id} is {record.state.value}: its nodes are gone; "
            f"`gpujobs status {record.id}` shows what it left in {record.runs_dir}"
        )
    nodes = live_nodes(controller, record)
    if not nodes:
        raise BadInputError(
            f"{record.id} has no node yet ({record.state.value}); try again once it is "
            f"RUNNING (`gpujobs status {record.id}`)"
        )
    chosen = [node for node in nodes if node.rank == rank]
    if not chosen:
        ranks = ", ".join(str(node.rank) for node in nodes)
        raise BadInputError(f"{record.id} has no node {rank}: --node takes one of {ranks}")
    return _access(controller, record, chosen[0])


def _access(controller: Controller, record: JobRecord, node: Node) -> NodeAccess:
    from gpujobs.runtime.docker import CONTAINER_WORKDIR
    from gpujobs.runtime.node_layout import NodeLayout

    spec = _stored_spec(record)
    has_code = spec is not None and spec.workdir is not None
    alias = f"gpujobs-{record.id}" + (f"-{node.rank}" if node.rank else "")
    container = workdir = None
    # As lifecycle.node_setup.runtime_for decides: the spec's runtime, else the provider's.
    runtime = node.runtime if spec is None or spec.runtime == "auto" else spec.runtime
    if runtime == "docker":
        container = f"gpujobs-{record.id}"
        workdir = CONTAINER_WORKDIR if has_code else None
    return NodeAccess(
        job_id=record.id,
        node=node,
        alias=alias,
        target=_target(controller, node),
        run_dir=NodeLayout(node.workdir).run_dir(has_code),
        container=container,
        container_workdir=workdir,
    )


def _target(controller: Controller, node: Node) -> SshTarget | None:
    if node.transport == "local":
        return None
    from gpujobs.remote.ssh import SshTarget

    identity = node.identity_file
    if identity is None and node.uses_job_key:
        identity = str(controller.home.job_key_dir(node.job_id) / "id_ed25519")
    return SshTarget(node.host, node.port, node.user or "", identity)


def _stored_spec(record: JobRecord) -> JobSpec | None:
    from pydantic import ValidationError

    from gpujobs.spec import JobSpec

    try:
        return JobSpec.model_validate_json(record.spec_json)
    except ValidationError:
        return None


def node_script(access: NodeAccess, command: list[str], *, tty: bool = False) -> str:
    """The sh script that runs `command` (or an interactive shell) in the job's folder, inside
    its container on the docker runtime. One word is a shell line, as ssh takes it (`"ls *.pt
    | wc -l"`); several are a command and its arguments, each quoted."""
    if not command:
        line = _INTERACTIVE
    elif len(command) == 1:
        line = command[0]
    else:
        line = shlex.join(command)
    if access.container is None:
        return f"cd {shlex.quote(access.run_dir)} && exec sh -c {shlex.quote(line)}"
    options = ["-i"]
    if tty:
        options.append("-t")
    if access.container_workdir:
        options += ["-w", access.container_workdir]
    return shlex.join(["exec", "docker", "exec", *options, access.container, "sh", "-c", line])


def shell_command(
    controller: Controller, access: NodeAccess, command: list[str], *, tty: bool
) -> ShellCommand:
    """What `gpujobs ssh` runs: the system ssh with a generated 0600 config for remote nodes,
    sh in the job's folder for local ones."""
    script = node_script(access, command, tty=tty)
    if access.target is None:
        cwd = access.run_dir if access.container is None else None
        return ShellCommand(["sh", "-c", script], cwd)
    config = write_job_config(controller, [access])
    if shutil.which("ssh") is None:
        raise GpuJobsError("`ssh` is not installed: install OpenSSH's client (openssh-client)")
    mode = "-t" if tty else "-T"  # a terminal on the node only when there is one here
    # The user's login shell on the node may be csh or fish: hand the script to sh.
    remote = f"sh -c {shlex.quote(script)}"
    return ShellCommand(["ssh", "-F", str(config), mode, access.alias, remote], None)


def write_job_config(controller: Controller, accesses: list[NodeAccess]) -> Path:
    """One job's Host entries in gpujobs' home (0600); refused when a host key is not pinned
    (strict checking would only fail later, with a less clear message)."""
    from gpujobs.remote.openssh import (
        every_host_pinned,
        host_entry,
        host_key_pinned,
        write_private,
    )

    known_hosts = controller.home.known_hosts
    blocks = []
    for access in accesses:
        assert access.target is not None
        if not host_key_pinned(known_hosts, access.target):
            raise GpuJobsError(
                f"{access.job_id}: no pinned host key for {access.target.known_hosts_name} in "
                f"{known_hosts}; the driver records it when it first connects, so wait until "
                f"the job is RUNNING"
            )
        blocks.append(host_entry(access.alias, access.target, known_hosts))
    path = controller.home.root / "ssh" / f"{accesses[0].alias}.conf"
    return write_private(path, "\n".join([*blocks, every_host_pinned(known_hosts)]))


def remote_nodes(controller: Controller) -> list[NodeAccess]:
    """Every live job's nodes that are reached over SSH, newest job first."""
    found = []
    for record in controller.store.active_jobs():
        for node in live_nodes(controller, record):
            access = _access(controller, record, node)
            if access.target is not None:
                found.append(access)
    return found


def ssh_config_text(controller: Controller, accesses: list[NodeAccess]) -> str:
    """Host entries (gpujobs-<job>[-K]) for ~/.ssh/config or VS Code Remote-SSH; the shell
    opens on the host, in the user's home."""
    from gpujobs.remote.openssh import host_entry

    blocks = []
    for access in accesses:
        assert access.target is not None
        comment = f"# {access.job_id} node {access.node.rank}: the job's folder is {access.run_dir}"
        if access.container:
            comment += f", its container {access.container}"
        entry = host_entry(access.alias, access.target, controller.home.known_hosts)
        blocks.append(f"{comment}\n{entry}")
    return "\n".join(blocks)


def access_json(controller: Controller, access: NodeAccess) -> dict[str, object]:
    target = access.target
    assert target is not None
    return {
        "job": access.job_id,
        "node": access.node.rank,
        "host_alias": access.alias,
        "hostname": target.host,
        "port": target.port,
        "user": target.user,
        "identity_file": target.identity_file,
        "known_hosts": str(controller.home.known_hosts),
        "folder": access.run_dir,
        "container": access.container,
    }


@dataclass
class LocalPort:
    """A port of a node that is this machine: nothing to forward."""

    local_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.local_port}"

    def close(self) -> None:
        return None


def parse_port_pair(text: str) -> tuple[int, int | None]:
    """`6006` -> (6006, None); `6006:16006` -> (6006, 16006): the node's port, then ours."""
    remote, _, local = text.partition(":")
    try:
        pair = int(remote), (int(local) if local else None)
    except ValueError:
        raise BadInputError(f"{text!r}: give PORT or PORT:LOCAL_PORT, e.g. 6006:16006") from None
    for port in pair:
        if port is not None and not 1 <= port <= 65535:
            raise BadInputError(f"{text!r}: {port} is not a TCP port (1 to 65535)")
    return pair


def open_forward(
    controller: Controller,
    access: NodeAccess,
    remote_port: int,
    local_port: int | None = None,
    *,
    on_note: Callable[[str], None] | None = None,
    reconnect_window_s: float = 600.0,
) -> PortForward | LocalPort:
    """Forward the node's `remote_port` to 127.0.0.1:`local_port` (the same number when free,
    else any) until closed."""
    if access.target is None:
        return LocalPort(remote_port)
    from gpujobs.remote.connect import connect_node
    from gpujobs.remote.forward import PortForward
    from gpujobs.remote.ssh import SSHTransport

    transport = connect_node(access.node, controller.home, reconnect_window_s=reconnect_window_s)
    assert isinstance(transport, SSHTransport)
    wanted = local_port if local_port is not None else remote_port
    try:
        forward = PortForward(transport, remote_port, wanted, on_note=on_note)
    except GpuJobsError:
        if local_port is not None:
            raise
        forward = PortForward(transport, remote_port, 0, on_note=on_note)  # ours was taken
    forward.start()
    return forward


class ForwardingSink(PassingSink):
    """Passes everything to `inner`; while the job runs, forwards the spec's `ports` of node 0
    to localhost and says where (`port 6006: http://127.0.0.1:6006`)."""

    def __init__(self, inner: EventSink, controller: Controller, spec: JobSpec) -> None:
        super().__init__(inner)
        self.controller = controller
        self.ports = list(spec.ports)
        self.forwards: list[PortForward | LocalPort] = []

    def state(self, job_id: str, state: JobState, message: str) -> None:
        self.inner.state(job_id, state, message)
        if state is JobState.RUNNING:
            self.close()  # after a recovery: the new node's ports
            self._open(job_id)
        elif state in (JobState.RECOVERING, JobState.TEARING_DOWN) or state.is_terminal:
            self.close()

    def _open(self, job_id: str) -> None:
        if not self.ports:
            return
        try:
            access = node_access(self.controller, job_id, 0)
            for port in self.ports:
                forward = open_forward(self.controller, access, port, on_note=self.inner.note)
                self.forwards.append(forward)
                self.inner.note(f"port {port}: {forward.url}")
        except GpuJobsError as exc:
            self.inner.note(f"ports not forwarded: {exc}")

    def close(self) -> None:
        forwards, self.forwards = self.forwards, []
        for forward in forwards:
            forward.close()


def live_sink(
    controller: Controller,
    job_id: str,
    spec: JobSpec,
    sink: EventSink | None,
    cancel: CancelToken | None = None,
) -> EventSink:
    """The driver's sink, with the spec's ports forwarded, its notifications sent and, for an
    interactive session, JupyterLab forwarded and watched for idleness."""
    from gpujobs.lifecycle.events import NullSink
    from gpujobs.lifecycle.notify import Notifier, NotifyingSink, user_default_targets

    wrapped: EventSink = sink or NullSink()
    if spec.ports:
        wrapped = ForwardingSink(wrapped, controller, spec)
    targets = spec.notify
    if targets is None:
        try:
            targets = user_default_targets(controller.home.config_file)
        except GpuJobsError as exc:
            wrapped.note(f"notifications off: {exc}")
            targets = []
    # A stored (adopted) spec keeps only where its webhooks went, not their secret paths.
    targets = [target for target in targets if not target.endswith(f"/{REDACTED}")]
    if targets:
        notifier = Notifier.for_targets(targets, on_failure=wrapped.note)
        wrapped = NotifyingSink(wrapped, notifier, job_id, spec.name)
    if spec.dev is not None and cancel is not None:
        from gpujobs.api.dev import DevSink

        # Outermost: its idle-stop note passes through the notifying sink.
        wrapped = DevSink(wrapped, controller, spec, cancel)
    return wrapped
