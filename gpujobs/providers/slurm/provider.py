"""The slurm provider: a university cluster reached through its login node over SSH, with no
root and no containers.

A "node" is the job's folder on the cluster's shared filesystem (`slurm.workdir`/work/<job>),
reached through the login node: the lifecycle sets it up there as on any ssh host (code, venv
in `slurm.workdir`/venvs, setup, dataset) and writes the launch script; this provider then
submits it with `sbatch` (SupportsBatchJobs), so the scheduler runs it on a compute node. The
launch script writes the workload's pid, log and exit code into the same folder, where the
lifecycle reads them through the login node as it does everywhere. Offers come from `sinfo`,
states from `squeue`; stop is `scancel --signal=TERM --full`, then `scancel`.
"""

from __future__ import annotations

import os
import posixpath

from gpujobs.clock import Clock, SystemClock
from gpujobs.errors import TransportError
from gpujobs.providers.base import (
    Availability,
    BatchState,
    Credentials,
    NoCapacityError,
    Node,
    NotTerminatedError,
    Offer,
    Provider,
    ProvisioningError,
    Quota,
    TaggedResource,
)
from gpujobs.providers.local import node_id
from gpujobs.providers.slurm import cluster
from gpujobs.providers.slurm.models import (
    Partition,
)
from gpujobs.providers.slurm.sbatch import (
    JOB_NAME_PREFIX,
    go_file,
    hosts_file,
    job_name,
    render_group_script,
    render_script,
    sbatch_argv,
    slurm_job_file,
    time_limit_s,
)
from gpujobs.providers.ssh import host_node
from gpujobs.remote.ssh import HostKeyPins, SshSettings, SshTarget, SSHTransport
from gpujobs.remote.transport import Transport
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.spec import JobSpec, Resources, parse_ssh_host
from gpujobs.spec_slurm import SlurmSettings

REGION = "slurm"


class SlurmProvider:
    name = "slurm"

    def __init__(
        self,
        settings: SlurmSettings | None,
        pins: HostKeyPins,
        *,
        spec: JobSpec | None = None,
        ssh: SshSettings | None = None,
        stop_grace_s: int = 60,
        clock: Clock | None = None,
        allocation_timeout_s: float = 3600.0,
        poll_s: float = 2.0,
    ) -> None:
        self.clock = clock or SystemClock()
        self.allocation_timeout_s = allocation_timeout_s  # a multi-node job's wait in the queue
        self.poll_s = poll_s
        self.settings = settings
        self.spec = spec
        self.pins = pins
        self.ssh = ssh or SshSettings(connect_timeout_s=10.0, reconnect_window_s=60.0)
        self.stop_grace_s = stop_grace_s
        self._root: str | None = None  # slurm.workdir, resolved on the cluster

    def for_spec(self, spec: JobSpec) -> Provider:
        return SlurmProvider(
            spec.slurm or self.settings,
            self.pins,
            spec=spec,
            ssh=self.ssh,
            stop_grace_s=self.stop_grace_s,
            clock=self.clock,
            allocation_timeout_s=self.allocation_timeout_s,
            poll_s=self.poll_s,
        )

    # -- planning -------------------------------------------------------------------------------
    def check(self) -> Credentials:
        if self.settings is None:
            return Credentials(
                provider=self.name,
                ok=False,
                missing="add `slurm: {login: user@login-node}` to the spec",
            )
        key = self.settings.identity_file or "your ssh agent and ~/.ssh keys"
        return Credentials(provider=self.name, ok=True, found=f"login {self.settings.login}, {key}")

    def offers(self, resources: Resources) -> list[Offer]:
        if self.settings is None:
            return []
        try:
            with self._login() as transport:
                partitions = self.partitions(transport)
        except TransportError as exc:
            return [self._unavailable(self.settings.partition or "cluster", str(exc))]
        wanted = self.settings.partition
        chosen = [p for p in partitions if wanted is None or p.name == wanted]
        if not chosen:
            names = ", ".join(sorted({p.name for p in partitions})) or "none"
            return [self._unavailable(wanted or "cluster", f"no such partition (sinfo: {names})")]
        return [self._offer(partition) for partition in chosen]

    def partitions(self, transport: Transport) -> list[Partition]:
        return cluster.partitions(transport)

    def quota(self, offer: Offer) -> Quota:
        return Quota(
            provider=self.name,
            region=REGION,
            code="none",
            name="the cluster's own limits (account, QOS), enforced by its scheduler",
            unit="node",
        )

    # -- a job's nodes ----------------------------------------------------------------------------
    def provision(
        self, job_id: str, offer: Offer, ssh_public_key: str | None, nodes: int, *, restart: int = 0
    ) -> list[Node]:
        """One job folder per node on the shared filesystem. A one-node job is submitted when
        it starts (setting up holds no allocation); a multi-node job is allocated now, as the
        rendezvous needs its head's address before the workload starts."""
        try:
            with self._login() as transport:
                root = self._resolve_root(transport)
                made = [
                    self._node(job_id, root, offer=offer, rank=rank).model_copy(
                        update={"node_id": node_id(job_id, restart, rank)}
                    )
                    for rank in range(nodes)
                ]
                # Made now, so that from here on the job's folders exist (owned() finds them).
                folders = [node.workdir for node in made]
                transport.run(["sh", "-c", 'umask 077; mkdir -p "$@"', "sh", *folders])
                if nodes > 1:
                    self._allocate(transport, made[0], nodes)
        except TransportError as exc:
            raise ProvisioningError(f"{self._label()}: {exc}") from exc
        return made

    def wait_ready(self, nodes: list[Node]) -> list[Node]:
        """A multi-node job's nodes once the scheduler has allocated them, each with the
        address the others reach it at; a one-node job's folder is ready at once."""
        if len(nodes) < 2:
            return nodes
        head = NodeLayout(nodes[0].workdir)
        deadline = self.clock.monotonic() + self.allocation_timeout_s
        with self._login(nodes[0]) as transport:
            while True:
                listed = transport.read(hosts_file(head), 0).decode().splitlines()
                addresses = [line.split()[-1] for line in listed if line.strip()]
                if len(addresses) >= len(nodes):
                    return [
                        node.model_copy(update={"private_host": addresses[node.rank]})
                        for node in nodes
                    ]
                batch_id = transport.read(slurm_job_file(head), 0).decode().strip()
                if batch_id.isdigit():
                    state = self.batch_state(transport, int(batch_id))
                    if not state.live:
                        raise ProvisioningError(f"{state.describe(int(batch_id))} unallocated")
                if self.clock.monotonic() >= deadline:
                    raise NoCapacityError(
                        f"the cluster did not allocate {len(nodes)} nodes within "
                        f"{self.allocation_timeout_s:g} s"
                    )
                self.clock.sleep(self.poll_s)

    def terminate(self, nodes: list[Node]) -> None:
        for node in nodes:
            argv = ["sh", "-c", cluster.STOP_AND_REMOVE, "sh", job_name(node.job_id), node.workdir,
                    str(self.stop_grace_s)]  # fmt: skip
            try:
                with self._login(node) as transport:
                    result = transport.run(argv, timeout=self.stop_grace_s + 180, check=False)
            except TransportError as exc:
                raise NotTerminatedError(
                    f"{self._label(node)}: could not cancel job {node.job_id} ({exc}); run "
                    f"`gpujobs down {node.job_id}` again"
                ) from exc
            if not result.ok:
                raise NotTerminatedError(
                    f"{self._label(node)}: cancelling job {node.job_id} failed: {result.tail(3)}"
                )

    def owned(self) -> list[Node]:
        """Job folders under slurm.workdir (for `down` and gc); none without a spec."""
        if self.settings is None:
            return []
        try:
            with self._login() as transport:
                root = self._resolve_root(transport)
                listing = transport.run(["sh", "-c", cluster.LIST_FOLDERS, "sh", root], check=False)
        except TransportError:
            return []
        found = []
        for folder in listing.stdout.split():
            job_id, _, rank = folder.rpartition("-node")
            if job_id and rank.isdigit():  # node K > 0's folder, beside node 0's
                found.append(self._node(job_id, root, rank=int(rank)))
            else:
                found.append(self._node(folder, root))
        return found

    # -- SupportsSweep: what `gpujobs gc` lists ---------------------------------------------
    def tagged(self) -> list[TaggedResource]:
        if self.settings is None:
            return []
        with self._login() as transport:
            jobs = cluster.queue(transport, ["--me"])
        return [
            TaggedResource(
                provider=self.name,
                kind="slurm-job",
                resource_id=str(job.job_id),
                region=REGION,
                job_id=job.name.removeprefix(JOB_NAME_PREFIX),
            )
            for job in jobs
            if job.name.startswith(JOB_NAME_PREFIX)
        ] + [
            TaggedResource(
                provider=self.name,
                kind="workdir",
                resource_id=node.workdir,
                region=REGION,
                job_id=node.job_id,
                node_id=node.node_id,
            )
            for node in self.owned()
        ]

    def delete(self, resource: TaggedResource) -> None:
        if resource.kind == "slurm-job":
            argv = ["sh", "-c", cluster.CANCEL_AND_WAIT, "sh", resource.resource_id]
            try:
                with self._login() as transport:
                    result = transport.run(argv, timeout=120, check=False)
            except TransportError as exc:
                raise NotTerminatedError(f"slurm job {resource.resource_id}: {exc}") from exc
            if not result.ok:
                raise NotTerminatedError(
                    f"slurm job {resource.resource_id} was not cancelled: {result.tail(2)}"
                )
            return
        root = posixpath.dirname(posixpath.dirname(resource.resource_id))
        node = self._node(resource.job_id, root)  # any of its nodes' folders: the one listed
        self.terminate([node.model_copy(update={"workdir": resource.resource_id})])

    # -- SupportsBatchJobs: the scheduler runs the workload ---------------------------------
    def submit(self, transport: Transport, node: Node, *, max_seconds: float | None) -> int:
        spec = self.spec
        if spec is None or spec.slurm is None:
            raise ProvisioningError("the slurm provider was not given the job's spec")
        if spec.nodes > 1:
            return self._release(transport, node, spec.nodes)
        layout = NodeLayout(node.workdir)
        script = f"{node.workdir}/job.sbatch"
        cluster.put_text(transport, render_script(node.job_id, layout), script)
        return self._sbatch(transport, layout, script, max_seconds)

    def _sbatch(
        self, transport: Transport, layout: NodeLayout, script: str, max_seconds: float | None
    ) -> int:
        spec = self.spec
        assert spec is not None and spec.slurm is not None
        job_id = posixpath.basename(layout.workdir)  # node 0's folder is named after the job
        # No partition named: sbatch's default, whose limit then bounds --time.
        partition = spec.slurm.partition
        limit_s = next(
            (
                found.time_limit_s
                for found in self.partitions(transport)
                if found.name == partition or (partition is None and found.default)
            ),
            None,
        )
        argv = sbatch_argv(
            job_id,
            spec,
            layout,
            script,
            partition=partition,
            time_s=time_limit_s(max_seconds, limit_s),
        )
        result = transport.run(argv, timeout=120, check=False)
        batch_id = result.stdout.strip().split(";")[0]
        if not result.ok or not batch_id.isdigit():
            raise ProvisioningError(f"sbatch refused the job: {result.tail(3)}")
        return int(batch_id)

    def batch_state(self, transport: Transport, batch_id: int) -> BatchState:
        return cluster.batch_state(transport, batch_id)

    def request_stop(self, transport: Transport, batch_id: int) -> None:
        transport.run(["scancel", "--signal=TERM", "--full", str(batch_id)], check=False)

    # -- helpers -----------------------------------------------------------------------------------
    def _allocate(self, transport: Transport, head: Node, nodes: int) -> int:
        """Submit a multi-node job's batch script, which holds its nodes until released."""
        assert self.spec is not None
        layout = NodeLayout(head.workdir)
        script = f"{head.workdir}/job.sbatch"
        cluster.put_text(transport, render_group_script(head.job_id, layout, nodes), script)
        hours = self.spec.budget.max_hours
        return self._sbatch(transport, layout, script, None if hours is None else hours * 3600)

    def _release(self, transport: Transport, node: Node, nodes: int) -> int:
        """A multi-node job's node is ready to start: once the last one's launch script is
        written, the batch script's srun starts them all. Every node answers the one id."""
        head = NodeLayout(posixpath.join(posixpath.dirname(node.workdir), node.job_id))
        batch_id = transport.read(slurm_job_file(head), 0).decode().strip()
        if not batch_id.isdigit():
            raise ProvisioningError(f"job {node.job_id}: its Slurm allocation is not recorded")
        if node.rank == nodes - 1:
            transport.run(["sh", "-c", ': > "$1"', "sh", go_file(head)])
        return int(batch_id)

    def _offer(self, partition: Partition) -> Offer:
        reason = "" if partition.up else f"partition {partition.name} is down"
        hours = self.spec.budget.max_hours if self.spec else None
        limit = partition.time_limit_s
        if not reason and hours is not None and limit is not None and hours * 3600 > limit:
            reason = (
                f"partition {partition.name} allows a job {limit / 3600:g} h at most, and "
                f"budget.max_hours is {hours:g}"
            )
        return Offer(
            provider=self.name,
            instance_type=partition.name,
            region=REGION,
            gpu=partition.gpu_type.upper() if partition.gpu_type else None,
            gpus=partition.gpus,
            cpus=partition.cpus,
            memory_gb=round(partition.memory_mb / 1024, 1),
            price_per_hour=self.settings.cost_per_hour if self.settings else 0.0,
            availability=Availability.NOT_AVAILABLE if reason else Availability.AVAILABLE,
            unavailable_reason=reason,
            max_nodes=partition.nodes,
        )

    def _unavailable(self, name: str, reason: str) -> Offer:
        return Offer(
            provider=self.name,
            instance_type=name,
            region=REGION,
            cpus=0,
            memory_gb=0,
            availability=Availability.NOT_AVAILABLE,
            unavailable_reason=reason,
        )

    def _node(self, job_id: str, root: str, *, offer: Offer | None = None, rank: int = 0) -> Node:
        """Node K > 0 of a job has a folder of its own beside node 0's (`<job>-nodeK`)."""
        return host_node(
            self.name,
            self._target(),
            job_id,
            root,
            rank=rank,
            instance_type=offer.instance_type if offer else "",
            price=offer.price_per_hour if offer else 0.0,
            region=REGION,
        )

    def _resolve_root(self, transport: Transport) -> str:
        if self._root is None:
            assert self.settings is not None
            argv = ["sh", "-c", cluster.PREPARE, "sh", self.settings.workdir]
            result = transport.run(argv, timeout=60, check=False)
            if not result.ok or not result.stdout.strip():
                raise TransportError(
                    f"cannot prepare {self.settings.workdir} on the login node: {result.tail(2)}"
                )
            self._root = result.stdout.strip().splitlines()[-1]
        return self._root

    def _target(self, node: Node | None = None) -> SshTarget:
        if node is not None:
            return SshTarget(node.host, node.port, node.user or "", node.identity_file)
        assert self.settings is not None
        user, host, port = parse_ssh_host(self.settings.login)
        identity = self.settings.identity_file
        return SshTarget(
            host, port, user or _local_user(), os.path.expanduser(identity) if identity else None
        )

    def _label(self, node: Node | None = None) -> str:
        return self._target(node).label

    def _login(self, node: Node | None = None) -> cluster.Login:
        return cluster.Login(SSHTransport(self._target(node), self.pins, self.ssh))


def _local_user() -> str:
    import getpass

    return getpass.getuser()
