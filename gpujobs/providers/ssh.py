"""The ssh provider: machines the user can already log in to (lab and university computers),
with no root, no Docker and no account anywhere.

Its offers are what each host has, asked over SSH (GPUs from nvidia-smi when present, else its
CPUs). A "node" is a job folder under the host's `ssh.workdir` (default ~/.gpujobs/work/<job>);
the workload runs in a venv kept in `ssh.workdir`/venvs. Teardown stops the job's processes and
removes its folder: it never touches anything else on the machine, and never the machine itself.
"""

from __future__ import annotations

import posixpath
import time
from concurrent.futures import ThreadPoolExecutor

from gpujobs.errors import TransportError
from gpujobs.providers.base import (
    Availability,
    Credentials,
    Node,
    NotTerminatedError,
    Offer,
    Provider,
    ProvisioningError,
    Quota,
)
from gpujobs.providers.local import node_id
from gpujobs.remote.ssh import HostKeyPins, SshSettings, SshTarget, SSHTransport
from gpujobs.runtime.stop_job import STOP_JOB_SCRIPT
from gpujobs.spec import JobSpec, Resources, SshHosts, parse_ssh_host

REGION = "ssh"
# What a host has: CPUs, memory (kB), free disk under the work root (kB), then one GPU a line.
_PROBE = r"""
root=$1
case $root in "~") root=$HOME ;; "~/"*) root=$HOME/${root#"~/"} ;; esac
umask 077; mkdir -p "$root/work" "$root/venvs" || exit 4
echo "root=$(cd "$root" && pwd -P)"
echo "cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null || echo 1)"
echo "mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null || echo 0)"
echo "disk_kb=$(df -Pk "$root" | awk 'NR == 2 {print $4}')"
if command -v nvidia-smi > /dev/null 2>&1; then
  nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | sed 's/^/gpu=/'
fi
"""
# Refuse a folder that is not a job's, stop every process of the job (runtime/stop_job.sh: TERM,
# the workload checkpoints; KILL after the grace), then remove the folder.
_STOP_AND_REMOVE = (
    r"""
case $1 in
  */work/*) ;;
  *) echo "refusing to remove $1: not a gpujobs job folder" >&2; exit 3 ;;
esac
[ -d "$1" ] || exit 0
"""
    + STOP_JOB_SCRIPT
    + r"""
rm -rf -- "$job_folder"
[ ! -e "$job_folder" ]
"""
)
_LIST_JOBS = 'cd "$1/work" 2>/dev/null && for d in */; do [ -d "$d" ] && echo "${d%/}"; done'


PROBE_CACHE_S = 30.0
# Probe answers per host, kept briefly and shared by every provider object of this process:
# the launch command's preflight, planning, and provisioning the chosen host a moment later
# need not ask again (one command fewer each). Keyed by the pins too: another GPUJOBS_HOME is
# another user of the machine.
_probed: dict[str, tuple[float, dict[str, list[str]]]] = {}


class SshProvider:
    name = "ssh"

    def __init__(
        self,
        hosts: SshHosts | None,
        pins: HostKeyPins,
        *,
        settings: SshSettings | None = None,
        probe_window_s: float = 10.0,
        stop_grace_s: float = 10.0,
    ) -> None:
        self.hosts = hosts
        self.pins = pins
        self.settings = settings or SshSettings()
        # Planning asks every host; one that is down must not hold the launch for minutes.
        self.probe_settings = SshSettings(
            connect_timeout_s=min(self.settings.connect_timeout_s, probe_window_s),
            reconnect_window_s=probe_window_s,
        )
        self.stop_grace_s = stop_grace_s
        self.cost_per_hour = 0.0  # the spec's cost_per_hour: the user's own price for a host

    def for_spec(self, spec: JobSpec) -> Provider:
        configured = SshProvider(
            spec.ssh or self.hosts,
            self.pins,
            settings=self.settings,
            probe_window_s=self.probe_settings.reconnect_window_s,
            stop_grace_s=self.stop_grace_s,
        )
        configured.cost_per_hour = spec.cost_per_hour or 0.0
        return configured

    # -- planning -------------------------------------------------------------------------------
    def check(self) -> Credentials:
        if self.hosts is None:
            return Credentials(
                provider=self.name,
                ok=False,
                missing="add `ssh: {hosts: [user@host:port]}` to the spec",
            )
        key = self.hosts.identity_file or "your ssh agent and ~/.ssh keys"
        return Credentials(
            provider=self.name, ok=True, found=f"{len(self.hosts.hosts)} host(s), {key}"
        )

    def offers(self, resources: Resources) -> list[Offer]:
        if self.hosts is None:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(self.hosts.hosts))) as pool:
            return list(pool.map(self._offer, self.hosts.hosts))

    def quota(self, offer: Offer) -> Quota:
        return Quota(
            provider=self.name, region=REGION, code="none", name="your own machine", unit="node"
        )

    # -- a job's nodes ----------------------------------------------------------------------------
    def provision(
        self, job_id: str, offer: Offer, ssh_public_key: str | None, nodes: int, *, restart: int = 0
    ) -> list[Node]:
        # The user's own login is used, not the job key: gpujobs does not edit authorized_keys
        # on a machine it does not own. Node 0 is the offer's host, the others the spec's next
        # hosts, one node per host.
        hosts = [offer.instance_type] + [
            text
            for text in (self.hosts.hosts if self.hosts else [])
            if self._target(text).label != offer.instance_type
        ]
        if nodes > len(hosts):
            raise ProvisioningError(
                f"the spec asks for {nodes} nodes and lists {len(hosts)} ssh host(s); the ssh "
                "provider runs one node per host: add hosts to `ssh.hosts`"
            )
        made = []
        for rank, text in enumerate(hosts[:nodes]):
            target = self._target(text)
            transport = self._transport(target, self.settings)
            try:
                root = self._probe(transport)["root"][0]
                node = self._node(target, job_id, root, rank=rank, price=offer.price_per_hour)
                # Made now, so that from here on the job's node exists (owned() finds it).
                transport.make_dirs([node.workdir], private=True)
            except TransportError as exc:
                raise ProvisioningError(f"{target.label}: {exc}") from exc
            finally:
                transport.close()
            made.append(node.model_copy(update={"node_id": node_id(job_id, restart, rank)}))
        return made

    def wait_ready(self, nodes: list[Node]) -> list[Node]:
        return nodes  # it answered while provisioning; the job folder is made at setup

    def terminate(self, nodes: list[Node]) -> None:
        for node in nodes:
            target = SshTarget(node.host, node.port, node.user or "", node.identity_file)
            transport = self._transport(target, self.settings)
            try:
                result = transport.run(
                    [
                        "sh",
                        "-c",
                        _STOP_AND_REMOVE,
                        "sh",
                        node.workdir,
                        str(int(self.stop_grace_s * 10)),
                    ],
                    timeout=self.stop_grace_s + 30,
                    check=False,
                )
            except TransportError as exc:
                raise NotTerminatedError(
                    f"{target.label}: could not stop job {node.job_id} ({exc}); its folder "
                    f"{node.workdir} may remain: run `gpujobs down {node.job_id}` again"
                ) from exc
            finally:
                transport.close()
            if not result.ok:
                raise NotTerminatedError(
                    f"{target.label}: stopping job {node.job_id} failed: {result.tail(3)}"
                )

    def owned(self) -> list[Node]:
        """Job folders on the spec's hosts (for `down` and gc); none without a spec."""
        if self.hosts is None:
            return []
        found: list[Node] = []
        for text in self.hosts.hosts:
            target = self._target(text)
            transport = self._transport(target, self.probe_settings)
            try:
                root = self._probe(transport)["root"][0]
                listing = transport.run(["sh", "-c", _LIST_JOBS, "sh", root], check=False)
            except TransportError:
                continue  # unreachable: nothing can be listed (or removed) there now
            finally:
                transport.close()
            found += [self._node(target, job_id, root) for job_id in listing.stdout.split()]
        return found

    # -- helpers -----------------------------------------------------------------------------------
    def _node(
        self, target: SshTarget, job_id: str, root: str, *, rank: int = 0, price: float = 0.0
    ) -> Node:
        return host_node(
            self.name, target, job_id, root, rank=rank, instance_type=target.label, price=price
        )

    def _offer(self, text: str) -> Offer:
        target = self._target(text)
        transport = self._transport(target, self.probe_settings)
        try:
            facts = self._probe(transport)
        except TransportError as exc:
            return Offer(
                provider=self.name,
                instance_type=target.label,
                region=REGION,
                cpus=0,
                memory_gb=0,
                availability=Availability.NOT_AVAILABLE,
                unavailable_reason=str(exc),
            )
        finally:
            transport.close()
        gpus = [_short_gpu_name(name) for name in facts.get("gpu", [])]
        return Offer(
            provider=self.name,
            instance_type=target.label,
            region=REGION,
            gpu=gpus[0] if gpus else None,
            gpus=len(gpus),
            cpus=int(facts["cpus"][0] or 1),
            memory_gb=round(int(facts["mem_kb"][0] or 0) / 1e6, 1),
            disk_gb=round(int(facts["disk_kb"][0] or 0) / 1e6, 1),
            price_per_hour=self.cost_per_hour,
            availability=Availability.AVAILABLE,
            max_nodes=len(self.hosts.hosts) if self.hosts else 1,  # one node per host
        )

    def _probe(self, transport: SSHTransport) -> dict[str, list[str]]:
        assert self.hosts is not None or transport is not None
        workdir = self.hosts.workdir if self.hosts else "~/.gpujobs"
        key = f"{self.pins.path} {transport.target.label} {workdir}"
        cached = _probed.get(key)
        if cached is not None and time.monotonic() - cached[0] < PROBE_CACHE_S:
            return cached[1]
        facts = self._ask(transport, workdir)
        _probed[key] = (time.monotonic(), facts)
        return facts

    def _ask(self, transport: SSHTransport, workdir: str) -> dict[str, list[str]]:
        result = transport.run(["sh", "-c", _PROBE, "sh", workdir], timeout=60, check=False)
        if not result.ok:
            raise TransportError(
                f"cannot prepare {workdir} on {transport.target.label}: {result.tail(2)}"
            )
        facts: dict[str, list[str]] = {}
        for line in result.stdout.splitlines():
            key, _, value = line.partition("=")
            facts.setdefault(key.strip(), []).append(value.strip())
        if not facts.get("root"):
            raise TransportError(f"{transport.target.label}: the host probe printed nothing")
        for key in ("cpus", "mem_kb", "disk_kb"):
            facts.setdefault(key, ["0"])
        return facts

    def _target(self, text: str) -> SshTarget:
        user, host, port = parse_ssh_host(text)
        identity = self.hosts.identity_file if self.hosts else None
        # No user: the ssh config's User for that alias, else the local user (resolved at login).
        return SshTarget(host, port, user or "", identity)

    def _transport(self, target: SshTarget, settings: SshSettings) -> SSHTransport:
        return SSHTransport(target, self.pins, settings)


def _local_user() -> str:
    import getpass

    return getpass.getuser()


def _short_gpu_name(full: str) -> str:
    from gpujobs.providers.local import _short_gpu_name as shorten

    return shorten(full)


def host_node(
    provider: str,
    target: SshTarget,
    job_id: str,
    root: str,
    *,
    rank: int = 0,
    instance_type: str = "",
    price: float = 0.0,
    region: str = REGION,
) -> Node:
    """A job's node on a machine reached with the user's own login (an ssh host, a Slurm
    cluster's shared filesystem): its folder under the host's work root, the venv runtime, the
    venvs beside the jobs. Node K > 0 has a folder of its own, as hosts may share a home."""
    folder = job_id if rank == 0 else f"{job_id}-node{rank}"
    return Node(
        provider=provider,
        job_id=job_id,
        node_id=node_id(job_id, 0, rank),
        rank=rank,
        host=target.host,
        port=target.port,
        user=target.user,
        workdir=posixpath.join(root, "work", folder),
        transport="ssh",
        identity_file=target.identity_file,
        uses_job_key=False,
        runtime="venv",
        cache_dir=posixpath.join(root, "venvs"),
        instance_type=instance_type,
        region=region,
        price_per_hour=price,
    )
