"""The GCP provider: Compute Engine VMs with NVIDIA GPUs, in a zone of the user's project.

Per job it creates one firewall rule (SSH from the caller's /32 to the job's network tag), a
second one for a multi-node job (its instances to each other, on the rendezvous ports only), and
one instance per node, named `gpujobs-<job>-<rank>`, labelled `gpujobs-job=<job>`, from the
newest image of a Deep Learning VM family, with the node bootstrap as its startup script. The
budget is enforced three times: by the client, by the node's own shutdown timer, and by GCP
itself (scheduling.maxRunDuration deletes the instance a little after max_hours).

Every API call goes through `_api` (one retry policy, one timeout) and every API error is
translated by gpujobs.providers.gcp.errors at the boundary of the public method that met it.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from gpujobs.clock import Clock, SystemClock
from gpujobs.errors import GpuJobsError, NoCapacityError
from gpujobs.group import COLLECTIVE_PORTS, member_ports
from gpujobs.providers.base import (
    Credentials,
    Node,
    NodeLoss,
    NotTerminatedError,
    Offer,
    Provider,
    ProviderAuthError,
    ProviderError,
    ProvisioningError,
    Quota,
    TaggedResource,
)
from gpujobs.providers.catalog import Catalog, load_catalog
from gpujobs.providers.cloud import (
    CallerAddress,
    CloudNodeSettings,
    caller_cidr,
    lookup_caller_address,
)
from gpujobs.providers.gcp import nodes as gcp_nodes
from gpujobs.providers.gcp.adc import find_adc, find_project
from gpujobs.providers.gcp.client import ClientFactory, ComputeClient, adc_client
from gpujobs.providers.gcp.errors import is_transient, translate
from gpujobs.providers.gcp.models import (
    FIREWALL_PREFIX,
    LABEL_KEY,
    FirewallInfo,
    GcpApiError,
    ImageInfo,
    InstanceInfo,
    InstanceSpec,
    OperationRef,
    firewall_name,
    firewall_names,
    label_value,
)
from gpujobs.providers.gcp.quotas import QuotaBook
from gpujobs.providers.gcp.specs import firewall_spec, group_firewall_spec, instance_spec
from gpujobs.retry import call_with_retry
from gpujobs.spec import JobSpec, Resources

T = TypeVar("T")

DEFAULT_IMAGE_PROJECT = "deeplearning-platform-release"
# CUDA 12.8 with the NVIDIA 570 driver preinstalled; Docker and the container toolkit included.
DEFAULT_IMAGE_FAMILY = "common-cu128-ubuntu-2204-nvidia-570"
DEFAULT_DISK_GB = 100
_LIVE = frozenset({"PROVISIONING", "STAGING", "RUNNING", "REPAIRING"})


@dataclass
class _Created:
    """What one provision call made, so that a failure can undo exactly that."""

    instances: list[tuple[str, str]] = field(default_factory=list)
    firewalls: list[str] = field(default_factory=list)


class GcpProvider:
    name = "gcp"

    def __init__(
        self,
        *,
        project: str | None = None,
        catalog: Catalog | None = None,
        client_factory: ClientFactory = adc_client,
        caller_address: CallerAddress = lookup_caller_address,
        clock: Clock | None = None,
        settings: CloudNodeSettings | None = None,
        max_hours: float | None = None,
        disk_gb: int = DEFAULT_DISK_GB,
        image_project: str = DEFAULT_IMAGE_PROJECT,
        image_family: str = DEFAULT_IMAGE_FAMILY,
        call_timeout_s: float = 30.0,
        operation_timeout_s: float = 600.0,
        ready_timeout_s: float = 600.0,
        poll_interval_s: float = 3.0,
    ) -> None:
        self._project = project
        self._catalog = catalog
        self.client_factory = client_factory
        self.caller_address = caller_address
        self.clock: Clock = clock or SystemClock()
        self.settings = settings or CloudNodeSettings()
        self.max_hours = max_hours
        self.disk_gb = disk_gb
        self.image_project = image_project
        self.image_family = image_family
        self.call_timeout_s = call_timeout_s
        self.operation_timeout_s = operation_timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.poll_interval_s = poll_interval_s
        self._client: ComputeClient | None = None
        self._image: ImageInfo | None = None
        self._quotas = QuotaBook(self._api, self._client_now)

    def for_spec(self, spec: JobSpec) -> Provider:
        disk = spec.resources.disk_gb
        return GcpProvider(
            project=self._project,
            catalog=self._catalog,
            client_factory=self.client_factory,
            caller_address=self.caller_address,
            clock=self.clock,
            settings=self.settings,
            max_hours=spec.budget.max_hours,
            disk_gb=math.ceil(disk) if disk else DEFAULT_DISK_GB,
            image_project=self.image_project,
            image_family=self.image_family,
            call_timeout_s=self.call_timeout_s,
            operation_timeout_s=self.operation_timeout_s,
            ready_timeout_s=self.ready_timeout_s,
            poll_interval_s=self.poll_interval_s,
        )

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = load_catalog(self.name)
        return self._catalog

    @property
    def project(self) -> str | None:
        if self._project is None:
            self._project = find_project(find_adc())
        return self._project

    # -- planning (no network) ----------------------------------------------------------------
    def check(self) -> Credentials:
        adc = find_adc()
        project = self.project
        set_project = "set GOOGLE_CLOUD_PROJECT=<your project id> (or `gcloud config set project`)"
        if not adc.found:
            missing = adc.problem if project else f"{adc.problem}; and {set_project}"
            return Credentials(provider=self.name, ok=False, missing=missing)
        found = f"application default credentials in {adc.path}"
        if not project:
            return Credentials(
                provider=self.name, ok=False, found=found, missing=f"no project: {set_project}"
            )
        return Credentials(provider=self.name, ok=True, found=f"{found}; project {project}")

    def offers(self, resources: Resources) -> list[Offer]:
        return self.catalog.matching(resources)

    # -- quotas ---------------------------------------------------------------------------------
    def quota(self, offer: Offer) -> Quota:
        with self._boundary(offer.region, ProviderError):
            return self._quotas.for_offer(offer, self._require_project())

    def quotas(self, gpu: str | None = None) -> list[Quota]:
        with self._boundary("every region", ProviderError):
            return self._quotas.report(gpu, self.catalog.regions(), self._require_project())

    # -- a job's nodes -----------------------------------------------------------------------------
    def provision(
        self, job_id: str, offer: Offer, ssh_public_key: str | None, nodes: int, *, restart: int = 0
    ) -> list[Node]:
        # `restart` needs nothing here: names are per job and rank, a lost node of the same name
        # is deleted before its replacement is made, and request ids are new per call.
        zone = offer.zone
        if not zone:
            raise ProvisioningError(f"gcp: offer {offer.label} names no zone; GCP places by zone")
        cidr = caller_cidr(self.caller_address)  # before anything exists: nothing to undo
        created = _Created()
        with self._boundary(zone, ProvisioningError):
            client = self._client_now()
            if self._image is None:
                self._image = self._api(
                    lambda: client.image_from_family(self.image_project, self.image_family)
                )
            try:
                refs = self._ensure_firewall(job_id, cidr, created)
                if nodes > 1:
                    refs += self._ensure_group_firewall(job_id, created)
                for rank in range(nodes):
                    spec = instance_spec(
                        job_id,
                        rank,
                        offer,
                        image=self._image.self_link,
                        # A disk smaller than the image is refused: the image's size wins.
                        disk_gb=max(self.disk_gb, self._image.disk_gb),
                        settings=self.settings,
                        max_hours=self.max_hours,
                        ssh_public_key=ssh_public_key,
                        port_band=COLLECTIVE_PORTS if nodes > 1 else None,
                    )
                    refs += self._ensure_instance(spec, created)
                self._await(refs, f"creating job {job_id}'s nodes in {zone}")
            except GcpApiError as exc:
                error = self._translate(exc, zone, ProvisioningError)
                raise self._undone(created, job_id, error) from None
            except GpuJobsError as exc:
                raise self._undone(created, job_id, exc) from None
        return [gcp_nodes.new_node(self.settings, job_id, rank, offer) for rank in range(nodes)]

    def wait_ready(self, nodes: list[Node]) -> list[Node]:
        deadline = self.clock.monotonic() + self.ready_timeout_s
        ready: dict[str, Node] = {}
        with self._boundary(nodes[0].region if nodes else "gcp", ProvisioningError):
            client = self._client_now()
            while True:
                for node in nodes:
                    if node.node_id in ready:
                        continue
                    zone, name = gcp_nodes.location(node)
                    info = self._api(lambda z=zone, n=name: client.get_instance(z, n))
                    if info is None or info.status not in _LIVE:
                        state = "gone" if info is None else info.status
                        raise _lost(name, zone, state)
                    if info.status == "RUNNING" and info.public_ip:
                        ready[node.node_id] = gcp_nodes.ready_node(
                            self.settings, node, info.public_ip, info.private_ip
                        )
                if len(ready) == len(nodes):
                    return [ready[node.node_id] for node in nodes]
                if self.clock.monotonic() >= deadline:
                    waiting = [n.node_id for n in nodes if n.node_id not in ready]
                    raise ProvisioningError(
                        f"gcp: {', '.join(waiting)} not running with a public address after "
                        f"{self.ready_timeout_s:g}s; `gpujobs down` removes them"
                    )
                self.clock.sleep(self.poll_interval_s)

    def losses(self, nodes: list[Node]) -> list[NodeLoss]:
        """Nodes GCP stopped or deleted. A preempted spot VM is deleted (its termination action
        is DELETE), so for a spot node "gone" is read as preempted."""
        found = []
        with self._boundary("gcp", ProviderError):
            client = self._client_now()
            for node in nodes:
                if gcp_nodes.is_rule_only(node):
                    continue
                zone, name = gcp_nodes.location(node)
                info = self._api(lambda z=zone, n=name: client.get_instance(z, n))
                if info is not None and info.status in _LIVE:
                    continue
                state = "deleted" if info is None else info.status
                found.append(
                    NodeLoss(
                        node_id=node.node_id,
                        reason=f"gcp {name} in {zone} is {state}"
                        + (" (a spot VM taken back)" if node.spot else ""),
                        preempted=node.spot,
                    )
                )
        return found

    def terminate(self, nodes: list[Node]) -> None:
        jobs = sorted({node.job_id for node in nodes})
        instances = [gcp_nodes.location(n) for n in nodes if not gcp_nodes.is_rule_only(n)]
        try:
            with self._boundary("gcp", NotTerminatedError):
                self._delete_confirmed(instances)
                for job_id in jobs:
                    self._drop_firewall_if_unused(job_id)
        except NotTerminatedError as exc:
            raise NotTerminatedError(
                f"{exc}; run `gpujobs down {' '.join(jobs)}` again, or check "
                f"https://console.cloud.google.com/compute/instances?project={self.project}"
            ) from exc

    def owned(self) -> list[Node]:
        instances, rules = self._labelled()
        nodes = [
            gcp_nodes.owned_node(self.settings, info, self._instance_price(info))
            for info in instances
        ]
        with_nodes = {node.job_id for node in nodes}
        for job_id, rule in rules:
            if job_id not in with_nodes:
                nodes.append(gcp_nodes.rule_node(self.settings, job_id, rule.name))
        return nodes

    def tagged(self) -> list[TaggedResource]:
        """Labelled instances in every zone (stopped ones too: their disks bill), then the
        firewall rules gpujobs made."""
        instances, rules = self._labelled()
        return [
            gcp_nodes.instance_resource(info, self._instance_price(info)) for info in instances
        ] + [gcp_nodes.rule_resource(rule, job_id) for job_id, rule in rules]

    def delete(self, resource: TaggedResource) -> None:
        with self._boundary(resource.region, NotTerminatedError):
            if resource.kind == "instance":
                self._delete_confirmed([(resource.region, resource.resource_id)])
            elif resource.kind == "firewall-rule":
                self._delete_firewall(resource.resource_id)
            else:
                raise ProviderError(
                    f"gcp: gpujobs does not delete {resource.kind}s ({resource.resource_id})"
                )

    def _labelled(self) -> tuple[list[InstanceInfo], list[tuple[str, FirewallInfo]]]:
        """Instances carrying the job label, and (job id, rule) for gpujobs' firewall rules."""
        with self._boundary("every zone", ProviderError):
            client = self._client_now()
            found = self._api(lambda: client.list_instances(f"labels.{LABEL_KEY}:*"))
            rules = self._api(lambda: client.list_firewalls(FIREWALL_PREFIX))
        owned_rules = [(gcp_nodes.job_of_rule(rule), rule) for rule in rules]
        return found, [(job_id, rule) for job_id, rule in owned_rules if job_id is not None]

    # -- provisioning steps ---------------------------------------------------------------------
    def _ensure_firewall(self, job_id: str, cidr: str, created: _Created) -> list[OperationRef]:
        client = self._client_now()
        name = firewall_name(job_id)
        rule = self._api(lambda: client.get_firewall(name))
        if rule is None:
            spec = firewall_spec(job_id, cidr)
            ref = self._insert(lambda request: client.insert_firewall(spec, request))
            if ref is None:
                return []
            created.firewalls.append(name)
            return [ref]
        if rule.source_ranges != (cidr,):  # the client moved: admit its new address only
            request = str(uuid.uuid4())
            return [self._api(lambda: client.set_firewall_sources(name, (cidr,), request))]
        return []

    def _ensure_group_firewall(self, job_id: str, created: _Created) -> list[OperationRef]:
        """The rule between a multi-node job's instances: its tag to its tag, on the
        rendezvous port and the collective band only (see gpujobs.group.member_ports)."""
        client = self._client_now()
        spec = group_firewall_spec(job_id, member_ports(job_id))
        if self._api(lambda: client.get_firewall(spec.name)) is not None:
            return []  # the same job provisioned again (its ports follow from its id)
        ref = self._insert(lambda request: client.insert_firewall(spec, request))
        if ref is None:
            return []
        created.firewalls.append(spec.name)
        return [ref]

    def _ensure_instance(self, spec: InstanceSpec, created: _Created) -> list[OperationRef]:
        client = self._client_now()
        existing = self._api(lambda: client.get_instance(spec.zone, spec.name))
        if existing is not None and existing.status in _LIVE:
            return []  # the same job provisioned again: it is already there
        if existing is not None:  # a stopped leftover of this job: replace it
            self._delete_instances([(spec.zone, spec.name)])
        ref = self._insert(lambda request: client.insert_instance(spec, request))
        if ref is None:
            return []
        created.instances.append((spec.zone, spec.name))
        return [ref]

    def _insert(self, insert: Callable[[str], OperationRef]) -> OperationRef | None:
        """One create, under a request id its retries share (so GCP recognises a retry); None
        when the thing exists already (409: a concurrent call made it meanwhile)."""
        request = str(uuid.uuid4())
        try:
            return self._api(lambda: insert(request))
        except GcpApiError as exc:
            if exc.http_status == 409:
                return None
            raise

    def _await(self, refs: list[OperationRef], what: str, *, missing_ok: bool = False) -> None:
        """Poll until every operation is done; raise the first one's error, once all are."""
        client = self._client_now()
        deadline = self.clock.monotonic() + self.operation_timeout_s
        pending = list(refs)
        errors: list[GcpApiError] = []
        while pending:
            for ref in list(pending):
                state = self._api(lambda r=ref: client.get_operation(r))
                if state.done:
                    pending.remove(ref)
                    gone = (
                        missing_ok and state.error and "RESOURCE_NOT_FOUND" in state.error.reasons
                    )
                    if state.error and not gone:
                        errors.append(state.error)
            if not pending:
                break
            if self.clock.monotonic() >= deadline:  # the caller's boundary names the error
                raise GcpApiError(
                    "deadline",
                    f"{what}: not done after {self.operation_timeout_s:g}s "
                    f"(operations {', '.join(ref.name for ref in pending)})",
                )
            self.clock.sleep(self.poll_interval_s)
        if errors:
            raise errors[0]

    def _undone(self, created: _Created, job_id: str, cause: GpuJobsError) -> GpuJobsError:
        """Remove what this provision call made. Returns the error to raise: the cause, told
        that cleaning up failed as well when it did."""
        try:
            self._delete_instances(created.instances)
            for name in created.firewalls:
                self._delete_firewall(name)
        except (GcpApiError, GpuJobsError) as exc:
            return type(cause)(
                f"{cause}; cleaning up failed too ({exc}): run `gpujobs down {job_id}`"
            )
        return cause

    def _delete_instances(self, instances: list[tuple[str, str]]) -> None:
        """Delete (zone, name)s and wait until the operations are done; absent ones are fine."""
        client = self._client_now()
        refs: list[OperationRef] = []
        for zone, name in instances:
            request = str(uuid.uuid4())
            ref = self._api(lambda z=zone, n=name, r=request: client.delete_instance(z, n, r))
            refs += [ref] if ref else []
        self._await(refs, "deleting instances", missing_ok=True)

    def _delete_confirmed(self, instances: list[tuple[str, str]]) -> None:
        """Delete the instances, then read each back: a deleted instance is not found."""
        client = self._client_now()
        self._delete_instances(instances)
        for zone, name in instances:
            if self._api(lambda z=zone, n=name: client.get_instance(z, n)) is not None:
                raise NotTerminatedError(f"gcp: {name} in {zone} still exists")

    def _delete_firewall(self, name: str) -> None:
        client = self._client_now()
        request = str(uuid.uuid4())
        ref = self._api(lambda: client.delete_firewall(name, request))
        self._await([ref] if ref else [], f"deleting firewall rule {name}", missing_ok=True)

    def _drop_firewall_if_unused(self, job_id: str) -> None:
        """The job's rules go once none of its instances is left anywhere."""
        client = self._client_now()
        label = label_value(job_id)
        left = self._api(lambda: client.list_instances(f"labels.{LABEL_KEY} = {label}"))
        if not left:
            for name in firewall_names(job_id):
                self._delete_firewall(name)

    def _instance_price(self, info: InstanceInfo) -> float:
        """The catalog's $/h for an instance found in the cloud (0 when the catalog lacks it)."""
        region = info.zone.rsplit("-", 1)[0]
        try:
            return self.catalog.price(info.machine_type, region, spot=info.spot) or 0.0
        except (GpuJobsError, OSError, ValueError):
            return 0.0

    # -- plumbing -------------------------------------------------------------------------------
    def _require_project(self) -> str:
        project = self.project
        if not project:
            raise ProviderAuthError(
                "gcp: no project: set GOOGLE_CLOUD_PROJECT=<your project id> "
                "(or `gcloud config set project <id>`)"
            )
        return project

    def _client_now(self) -> ComputeClient:
        if self._client is None:
            self._client = self.client_factory(self._require_project(), self.call_timeout_s)
        return self._client

    def _api(self, call: Callable[[], T]) -> T:
        return call_with_retry(call, is_transient=is_transient, clock=self.clock)

    def _translate(
        self, exc: GcpApiError, where: str, default: type[ProviderError]
    ) -> ProviderError:
        return translate(exc, project=self.project or "", where=where, default=default)

    @contextlib.contextmanager
    def _boundary(self, where: str, default: type[ProviderError]) -> Iterator[None]:
        """GcpApiError -> the gpujobs error, once, where a public method hands control back."""
        try:
            yield
        except GcpApiError as exc:
            raise self._translate(exc, where, default) from None


def _lost(name: str, zone: str, state: str) -> NoCapacityError:
    return NoCapacityError(
        f"gcp: {name} in {zone} is {state} before it was ready (preempted or stopped)"
    )
