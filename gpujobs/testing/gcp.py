"""A fake Compute Engine API, for the GCP provider's tests and users' own.

It sits behind the real google-cloud-compute clients: `FakeComputeApi.client_factory` builds the
provider's real ComputeClient, whose REST sessions get a requests adapter mounted for
https://compute.googleapis.com that answers from memory, in the API's JSON shapes (instances,
firewall rules, zonal and global operations that start RUNNING and finish DONE after some polls,
regions with quotas, the project's own quotas (GPUS_ALL_REGIONS), images by family). No socket
is opened, and every request is recorded with the timeout it was sent with. Resources carry a
creationTimestamp, as the API's do, from `now` (pass a FakeClock's `now` to control ages).

Faults, injected by method id ("instances.insert", "zoneOperations.get", ... or "*"):
    api.fail_next("instances.get", rate_limited(), times=2)   # an HTTP error answer
    api.throttle(times=3)                                      # 429 rateLimitExceeded
    api.hang("instances.insert")                               # requests' ReadTimeout
    api.no_capacity("us-central1-a")                           # insert ops end in ZONE_RESOURCE_...
    api.exceed_quota("NVIDIA_T4_GPUS", "us-central1")          # insert ops end in QUOTA_EXCEEDED
    api.deny(401) / api.deny(403)                              # every call refused until cleared
    api.revoke_credentials()                                   # refreshing the token fails
    api.preempt("us-central1-a", "gpujobs-x-0")                # a spot VM taken away (deleted)
"""

from __future__ import annotations

import datetime
import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from google.auth import credentials as google_credentials
from google.auth import exceptions as google_auth_exceptions
from requests.adapters import BaseAdapter

from gpujobs.providers.gcp.client import API_ROOT, ComputeClient

_BASE = "https://www.googleapis.com/compute/v1/"
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL = re.compile(r"^[a-z0-9_-]{0,63}$")
_BUNDLED = ("a2-", "a3-", "a4-", "g2-", "g4-")
_STATUS_TEXT = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    429: "Too Many Requests",
    503: "Service Unavailable",
}
HANG = "hang"  # an outcome: the adapter raises requests' ReadTimeout


@dataclass(frozen=True)
class FakeHttpError:
    code: int
    reason: str
    message: str
    status: str
    domain: str = "global"

    def body(self) -> dict[str, Any]:
        item = {"message": self.message, "domain": self.domain, "reason": self.reason}
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [item],
                "status": self.status,
            }
        }


def rate_limited() -> FakeHttpError:
    return FakeHttpError(
        429, "rateLimitExceeded", "Rate Limit Exceeded", "RESOURCE_EXHAUSTED", "usageLimits"
    )


def unavailable() -> FakeHttpError:
    return FakeHttpError(503, "backendError", "Backend Error", "UNAVAILABLE")


def unauthenticated() -> FakeHttpError:
    return FakeHttpError(
        401,
        "authError",
        "Request had invalid authentication credentials. Expected OAuth 2 access token.",
        "UNAUTHENTICATED",
    )


def permission_denied(permission: str = "compute.instances.create") -> FakeHttpError:
    return FakeHttpError(
        403,
        "forbidden",
        f"Required '{permission}' permission for 'projects/test-project'",
        "PERMISSION_DENIED",
    )


def _not_found(what: str) -> FakeHttpError:
    return FakeHttpError(404, "notFound", f"The resource '{what}' was not found", "NOT_FOUND")


def _exists(what: str) -> FakeHttpError:
    return FakeHttpError(
        409, "alreadyExists", f"The resource '{what}' already exists", "ALREADY_EXISTS"
    )


def _invalid(message: str) -> FakeHttpError:
    return FakeHttpError(400, "invalid", message, "INVALID_ARGUMENT")


@dataclass(frozen=True)
class FakeOperationError:
    """How an operation can end: its `error.errors` and HTTP status, as the API reports them."""

    code: str
    message: str
    http_status: int = 400
    details: tuple[dict[str, Any], ...] = ()

    def fields(self) -> dict[str, Any]:
        error = {"code": self.code, "message": self.message}
        if self.details:
            error["errorDetails"] = list(self.details)
        return {
            "error": {"errors": [error]},
            "httpErrorStatusCode": self.http_status,
            "httpErrorMessage": _STATUS_TEXT.get(self.http_status, "").upper(),
        }


def no_capacity_error(project: str, zone: str) -> FakeOperationError:
    return FakeOperationError(
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        f"The zone 'projects/{project}/zones/{zone}' does not have enough resources available "
        "to fulfill the request.  Try a different zone, or try again later.",
        503,
    )


def quota_error(metric: str, region: str, limit: float = 0.0) -> FakeOperationError:
    info = {
        "metricName": f"compute.googleapis.com/{metric.lower()}",
        "limitName": f"{metric.replace('_', '-')}-per-project-region",
        "dimensions": {"region": region},
        "limit": limit,
    }
    return FakeOperationError(
        "QUOTA_EXCEEDED",
        f"Quota '{metric}' exceeded.  Limit: {limit} in region {region}.",
        403,
        ({"quotaInfo": info},),
    )


@dataclass
class _Rule:
    method: str
    outcome: FakeHttpError | FakeOperationError | str
    times: int | None  # None: until cleared
    zone: str | None = None

    def hits(self, method: str, zone: str | None) -> bool:
        if self.times == 0 or self.method not in (method, "*"):
            return False
        return self.zone is None or self.zone == zone


@dataclass(frozen=True)
class FakeRequest:
    method: str  # the API's method id, e.g. "instances.insert"
    verb: str
    path: str
    params: dict[str, str]
    body: dict[str, Any] | None
    timeout: Any


@dataclass(frozen=True)
class _Call:
    """One request, as a handler sees it."""

    method: str
    args: dict[str, str]  # from the path: project, zone, name, ...
    params: dict[str, str]  # the query
    body: dict[str, Any]

    @property
    def request_id(self) -> str:
        return self.params.get("requestId", "")


@dataclass
class _Operation:
    resource: dict[str, Any]
    polls_left: int
    effect: Callable[[], FakeOperationError | None]


@dataclass
class FakeComputeApi:
    project: str = "test-project"
    operation_polls: int = 1  # GETs an operation answers RUNNING before it is DONE
    ready_after_polls: int = 1  # instances.get answers STAGING this often before RUNNING
    public_ip: str | None = None  # every instance's address (default: one each, 203.0.113.x)
    hang_sleep_s: float = 0.0  # real seconds a hang sleeps (capped by the call's timeout)
    regions: dict[str, dict[str, Any]] = field(default_factory=dict)
    project_quotas: dict[str, dict[str, Any]] = field(default_factory=dict)
    images: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    instances: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    firewalls: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, _Operation] = field(default_factory=dict)
    requests: list[FakeRequest] = field(default_factory=list)
    rules: list[_Rule] = field(default_factory=list)
    refresh_fails: bool = False
    now: Callable[[], float] = time.time  # what creationTimestamp says
    _ids: Iterator[int] = field(default_factory=itertools.count, init=False, repr=False)
    _by_request_id: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _gets: dict[tuple[str, str], int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for region in ("us-central1", "us-east1", "europe-west4"):
            self.regions.setdefault(region, {"quotas": {}})
        self.add_image("deeplearning-platform-release", "common-cu128-ubuntu-2204-nvidia-570")

    # -- setting the scene --------------------------------------------------------------------
    def set_quota(self, region: str, metric: str, limit: float, usage: float = 0.0) -> None:
        quotas = self.regions.setdefault(region, {"quotas": {}})["quotas"]
        quotas[metric] = {"metric": metric, "limit": limit, "usage": usage}

    def set_global_quota(self, metric: str, limit: float, usage: float = 0.0) -> None:
        self.project_quotas[metric] = {"metric": metric, "limit": limit, "usage": usage}

    def add_image(
        self, project: str, family: str, name: str | None = None, disk_gb: int = 50
    ) -> None:
        name = name or f"{family}-v20260101"
        self.images[(project, family)] = {
            "kind": "compute#image",
            "name": name,
            "family": family,
            "status": "READY",
            "selfLink": f"{_BASE}projects/{project}/global/images/{name}",
            "diskSizeGb": str(disk_gb),
        }

    # -- faults ---------------------------------------------------------------------------------
    def fail_next(
        self,
        method: str,
        error: FakeHttpError | str,
        *,
        times: int | None = 1,
        zone: str | None = None,
    ) -> None:
        """Answer the next `times` calls of `method` (in `zone`) with `error`, or HANG."""
        self.rules.append(_Rule(method, error, times, zone))

    def throttle(self, method: str = "*", *, times: int = 1) -> None:
        self.fail_next(method, rate_limited(), times=times)

    def hang(self, method: str = "*", *, times: int | None = 1) -> None:
        self.fail_next(method, HANG, times=times)

    def fail_operations(
        self,
        method: str,
        error: FakeOperationError,
        *,
        zone: str | None = None,
        times: int | None = None,
    ) -> None:
        """Operations of `method` (in `zone`) end DONE with `error` instead of their effect."""
        self.rules.append(_Rule(method, error, times, zone))

    def no_capacity(self, zone: str) -> None:
        self.fail_operations("instances.insert", no_capacity_error(self.project, zone), zone=zone)

    def exceed_quota(self, metric: str, region: str, *, zone: str | None = None) -> None:
        self.fail_operations("instances.insert", quota_error(metric, region), zone=zone)

    def deny(self, code: int = 403) -> None:
        self.fail_next("*", unauthenticated() if code == 401 else permission_denied(), times=None)

    def revoke_credentials(self) -> None:
        self.deny(401)
        self.refresh_fails = True

    def clear_faults(self) -> None:
        self.rules.clear()
        self.refresh_fails = False

    def preempt(self, zone: str, name: str) -> None:
        """A spot VM taken back (its termination action is DELETE: it is simply gone)."""
        self.instances.pop((zone, name), None)

    # -- for the provider -----------------------------------------------------------------------
    def client_factory(self, project: str, timeout_s: float) -> ComputeClient:
        return ComputeClient(
            project, FakeCredentials(self), timeout_s=timeout_s, adapter=FakeComputeAdapter(self)
        )

    def timestamp(self) -> str:
        """`now` as the API writes times: RFC 3339 in Pacific time, to the millisecond."""
        pacific = datetime.timezone(datetime.timedelta(hours=-8))
        moment = datetime.datetime.fromtimestamp(self.now(), tz=pacific)
        return moment.isoformat(timespec="milliseconds")

    def calls(self, method: str) -> list[FakeRequest]:
        return [request for request in self.requests if request.method == method]

    # -- the API ----------------------------------------------------------------------------------
    def handle(
        self, verb: str, url: str, body: dict[str, Any] | None, timeout: Any
    ) -> tuple[int, Any]:
        """(HTTP status, JSON answer), or (0, HANG)."""
        parts = urlsplit(url)
        params = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        path = parts.path.removeprefix("/compute/v1/")
        method, handler, args = _route(verb, path)
        zone = args.get("zone")
        self.requests.append(FakeRequest(method, verb, path, params, body, timeout))
        for rule in self.rules:
            if rule.hits(method, zone) and not isinstance(rule.outcome, FakeOperationError):
                rule.times = None if rule.times is None else rule.times - 1
                if rule.outcome == HANG:
                    return 0, HANG
                assert isinstance(rule.outcome, FakeHttpError)
                return rule.outcome.code, rule.outcome.body()
        if handler is None:
            return 404, _not_found(path).body()
        if args.get("project") not in {self.project} | {project for project, _ in self.images}:
            return 404, _not_found(f"projects/{args.get('project')}").body()
        try:
            return 200, handler(self, _Call(method, args, params, body or {}))
        except _Answer as answer:
            return answer.error.code, answer.error.body()

    def _repeat(self, call: _Call) -> bool:
        """A retried call (same requestId): it gets the first call's operation again."""
        return bool(call.request_id) and call.request_id in self._by_request_id

    def _operation(
        self, call: _Call, target: str, zone: str | None, effect: Callable[[], object]
    ) -> dict[str, Any]:
        method = call.method
        if self._repeat(call):
            return self.operations[self._by_request_id[call.request_id]].resource
        name = f"operation-{next(self._ids)}"
        scope = f"projects/{self.project}/" + (f"zones/{zone}" if zone else "global")
        resource = {
            "kind": "compute#operation",
            "id": str(next(self._ids)),
            "name": name,
            "operationType": method.split(".")[-1],
            "targetLink": f"{_BASE}{target}",
            "status": "RUNNING",
            "progress": 0,
            "selfLink": f"{_BASE}{scope}/operations/{name}",
        }
        if zone:
            resource["zone"] = f"{_BASE}projects/{self.project}/zones/{zone}"
        failure = next(
            (
                r
                for r in self.rules
                if r.hits(method, zone) and isinstance(r.outcome, FakeOperationError)
            ),
            None,
        )
        if failure is not None and failure.times is not None:
            failure.times -= 1
        outcome = failure.outcome if failure else None

        def finish() -> FakeOperationError | None:
            if isinstance(outcome, FakeOperationError):
                return outcome
            effect()
            return None

        self.operations[name] = _Operation(resource, self.operation_polls, finish)
        if call.request_id:
            self._by_request_id[call.request_id] = name
        if self.operation_polls <= 0:
            self._poll(name)
        return resource

    def _poll(self, name: str) -> dict[str, Any]:
        operation = self.operations[name]
        if operation.resource["status"] != "DONE":
            operation.polls_left -= 1
            if operation.polls_left < 0:
                error = operation.effect()
                operation.resource.update(status="DONE", progress=100)
                if error is not None:
                    operation.resource.update(error.fields())
        return operation.resource

    def _instance_view(self, key: tuple[str, str]) -> dict[str, Any]:
        instance = self.instances[key]
        if instance["status"] == "STAGING":
            self._gets[key] = self._gets.get(key, 0) + 1
            if self._gets[key] > self.ready_after_polls:
                instance["status"] = "RUNNING"
                address = self.public_ip or f"203.0.113.{len(self._gets) % 250 + 1}"
                instance["networkInterfaces"][0]["accessConfigs"][0]["natIP"] = address
        return instance


class _Answer(Exception):
    """An error answer, raised by a handler and sent by `handle`."""

    def __init__(self, error: FakeHttpError) -> None:
        self.error = error


# -- handlers: (api, call) -> the answer's JSON, or raise _Answer(error) -------------------------
def _check_instance(api: FakeComputeApi, zone: str, body: dict[str, Any]) -> None:
    """The API's own checks that a provider bug would trip."""
    name = body.get("name", "")
    if not _NAME.match(name):
        raise _Answer(_invalid(f"Invalid value for field 'resource.name': '{name}'."))
    machine = body.get("machineType", "").rsplit("/", 1)[-1]
    if f"zones/{zone}/" not in body.get("machineType", ""):
        raise _Answer(_invalid("Invalid value for field 'resource.machineType'."))
    for key, value in body.get("labels", {}).items():
        if not (_NAME.match(key) and _LABEL.match(value)):
            raise _Answer(_invalid(f"Invalid value for field 'resource.labels': '{value}'."))
    accelerators = body.get("guestAccelerators", [])
    bundled = machine.startswith(_BUNDLED)
    if accelerators and bundled:
        raise _Answer(
            _invalid(
                f"Machine type {machine} does not support guest accelerators; its GPUs are "
                "attached automatically."
            )
        )
    scheduling = body.get("scheduling", {})
    if (accelerators or bundled) and scheduling.get("onHostMaintenance") != "TERMINATE":
        raise _Answer(_invalid("Instances with guest accelerators do not support live migration."))
    if "maxRunDuration" in scheduling and "instanceTerminationAction" not in scheduling:
        raise _Answer(_invalid("maxRunDuration requires instanceTerminationAction."))
    if scheduling.get("provisioningModel") == "SPOT" and scheduling.get("automaticRestart"):
        raise _Answer(_invalid("Spot VMs cannot have automaticRestart set to true."))
    image = body["disks"][0]["initializeParams"]["sourceImage"]
    if image not in {known["selfLink"] for known in api.images.values()}:
        raise _Answer(_not_found(image.removeprefix(_BASE)))


def _insert_instance(api: FakeComputeApi, call: _Call) -> Any:
    zone, body = call.args["zone"], call.body
    if zone.rsplit("-", 1)[0] not in api.regions:
        raise _Answer(_invalid(f"Invalid value for field 'zone': '{zone}'. Unknown zone."))
    target = f"projects/{api.project}/zones/{zone}/instances/{body.get('name')}"
    if (zone, body.get("name")) in api.instances and not api._repeat(call):
        raise _Answer(_exists(target))
    _check_instance(api, zone, body)

    def create() -> None:
        instance = json.loads(json.dumps(body))
        instance.update(
            kind="compute#instance",
            id=str(next(api._ids)),
            status="STAGING",
            zone=f"{_BASE}projects/{api.project}/zones/{zone}",
            selfLink=f"{_BASE}{target}",
            creationTimestamp=api.timestamp(),
        )
        for nic in instance.get("networkInterfaces", []):
            nic["networkIP"] = f"10.128.0.{len(api.instances) + 2}"
        api.instances[(zone, body["name"])] = instance

    return api._operation(call, target, zone, create)


def _get_instance(api: FakeComputeApi, call: _Call) -> Any:
    key = (call.args["zone"], call.args["name"])
    if key not in api.instances:
        raise _Answer(_not_found(f"projects/{api.project}/zones/{key[0]}/instances/{key[1]}"))
    return api._instance_view(key)


def _delete_instance(api: FakeComputeApi, call: _Call) -> Any:
    key = (call.args["zone"], call.args["name"])
    target = f"projects/{api.project}/zones/{key[0]}/instances/{key[1]}"
    if key not in api.instances and not api._repeat(call):
        raise _Answer(_not_found(target))
    if key in api.instances:
        api.instances[key]["status"] = "STOPPING"
    return api._operation(call, target, key[0], lambda: api.instances.pop(key, None))


def _matches(resource: dict[str, Any], expression: str) -> bool:
    """The filter forms gpujobs uses: `labels.K:*`, `labels.K = V`, `name eq RE2`."""
    if not expression:
        return True
    found = re.match(r"^\s*([\w.-]+)\s*(:|=|!=|eq|ne)\s*(.+?)\s*$", expression)
    if not found:
        raise _Answer(_invalid(f"Invalid list filter expression '{expression}'."))
    path, operator, literal = found.groups()
    value: Any = resource
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    literal = literal.strip("'\"")
    if operator == ":":
        return value is not None if literal == "*" else literal in str(value)
    if operator in ("eq", "ne"):
        return (re.fullmatch(literal, str(value or "")) is not None) == (operator == "eq")
    return (str(value) == literal) == (operator == "=")


def _aggregated(api: FakeComputeApi, call: _Call) -> Any:
    items: dict[str, Any] = {}
    for key, instance in sorted(api.instances.items()):
        if _matches(instance, call.params.get("filter", "")):
            scope = items.setdefault(f"zones/{key[0]}", {"instances": []})
            scope["instances"].append(api._instance_view(key))
    empty = {
        "code": "NO_RESULTS_ON_PAGE",
        "message": "There are no results for scope on this page.",
    }
    for region in api.regions:
        for zone in (f"{region}-a", f"{region}-b"):
            items.setdefault(f"zones/{zone}", {"warning": empty})
    return {
        "kind": "compute#instanceAggregatedList",
        "id": f"projects/{api.project}/aggregated/instances",
        "items": items,
    }


def _insert_firewall(api: FakeComputeApi, call: _Call) -> Any:
    name, body = call.body.get("name", ""), call.body
    target = f"projects/{api.project}/global/firewalls/{name}"
    if not _NAME.match(name):
        raise _Answer(_invalid(f"Invalid value for field 'resource.name': '{name}'."))
    if name in api.firewalls and not api._repeat(call):
        raise _Answer(_exists(target))
    # GCP would read an ingress rule without a source as 0.0.0.0/0; the fake refuses it, so a
    # rule gpujobs makes can never be open to the world unnoticed.
    has_source = body.get("sourceRanges") or body.get("sourceTags")
    if not has_source or not body.get("allowed"):
        raise _Answer(_invalid("A firewall rule needs sourceRanges or sourceTags, and allowed."))

    def create() -> None:
        api.firewalls[name] = dict(
            body,
            kind="compute#firewall",
            selfLink=f"{_BASE}{target}",
            creationTimestamp=api.timestamp(),
        )

    return api._operation(call, target, None, create)


def _firewall(api: FakeComputeApi, call: _Call) -> Any:
    name = call.args["name"]
    target = f"projects/{api.project}/global/firewalls/{name}"
    if name not in api.firewalls and not api._repeat(call):
        raise _Answer(_not_found(target))
    if call.method == "firewalls.get":
        return api.firewalls[name]
    if call.method == "firewalls.patch":
        return api._operation(call, target, None, lambda: api.firewalls[name].update(call.body))
    return api._operation(call, target, None, lambda: api.firewalls.pop(name, None))


def _list_firewalls(api: FakeComputeApi, call: _Call) -> Any:
    wanted = call.params.get("filter", "")
    rules = [rule for _, rule in sorted(api.firewalls.items()) if _matches(rule, wanted)]
    return {"kind": "compute#firewallList", "items": rules}


def _get_operation(api: FakeComputeApi, call: _Call) -> Any:
    if call.args["name"] not in api.operations:
        raise _Answer(_not_found(f"operations/{call.args['name']}"))
    return api._poll(call.args["name"])


def _quota_list(quotas: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [dict(q, limit=float(q["limit"]), usage=float(q["usage"])) for q in quotas.values()]


def _region(api: FakeComputeApi, name: str) -> dict[str, Any]:
    return {
        "kind": "compute#region",
        "name": name,
        "status": "UP",
        "zones": [f"{_BASE}projects/{api.project}/zones/{name}-{z}" for z in "ab"],
        "quotas": _quota_list(api.regions[name]["quotas"]),
    }


def _get_region(api: FakeComputeApi, call: _Call) -> Any:
    if call.args["region"] not in api.regions:
        raise _Answer(_not_found(f"projects/{api.project}/regions/{call.args['region']}"))
    return _region(api, call.args["region"])


def _list_regions(api: FakeComputeApi, call: _Call) -> Any:
    return {"kind": "compute#regionList", "items": [_region(api, r) for r in sorted(api.regions)]}


def _get_project(api: FakeComputeApi, call: _Call) -> Any:
    quotas = _quota_list(api.project_quotas)
    return {"kind": "compute#project", "name": api.project, "quotas": quotas}


def _image_from_family(api: FakeComputeApi, call: _Call) -> Any:
    key = (call.args["project"], call.args["family"])
    if key not in api.images:
        raise _Answer(_not_found(f"projects/{key[0]}/global/images/family/{key[1]}"))
    return api.images[key]


_P = r"projects/(?P<project>[^/]+)"
_ROUTES: list[tuple[str, re.Pattern[str], str, Callable[..., Any]]] = [
    (verb, re.compile(f"^{_P}{pattern}$"), method, handler)
    for verb, pattern, method, handler in [
        ("POST", r"/zones/(?P<zone>[^/]+)/instances", "instances.insert", _insert_instance),
        (
            "GET",
            r"/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)",
            "instances.get",
            _get_instance,
        ),
        (
            "DELETE",
            r"/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)",
            "instances.delete",
            _delete_instance,
        ),
        ("GET", r"/aggregated/instances", "instances.aggregatedList", _aggregated),
        (
            "GET",
            r"/zones/(?P<zone>[^/]+)/operations/(?P<name>[^/]+)",
            "zoneOperations.get",
            _get_operation,
        ),
        ("POST", r"/global/firewalls", "firewalls.insert", _insert_firewall),
        ("GET", r"/global/firewalls", "firewalls.list", _list_firewalls),
        ("GET", r"/global/firewalls/(?P<name>[^/]+)", "firewalls.get", _firewall),
        ("PATCH", r"/global/firewalls/(?P<name>[^/]+)", "firewalls.patch", _firewall),
        ("DELETE", r"/global/firewalls/(?P<name>[^/]+)", "firewalls.delete", _firewall),
        ("GET", r"/global/operations/(?P<name>[^/]+)", "globalOperations.get", _get_operation),
        ("GET", r"/regions/(?P<region>[^/]+)", "regions.get", _get_region),
        ("GET", r"/regions", "regions.list", _list_regions),
        ("GET", r"", "projects.get", _get_project),
        (
            "GET",
            r"/global/images/family/(?P<family>[^/]+)",
            "images.getFromFamily",
            _image_from_family,
        ),
    ]
]


def _route(verb: str, path: str) -> tuple[str, Callable[..., Any] | None, dict[str, str]]:
    for route_verb, pattern, method, handler in _ROUTES:
        found = pattern.match(path)
        if found and route_verb == verb:
            return method, handler, found.groupdict()
    return f"unknown:{verb} {path}", None, {}


class FakeCredentials(google_credentials.Credentials):
    """A token that never expires; refreshing it fails once the fake revokes it."""

    def __init__(self, api: FakeComputeApi) -> None:
        super().__init__()
        self.api = api
        self.token = "fake-token"

    def refresh(self, request: Any) -> None:
        if self.api.refresh_fails:
            raise google_auth_exceptions.RefreshError(
                "invalid_grant: Token has been expired or revoked."
            )
        self.token = "fake-token"


class FakeComputeAdapter(BaseAdapter):
    """requests' transport seam: answers https://compute.googleapis.com from a FakeComputeApi."""

    def __init__(self, api: FakeComputeApi) -> None:
        super().__init__()
        self.api = api

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        url = request.url or ""
        if not url.startswith(API_ROOT):
            raise requests.ConnectionError(f"the fake Compute API does not serve {url}")
        raw = request.body or b""
        body = json.loads(raw) if raw else None
        status, answer = self.api.handle(request.method or "GET", url, body, timeout)
        if answer == HANG:
            limit = timeout[1] if isinstance(timeout, tuple) else timeout
            if limit is None:
                raise AssertionError(f"{url} was sent without a timeout: it would hang")
            time.sleep(min(self.api.hang_sleep_s, float(limit)))
            raise requests.ReadTimeout(f"fake: no answer within {limit}s", request=request)
        response = requests.Response()
        response.status_code = status
        response.reason = _STATUS_TEXT.get(status, "OK")
        response._content = json.dumps(answer).encode()
        response.headers["Content-Type"] = "application/json; charset=UTF-8"
        response.encoding = "utf-8"
        response.url = url
        response.request = request
        return response

    def close(self) -> None:
        pass
