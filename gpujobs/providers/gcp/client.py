"""The Compute Engine calls gpujobs makes, over google-cloud-compute's REST clients: the one
module that touches `google.cloud.compute_v1` (imported inside, so importing gpujobs does not).

Every call passes the client's timeout and `retry=None`: the library's own retries would sleep
in real time and stack with gpujobs' one retry policy (gpujobs.retry, applied by the provider).
Errors leave as GcpApiError (plain data); the provider decides what they mean.

The seam: a ComputeClient is built from credentials and, optionally, a requests adapter that is
mounted for the API's host on the clients' HTTP session. Production passes neither (ADC, the real
network); tests pass gpujobs.testing.gcp's fake Compute API as the adapter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from gpujobs.errors import ProviderAuthError
from gpujobs.providers.gcp.adc import LOGIN_COMMAND
from gpujobs.providers.gcp.models import (
    FirewallInfo,
    FirewallSpec,
    GcpApiError,
    ImageInfo,
    InstanceInfo,
    InstanceSpec,
    OperationRef,
    OperationState,
    QuotaValue,
)

if TYPE_CHECKING:
    from requests.adapters import BaseAdapter

T = TypeVar("T")
API_ROOT = "https://compute.googleapis.com"
_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
_SERVICES = (
    "Instances",
    "Firewalls",
    "ZoneOperations",
    "GlobalOperations",
    "Regions",
    "Projects",
    "Images",
)


class ClientFactory(Protocol):
    """Builds the client for a project; the provider calls it once, at its first API call."""

    def __call__(self, project: str, timeout_s: float) -> ComputeClient: ...


def adc_client(project: str, timeout_s: float) -> ComputeClient:
    """The production factory: application default credentials, the real API."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(scopes=list(_SCOPES))
    except DefaultCredentialsError as exc:
        raise ProviderAuthError(
            f"gcp: no usable application default credentials ({exc}); run `{LOGIN_COMMAND}`"
        ) from None
    return ComputeClient(project, credentials, timeout_s=timeout_s)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """SDK, auth and HTTP exceptions -> GcpApiError, at this one place."""
    import requests
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    try:
        yield
    except api.GoogleAPICallError as exc:
        reasons = tuple(str(e.get("reason", "")) for e in exc.errors or () if isinstance(e, dict))
        raise GcpApiError("http", exc.message, int(exc.code or 0), reasons) from None
    except auth.RefreshError as exc:
        raise GcpApiError("credentials", f"the credentials were refused: {exc}") from None
    except requests.Timeout as exc:
        raise GcpApiError("timeout", f"no answer in time ({exc.__class__.__name__})") from None
    except (requests.RequestException, auth.TransportError) as exc:
        raise GcpApiError("connection", f"could not reach the API ({exc})") from None


class ComputeClient:
    def __init__(
        self,
        project: str,
        credentials: Any,
        *,
        timeout_s: float = 30.0,
        adapter: BaseAdapter | None = None,
    ) -> None:
        from google.cloud import compute_v1

        self.project = project
        self.timeout_s = timeout_s
        self._v1 = compute_v1
        self._clients: dict[str, Any] = {}
        for service in _SERVICES:
            client = getattr(compute_v1, f"{service}Client")(credentials=credentials)
            if adapter is not None:
                # The REST transport's session is a requests.Session (google-auth's
                # AuthorizedSession): mounting an adapter for the API host routes every call of
                # this client through it, headers, query and timeouts included.
                client.transport._session.mount(API_ROOT, adapter)
            self._clients[service] = client

    def _call(self, service: str, method: str, request: Any) -> Any:
        bound = getattr(self._clients[service], method)
        with _translated():
            return bound(request=request, retry=None, timeout=self.timeout_s)

    def _pages(self, service: str, method: str, request: Any) -> list[Any]:
        """Every item of a paged list, fetched inside the error translation."""
        bound = getattr(self._clients[service], method)
        with _translated():
            return list(bound(request=request, retry=None, timeout=self.timeout_s))

    # -- images, quotas ---------------------------------------------------------------------
    def image_from_family(self, project: str, family: str) -> ImageInfo:
        """The newest image of a family (not deprecated), as GCP resolves it."""
        request = self._v1.GetFromFamilyImageRequest(project=project, family=family)
        image = self._call("Images", "get_from_family", request)
        return ImageInfo(image.self_link, int(image.disk_size_gb or 0))

    def region_quotas(self, region: str) -> list[QuotaValue]:
        request = self._v1.GetRegionRequest(project=self.project, region=region)
        return _quotas(self._call("Regions", "get", request).quotas)

    def all_region_quotas(self) -> dict[str, list[QuotaValue]]:
        request = self._v1.ListRegionsRequest(project=self.project)
        return {r.name: _quotas(r.quotas) for r in self._pages("Regions", "list", request)}

    def project_quotas(self) -> list[QuotaValue]:
        request = self._v1.GetProjectRequest(project=self.project)
        return _quotas(self._call("Projects", "get", request).quotas)

    # -- instances --------------------------------------------------------------------------
    def insert_instance(self, spec: InstanceSpec, request_id: str) -> OperationRef:
        request = self._v1.InsertInstanceRequest(
            project=self.project,
            zone=spec.zone,
            instance_resource=self._instance(spec),
            request_id=request_id,
        )
        return _ref(self._call("Instances", "insert_unary", request))

    def get_instance(self, zone: str, name: str) -> InstanceInfo | None:
        request = self._v1.GetInstanceRequest(project=self.project, zone=zone, instance=name)
        return _absent_is_none(lambda: _instance_info(self._call("Instances", "get", request)))

    def delete_instance(self, zone: str, name: str, request_id: str) -> OperationRef | None:
        request = self._v1.DeleteInstanceRequest(
            project=self.project, zone=zone, instance=name, request_id=request_id
        )
        return _absent_is_none(lambda: _ref(self._call("Instances", "delete_unary", request)))

    def list_instances(self, label_filter: str) -> list[InstanceInfo]:
        """Instances in every zone whose labels match `label_filter` (the API's filter syntax)."""
        request = self._v1.AggregatedListInstancesRequest(project=self.project, filter=label_filter)
        found: list[InstanceInfo] = []
        for _scope, scoped in self._pages("Instances", "aggregated_list", request):
            found += [_instance_info(instance) for instance in scoped.instances]
        return found

    def _instance(self, spec: InstanceSpec) -> Any:
        v1 = self._v1
        scheduling = v1.Scheduling(on_host_maintenance="TERMINATE", automatic_restart=False)
        if spec.spot:
            scheduling.provisioning_model = "SPOT"
            # Preempted: deleted, not stopped, so no disk is left billing; the job resumes
            # elsewhere from its last checkpoint.
            scheduling.instance_termination_action = "DELETE"
        if spec.max_run_s is not None:
            scheduling.max_run_duration = v1.Duration(seconds=spec.max_run_s)
            scheduling.instance_termination_action = "DELETE"
        disk = v1.AttachedDisk(
            boot=True,
            auto_delete=True,
            initialize_params=v1.AttachedDiskInitializeParams(
                source_image=spec.image,
                disk_size_gb=spec.disk_gb,
                disk_type=f"zones/{spec.zone}/diskTypes/pd-balanced",
                labels=spec.labels,
            ),
        )
        nic = v1.NetworkInterface(
            network=spec.network,
            access_configs=[v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")],
        )
        accelerators = []
        if spec.accelerator is not None:
            kind, count = spec.accelerator
            accelerators = [
                v1.AcceleratorConfig(
                    accelerator_type=f"zones/{spec.zone}/acceleratorTypes/{kind}",
                    accelerator_count=count,
                )
            ]
        return v1.Instance(
            name=spec.name,
            machine_type=f"zones/{spec.zone}/machineTypes/{spec.machine_type}",
            labels=spec.labels,
            tags=v1.Tags(items=list(spec.tags)),
            metadata=v1.Metadata(
                items=[v1.Items(key=k, value=v) for k, v in spec.metadata.items()]
            ),
            disks=[disk],
            network_interfaces=[nic],
            guest_accelerators=accelerators,
            scheduling=scheduling,
        )

    # -- firewall rules ---------------------------------------------------------------------
    def get_firewall(self, name: str) -> FirewallInfo | None:
        request = self._v1.GetFirewallRequest(project=self.project, firewall=name)
        return _absent_is_none(lambda: _firewall_info(self._call("Firewalls", "get", request)))

    def insert_firewall(self, spec: FirewallSpec, request_id: str) -> OperationRef:
        v1 = self._v1
        rule = v1.Firewall(
            name=spec.name,
            description=spec.description,
            network=spec.network,
            direction="INGRESS",
            allowed=[v1.Allowed(I_p_protocol="tcp", ports=list(spec.ports))],
            source_ranges=list(spec.source_ranges),
            source_tags=list(spec.source_tags),
            target_tags=list(spec.target_tags),
        )
        request = v1.InsertFirewallRequest(
            project=self.project, firewall_resource=rule, request_id=request_id
        )
        return _ref(self._call("Firewalls", "insert_unary", request))

    def set_firewall_sources(
        self, name: str, source_ranges: tuple[str, ...], request_id: str
    ) -> OperationRef:
        request = self._v1.PatchFirewallRequest(
            project=self.project,
            firewall=name,
            firewall_resource=self._v1.Firewall(source_ranges=list(source_ranges)),
            request_id=request_id,
        )
        return _ref(self._call("Firewalls", "patch_unary", request))

    def delete_firewall(self, name: str, request_id: str) -> OperationRef | None:
        request = self._v1.DeleteFirewallRequest(
            project=self.project, firewall=name, request_id=request_id
        )
        return _absent_is_none(lambda: _ref(self._call("Firewalls", "delete_unary", request)))

    def list_firewalls(self, prefix: str) -> list[FirewallInfo]:
        # `eq` takes an RE2 expression that must match the whole name.
        request = self._v1.ListFirewallsRequest(project=self.project, filter=f"name eq {prefix}.*")
        return [_firewall_info(rule) for rule in self._pages("Firewalls", "list", request)]

    # -- operations -------------------------------------------------------------------------
    def get_operation(self, ref: OperationRef) -> OperationState:
        if ref.zone:
            request = self._v1.GetZoneOperationRequest(
                project=self.project, zone=ref.zone, operation=ref.name
            )
            operation = self._call("ZoneOperations", "get", request)
        else:
            request = self._v1.GetGlobalOperationRequest(project=self.project, operation=ref.name)
            operation = self._call("GlobalOperations", "get", request)
        done = operation.status == self._v1.Operation.Status.DONE
        return OperationState(ref.name, done, _operation_error(operation) if done else None)


def _absent_is_none(call: Callable[[], T]) -> T | None:
    """A 404 is an answer ("it is not there"), not a failure."""
    try:
        return call()
    except GcpApiError as exc:
        if exc.kind == "http" and exc.http_status == 404:
            return None
        raise


def _last(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def _ref(operation: Any) -> OperationRef:
    return OperationRef(operation.name, _last(operation.zone) if operation.zone else None)


def _operation_error(operation: Any) -> GcpApiError | None:
    errors = list(operation.error.errors)
    if not errors:
        return None
    metric = region = ""
    for item in errors:
        for detail in item.error_details:
            info = detail.quota_info
            if info and info.metric_name and not metric:
                metric = _last(info.metric_name).upper()
                region = dict(info.dimensions).get("region", "")
    return GcpApiError(
        "operation",
        "; ".join(item.message for item in errors),
        int(operation.http_error_status_code or 0),
        tuple(item.code for item in errors),
        quota_metric=metric,
        quota_region=region,
    )


def _instance_info(instance: Any) -> InstanceInfo:
    public_ip = ""
    for nic in instance.network_interfaces:
        for access in nic.access_configs:
            public_ip = public_ip or access.nat_i_p
    nics = list(instance.network_interfaces)
    return InstanceInfo(
        name=instance.name,
        zone=_last(instance.zone),
        status=instance.status,
        machine_type=_last(instance.machine_type),
        public_ip=public_ip,
        private_ip=nics[0].network_i_p if nics else "",
        labels=dict(instance.labels),
        metadata={item.key: item.value for item in instance.metadata.items},
        spot=instance.scheduling.provisioning_model == "SPOT",
        created_at=_epoch(instance.creation_timestamp),
    )


def _firewall_info(rule: Any) -> FirewallInfo:
    return FirewallInfo(
        rule.name,
        rule.description,
        tuple(rule.source_ranges),
        tuple(rule.target_tags),
        _epoch(rule.creation_timestamp),
        tuple(rule.source_tags),
        tuple(port for allowed in rule.allowed for port in allowed.ports),
    )


def _epoch(timestamp: str) -> float | None:
    """An RFC 3339 creationTimestamp ("2026-01-01T10:00:00.000-08:00") as epoch seconds."""
    try:
        return datetime.fromisoformat(timestamp).timestamp() if timestamp else None
    except ValueError:
        return None


def _quotas(quotas: Any) -> list[QuotaValue]:
    return [QuotaValue(q.metric, float(q.limit), float(q.usage)) for q in quotas]
