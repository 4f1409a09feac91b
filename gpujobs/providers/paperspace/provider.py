"""The Paperspace provider: GPU machines from Paperspace's machines API (httpx, see client.py).

What Paperspace has and has not, and what gpujobs does about it:
- No tags or labels on machines: gpujobs owns every machine named `gpujobs-<job id>-<rank>` and
  every startup script named `gpujobs-<job id>`; the names carry the job id, and `owned()` and
  `terminate()` find leftovers by them.
- No SSH-key field: the job's public key goes into the node's startup script (the bootstrap
  installs it for the login user, `paperspace` on Paperspace's Ubuntu images). The startup script
  is also where the budget's shutdown timer lives.
- No security groups or firewall API: the node filters its own inbound traffic (iptables, in
  the startup script before anything listens): SSH from the caller's address only, everything
  from the job's private network, nothing else. SSH is key-only too: the startup script turns
  password login off first thing, and gpujobs asks Paperspace not to e-mail a password.
- A multi-node job's machines meet on a private network of the job's own (`gpujobs-<job id>`,
  a /24 in the offer's region): the group's addresses are the private ones, and no machine of
  another job (or person) shares the network. It is deleted after the machines.
- No spot machines, and no quota system: `quota()` says so without a call, and launch checks
  `/machine-availability` first (a machine type not available there is a NoCapacityError, so the
  planner fails over). `quotas()` reports that availability per region, in its own unit.
- Paperspace's auto-shutdown (`autoShutdownTimeout`, whole hours) is set to ceil(max_hours) as a
  second guard behind the node's own timer. A machine shut down either way is "off" and still
  bills its disk until deleted: `terminate()` deletes, never only stops.
"""

from __future__ import annotations

import copy
import ipaddress
import math
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

import httpx

from gpujobs.clock import Clock, SystemClock
from gpujobs.errors import (
    GpuJobsError,
    NoCapacityError,
    NotTerminatedError,
    ProviderAuthError,
    ProviderError,
    ProvisioningError,
)
from gpujobs.providers.base import (
    Credentials,
    Node,
    NodeLoss,
    Offer,
    Provider,
    Quota,
    TaggedResource,
)
from gpujobs.providers.catalog import Catalog, load_catalog
from gpujobs.providers.cloud import (
    Bootstrap,
    CallerAddress,
    CloudNodeSettings,
    caller_cidr,
    lookup_caller_address,
)
from gpujobs.providers.paperspace.client import (
    ApiUnreachableError,
    PaperspaceClient,
    UnconfirmedCreateError,
)
from gpujobs.providers.paperspace.credentials import HOW_TO_SET, ApiKey, find_api_key
from gpujobs.providers.paperspace.layout import (
    NAME_PREFIX,
    addressed,
    all_named,
    choose_template,
    disk_size,
    machine_job,
    machine_name,
    machine_resource,
    named,
    network_name,
    network_resource,
    node_for,
    parse_machine_name,
    script_name,
    script_resource,
    startup_script,
)
from gpujobs.providers.paperspace.models import (
    OFF,
    READY,
    Machine,
    MachineCreate,
    PrivateNetwork,
    PrivateNetworkCreate,
    StartupScript,
    StartupScriptCreate,
)
from gpujobs.retry import call_with_retry
from gpujobs.spec import JobSpec, Resources

T = TypeVar("T")

DEFAULT_DISK_GB = 100.0
SCRIPT_LIMIT_BYTES = 16 * 1024  # Paperspace's documented startup script limit
OFF_GRACE_S = 120.0  # a new machine may read "off" before it starts; after this, off is dead
CONSOLE = "https://console.paperspace.com/machines"


class PaperspaceProvider:
    name = "paperspace"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        catalog: Catalog | None = None,
        transport: httpx.BaseTransport | None = None,
        caller_address: CallerAddress = lookup_caller_address,
        clock: Clock | None = None,
        settings: CloudNodeSettings | None = None,
        max_hours: float | None = None,
        disk_gb: float = DEFAULT_DISK_GB,
        template: str | None = None,
        ready_timeout_s: float = 600.0,
        terminate_timeout_s: float = 600.0,
        poll_interval_s: float = 10.0,
    ) -> None:
        self._api_key = ApiKey(api_key, "the provider's settings") if api_key else None
        self._catalog = catalog
        self._transport = transport
        # Paperspace has no firewall API: the node admits SSH from this address alone itself.
        self.caller_address = caller_address
        self.clock = clock or SystemClock()
        self.settings = settings or CloudNodeSettings(ssh_user="paperspace")
        self.max_hours = max_hours
        self.disk_gb = disk_gb
        self.template = template  # an OS template id or exact name; None: pick by name
        self.ready_timeout_s = ready_timeout_s
        self.terminate_timeout_s = terminate_timeout_s
        self.poll_interval_s = poll_interval_s
        self._client: PaperspaceClient | None = None
        self._templates: dict[str, str] = {}  # machine type -> template id

    def __repr__(self) -> str:
        return f"PaperspaceProvider(max_hours={self.max_hours}, disk_gb={self.disk_gb:g})"

    def for_spec(self, spec: JobSpec) -> Provider:
        configured = copy.copy(self)  # shares the client and the template cache
        configured.max_hours = spec.budget.max_hours
        configured.disk_gb = spec.resources.disk_gb or DEFAULT_DISK_GB
        return configured

    # -- planning (no network) --------------------------------------------------------------------
    def check(self) -> Credentials:
        lookup = find_api_key(self._api_key.value if self._api_key else None)
        if lookup.key is not None:
            found = f"API key from {lookup.key.source}"
            return Credentials(provider=self.name, ok=True, found=found)
        problem = f" ({lookup.problem})" if lookup.problem else ""
        return Credentials(provider=self.name, ok=False, missing=HOW_TO_SET + problem)

    def offers(self, resources: Resources) -> list[Offer]:
        return [offer for offer in self.catalog.matching(resources) if not offer.spot]

    def quota(self, offer: Offer) -> Quota:
        return Quota(
            provider=self.name,
            region=offer.region,
            code="none",
            name="no quota system; availability checked at launch",
            unit="machine",
            limit=None,
            per_node=1.0,
        )

    def quotas(self, gpu: str | None = None) -> list[Quota]:
        """Whether each GPU machine type of the catalog can be had now, per region. Unit: 1 if
        Paperspace says the type is available in the region, 0 if not (no counts exist)."""
        client = self._api()
        wanted = gpu.upper() if gpu else None
        rows = sorted(
            {
                (offer.region, offer.instance_type, offer.gpu or "")
                for offer in self.catalog.offers
                if offer.gpu and not offer.spot and (wanted is None or offer.gpu == wanted)
            }
        )
        return [
            Quota(
                provider=self.name,
                region=region,
                code=f"availability/{machine_type}",
                name=f"{machine_type} ({gpu_model}) available now",
                unit="available now (1 yes, 0 no)",
                limit=1.0 if client.machine_available(machine_type, region) else 0.0,
                request_at="nothing to request: availability changes by the hour",
                per_node=1.0,
            )
            for region, machine_type, gpu_model in rows
        ]

    # -- a job's nodes ----------------------------------------------------------------------------
    def provision(
        self, job_id: str, offer: Offer, ssh_public_key: str | None, nodes: int, *, restart: int = 0
    ) -> list[Node]:
        # `restart` needs nothing here: a lost machine is deleted before its replacement, which
        # takes its name, and lookups by name skip deleted machines.
        if nodes < 1:
            raise ProvisioningError(f"asked for {nodes} nodes")
        if offer.spot:
            raise ProvisioningError("paperspace has no spot machines")
        disk = disk_size(self.disk_gb)
        # No firewall API: the node filters its own inbound traffic (bootstrap.sh, 2b).
        ssh_from = caller_cidr(self.caller_address)
        bootstrap = Bootstrap(
            job_id,
            self.settings,
            self.max_hours,
            ssh_public_key,
            ssh_from=ssh_from,
            # The largest private network a group may have, for the size check before any
            # call; the real one once the network exists.
            group_cidr="255.255.255.255/32" if nodes > 1 else None,
        )
        _check_script_size(startup_script(bootstrap.render()))
        client = self._api()
        if not client.machine_available(offer.instance_type, offer.region):
            raise NoCapacityError(
                f"paperspace says {offer.instance_type} is not available in {offer.region}"
            )
        template_id = self._template_id(client, offer)
        made_machines: list[str] = []
        made_script: StartupScript | None = None
        made_network: PrivateNetwork | None = None
        try:
            network_id = None
            if nodes > 1:
                network, fresh = self._ensure_network(client, job_id, offer.region)
                made_network = network if fresh else None
                network_id = network.id
                bootstrap = replace(bootstrap, group_cidr=network_cidr(network))
            script_text = startup_script(bootstrap.render())
            _check_script_size(script_text)
            script_body = StartupScriptCreate(name=script_name(job_id), script=script_text)
            script, fresh = self._find_or_create(
                lambda: named(client.list_startup_scripts(script_body.name), script_body.name),
                lambda: client.create_startup_script(script_body),
            )
            made_script = script if fresh else None
            result: list[Node] = []
            for rank in range(nodes):
                body = self._machine_body(
                    job_id, rank, offer, template_id, script.id, disk, network_id
                )
                machine, fresh = self._ensure_machine(client, body)
                if fresh:
                    made_machines.append(machine.id)
                result.append(node_for(self.settings, job_id, rank, machine, offer=offer))
            return result
        except Exception as exc:
            self._undo(client, made_machines, made_script, made_network, exc)
            raise

    def wait_ready(self, nodes: list[Node]) -> list[Node]:
        client = self._api()
        start = self.clock.monotonic()
        ready: dict[str, Node] = {}
        states: dict[str, str] = {}
        started: set[str] = set()  # machines seen in a state other than off
        while True:
            for node in nodes:
                if node.node_id in ready:
                    continue
                machine = client.get_machine(node.node_id)
                if machine is None or machine.deleted:
                    raise NoCapacityError(
                        f"paperspace machine {node.node_id} of job {node.job_id} "
                        "disappeared while starting"
                    )
                states[node.node_id] = machine.state
                if machine.state != OFF:
                    started.add(node.node_id)
                elif node.node_id in started or self.clock.monotonic() - start > OFF_GRACE_S:
                    raise NoCapacityError(
                        f"paperspace machine {machine.name} ({machine.id}) turned off "
                        "while starting"
                    )
                if machine.state == READY and machine.public_ip:
                    ready[node.node_id] = addressed(self.settings, node, machine)
            if len(ready) == len(nodes):
                return [ready[node.node_id] for node in nodes]
            if self.clock.monotonic() - start >= self.ready_timeout_s:
                waiting = ", ".join(
                    f"{node_id} ({states.get(node_id, '?')})"
                    for node_id in (node.node_id for node in nodes)
                    if node_id not in ready
                )
                raise NoCapacityError(
                    f"paperspace machines not ready after {self.ready_timeout_s:g} s: {waiting}"
                )
            self.clock.sleep(self.poll_interval_s)

    def losses(self, nodes: list[Node]) -> list[NodeLoss]:
        """Machines deleted, or turned off or stopping while their job runs (Paperspace has no
        spot machines: a machine off mid-run was shut down, by its auto-shutdown or a person)."""
        client = self._api()
        found = []
        for node in nodes:
            machine = client.get_machine(node.node_id)
            if machine is None or machine.deleted:
                state = "deleted"
            elif machine.state in (OFF, "stopping"):
                state = machine.state
            else:
                continue
            found.append(
                NodeLoss(node_id=node.node_id, reason=f"paperspace {node.node_id} is {state}")
            )
        return found

    def terminate(self, nodes: list[Node]) -> None:
        if not nodes:
            return
        client = self._api()
        jobs = {node.job_id for node in nodes}
        try:
            # The nodes given, and any machine of these jobs they miss (a crash mid-provision).
            pending = {node.node_id for node in nodes if node.node_id}
            pending |= {
                machine.id
                for machine in client.list_machines()
                if (parsed := parse_machine_name(machine.name))
                and parsed[0] in jobs
                and not machine.deleted
            }
            self._delete_machines(client, pending)
            for job_id in sorted(jobs):
                name = script_name(job_id)
                for script in all_named(client.list_startup_scripts(name), name):
                    client.delete_startup_script(script.id)
                # Only now: Paperspace refuses to delete a network that machines are on.
                name = network_name(job_id)
                for network in all_named(client.list_private_networks(name), name):
                    client.delete_private_network(network.id)
        except ApiUnreachableError as exc:
            raise NotTerminatedError(
                f"could not confirm that job {', '.join(sorted(jobs))} is gone from paperspace "
                f"({exc}); check {CONSOLE}"
            ) from exc

    def owned(self) -> list[Node]:
        """Every machine named `gpujobs-...`, live or forgotten, as a Node."""
        nodes = []
        for machine in self._owned_machines():
            job_id, rank = machine_job(machine.name)
            nodes.append(node_for(self.settings, job_id, rank, machine, price=self._price(machine)))
        return nodes

    def owned_startup_scripts(self) -> list[StartupScript]:
        """Every startup script named `gpujobs-...` (for gc: they outlive a crashed client)."""
        return [
            script
            for script in self._api().list_startup_scripts()
            if script.name.startswith(NAME_PREFIX) and script.dt_deleted is None
        ]

    def tagged(self) -> list[TaggedResource]:
        """Machines named `gpujobs-...` (off ones too: their disks bill), then startup scripts
        and private networks (listed after the machines, so gc deletes them after)."""
        machines = [machine_resource(m, self._price(m)) for m in self._owned_machines()]
        networks = [
            network_resource(network)
            for network in self._api().list_private_networks()
            if network.name.startswith(NAME_PREFIX) and network.dt_deleted is None
        ]
        return machines + [script_resource(s) for s in self.owned_startup_scripts()] + networks

    def delete(self, resource: TaggedResource) -> None:
        client = self._api()
        try:
            if resource.kind == "machine":
                self._delete_machines(client, {resource.resource_id})
            elif resource.kind == "startup-script":
                client.delete_startup_script(resource.resource_id)  # a 404: already gone
            elif resource.kind == "private-network":
                client.delete_private_network(resource.resource_id)
            else:
                raise ProviderError(
                    f"paperspace: gpujobs does not delete {resource.kind}s ({resource.resource_id})"
                )
        except ApiUnreachableError as exc:
            raise NotTerminatedError(
                f"could not confirm that paperspace {resource.kind} {resource.resource_id} is "
                f"deleted ({exc}); check {CONSOLE}"
            ) from exc

    def _owned_machines(self) -> list[Machine]:
        return [
            machine
            for machine in self._api().list_machines()
            if machine.name.startswith(NAME_PREFIX) and not machine.deleted
        ]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = load_catalog(self.name)
        return self._catalog

    def _api(self) -> PaperspaceClient:
        if self._client is None:
            lookup = find_api_key(self._api_key.value if self._api_key else None)
            if lookup.key is None:
                problem = f" ({lookup.problem})" if lookup.problem else ""
                raise ProviderAuthError(f"no Paperspace API key found: {HOW_TO_SET}{problem}")
            self._client = PaperspaceClient(lookup.key, transport=self._transport, clock=self.clock)
        return self._client

    def _find_or_create(
        self, find: Callable[[], T | None], create: Callable[[], T]
    ) -> tuple[T, bool]:
        """Look up by name, create if absent. A create Paperspace did not confirm is looked up
        again before being repeated, so a retry never makes a second one. True: made here."""
        tried = False

        def once() -> tuple[T, bool]:
            nonlocal tried
            found = find()
            if found is not None:
                return found, tried
            tried = True
            return create(), True

        return call_with_retry(
            once, is_transient=lambda exc: isinstance(exc, UnconfirmedCreateError), clock=self.clock
        )

    def _ensure_network(
        self, client: PaperspaceClient, job_id: str, region: str
    ) -> tuple[PrivateNetwork, bool]:
        body = PrivateNetworkCreate(name=network_name(job_id), region=region)
        return self._find_or_create(
            lambda: named(client.list_private_networks(body.name), body.name),
            lambda: client.create_private_network(body),
        )

    def _ensure_machine(
        self, client: PaperspaceClient, body: MachineCreate
    ) -> tuple[Machine, bool]:
        return self._find_or_create(
            lambda: named(client.list_machines(body.name), body.name),
            lambda: client.create_machine(body),
        )

    def _machine_body(
        self,
        job_id: str,
        rank: int,
        offer: Offer,
        template_id: str,
        script_id: str,
        disk: int,
        network_id: str | None,
    ) -> MachineCreate:
        hours = math.ceil(self.max_hours) if self.max_hours is not None else None
        return MachineCreate(
            name=machine_name(job_id, rank),
            machine_type=offer.instance_type,
            template_id=template_id,
            region=offer.region,
            disk_size=disk,
            public_ip_type="dynamic",
            startup_script_id=script_id,
            network_id=network_id,
            auto_shutdown_enabled=hours is not None,
            auto_shutdown_timeout=hours,
            auto_shutdown_force=True if hours is not None else None,
        )

    def _template_id(self, client: PaperspaceClient, offer: Offer) -> str:
        machine_type = offer.instance_type
        if machine_type not in self._templates:
            usable = [t for t in client.list_os_templates() if t.runs_on(machine_type)]
            chosen = choose_template(usable, self.template, needs_gpu=offer.gpus > 0)
            if chosen is None:
                seen = ", ".join(sorted(t.name for t in usable)[:8]) or "none"
                wanted = repr(self.template) if self.template else "an Ubuntu 22.04 ML-in-a-Box/GPU"
                raise ProvisioningError(
                    f"paperspace has no {wanted} OS template for {machine_type} "
                    f"(templates offered for it: {seen})"
                )
            self._templates[machine_type] = chosen.id
        return self._templates[machine_type]

    def _undo(
        self,
        client: PaperspaceClient,
        machines: list[str],
        script: StartupScript | None,
        network: PrivateNetwork | None,
        cause: BaseException,
    ) -> None:
        """Best-effort removal of what one failed provision call made; leftovers keep their
        gpujobs- names, so `gpujobs gc` finds them."""
        try:
            if network is None:
                for machine_id in machines:
                    client.delete_machine(machine_id)
            else:  # the network goes last, once no machine is on it
                self._delete_machines(client, set(machines))
            if script is not None:
                client.delete_startup_script(script.id)
            if network is not None:
                client.delete_private_network(network.id)
        except ProviderError as exc:
            cause.add_note(f"cleaning up after it also failed: {exc}; `gpujobs gc` will retry")

    def _delete_machines(self, client: PaperspaceClient, pending: set[str]) -> None:
        start = self.clock.monotonic()
        asked: set[str] = set()
        states: dict[str, str] = {}
        while pending:
            for machine_id in sorted(pending):
                if machine_id not in asked:
                    try:
                        client.delete_machine(machine_id)  # a 404 is fine: the read below tells
                        asked.add(machine_id)
                    except ProvisioningError as exc:
                        # Refused in its current state (still provisioning): ask again next round.
                        states[machine_id] = f"delete refused: {exc}"
                machine = client.get_machine(machine_id)
                if machine is None or machine.deleted:
                    pending.discard(machine_id)
                elif machine_id in asked:
                    states[machine_id] = machine.state
            if not pending:
                return
            if self.clock.monotonic() - start >= self.terminate_timeout_s:
                left = ", ".join(f"{m} ({states.get(m, '?')})" for m in sorted(pending))
                raise NotTerminatedError(
                    f"paperspace machines not confirmed deleted after "
                    f"{self.terminate_timeout_s:g} s: {left}; delete them at {CONSOLE}"
                )
            self.clock.sleep(self.poll_interval_s)

    def _price(self, machine: Machine) -> float:
        """The catalog's $/h for a machine found in the account (0 when it lacks the type)."""
        try:
            return self.catalog.price(machine.machine_type, machine.region, spot=False) or 0.0
        except (GpuJobsError, OSError, ValueError):  # owned() must work without a catalog
            return 0.0


def network_cidr(network: PrivateNetwork) -> str:
    """A private network's range (its prefix and netmask), e.g. 10.3.7.0/24."""
    try:
        return str(ipaddress.IPv4Network(f"{network.network}/{network.netmask}", strict=False))
    except ValueError:
        raise ProvisioningError(
            f"paperspace private network {network.name} has no usable range "
            f"({network.network!r}/{network.netmask!r}); its nodes cannot be filtered"
        ) from None


def _check_script_size(script_text: str) -> None:
    if len(script_text.encode()) > SCRIPT_LIMIT_BYTES:
        raise ProvisioningError(
            f"the node's startup script is {len(script_text.encode())} bytes, over "
            f"Paperspace's {SCRIPT_LIMIT_BYTES}"
        )
