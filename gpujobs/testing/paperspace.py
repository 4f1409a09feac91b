"""A fake Paperspace API (https://api.paperspace.com/v1) for tests, served through respx.

`FakePaperspace` keeps machines, startup scripts and OS templates in memory and answers with the
API's response shapes (from its OpenAPI document): lists as {"items", "hasMore", "nextPage"},
create and delete as {"event", "data": machine}, errors as {"code", "message"}. Give a provider
`transport=fake.transport()`, or `fake.mount(router)` on a respx router of your own.

Behaviour:
- Bearer auth: any other key than `api_key` gets 401.
- A new machine is "provisioning" without an address, then "starting", then "ready" with a public
  IP after `ready_after_polls` reads of GET /machines/{id}. A deleted one reads "stopping" for
  `gone_after_polls` reads, then 404.
- A private network gets the next 10.N.0.0/24; a machine created on it (`networkId`) gets its
  private address there, and is refused when the network is in another region. Deleting a network
  that a machine (even one being deleted) is on is refused with 400, as Paperspace does.
- Lists honour `limit` (capped at `page_size` when set, to force pagination) and the `after`
  cursor. The `name` filter matches by substring, deliberately looser than the provider's exact
  check.

Faults (`fail`), keyed by "<METHOD> <route>" with routes "/machines", "/machines/{id}",
"/machine-availability", "/os-templates", "/startup-scripts", "/startup-scripts/{id}",
"/private-networks", "/private-networks/{id}":
- `fail("POST /machines", status=429, headers={"Retry-After": "3"}, times=2)`: throttle twice;
- `fail("GET /machines", error=httpx.ReadTimeout, times=99)`: hang (the client's timeout fires);
- `fail("POST /machines", status=400, message="no capacity ...")`: a capacity refusal;
- `fail(..., after=True)`: the request takes effect, then the answer is lost (5xx or timeout);
- `fail(..., skip=1)`: serve the first matching request, fault the next ones.
Also `unavailable.add((machine_type, region))`, `power_off(machine_id)`, `add_machine(name)`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import respx

from gpujobs.providers.paperspace.client import API_URL, AVAILABILITY_PATH

Json = dict[str, Any]
Handler = Callable[..., httpx.Response]
_STAMP = "2026-01-01T00:00:00.000Z"


@dataclass
class Fault:
    key: str
    times: int
    status: int = 500
    message: str = "injected fault"
    headers: dict[str, str] = field(default_factory=dict)
    error: type[httpx.TransportError] | None = None
    after: bool = False
    skip: int = 0  # matching requests served normally before this fault applies


@dataclass
class Recorded:
    method: str
    route: str
    params: dict[str, str]
    body: Json | None


class FakePaperspace:
    def __init__(
        self,
        *,
        api_key: str = "ps-test-key",
        ready_after_polls: int = 2,
        gone_after_polls: int = 1,
        page_size: int | None = None,
    ) -> None:
        self.api_key = api_key
        self.ready_after_polls = ready_after_polls
        self.gone_after_polls = gone_after_polls
        self.page_size = page_size
        self.machines: dict[str, Json] = {}  # id -> machine as the API shows it
        self.scripts: dict[str, Json] = {}  # id -> startup script, with its "script" text
        self.networks: dict[str, Json] = {}  # id -> private network
        self.templates: list[Json] = [
            _template("tml0box22", "ML-in-a-Box", "Ubuntu 22.04"),
            _template("tub22srv", "Ubuntu 22.04 Server", "Ubuntu 22.04"),
            _template("tub20srv", "Ubuntu 20.04 Server", "Ubuntu 20.04"),
        ]
        self.unavailable: set[tuple[str, str]] = set()  # (machine type, region)
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self._polls: dict[str, int] = {}
        self._ids = itertools.count(1)
        self.router = respx.Router(base_url=API_URL, assert_all_called=False)
        self.mount(self.router)

    # -- wiring -----------------------------------------------------------------------------------
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.router.handler)

    def mount(self, router: respx.Router) -> None:
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/machines", self._list_machines),
            ("POST", "/machines", self._create_machine),
            ("GET", "/machines/{id}", self._get_machine),
            ("DELETE", "/machines/{id}", self._delete_machine),
            ("GET", AVAILABILITY_PATH, self._availability),
            ("GET", "/os-templates", self._list_templates),
            ("GET", "/startup-scripts", self._list_scripts),
            ("POST", "/startup-scripts", self._create_script),
            ("DELETE", "/startup-scripts/{id}", self._delete_script),
            ("GET", "/private-networks", self._list_networks),
            ("POST", "/private-networks", self._create_network),
            ("DELETE", "/private-networks/{id}", self._delete_network),
        ]
        for method, route, handler in routes:
            # "/x/{id}" becomes a regex whose group reaches the handler as `item`.
            regex = "^" + route.replace("{id}", "(?P<item>[^/]+)") + "$"
            side_effect = self._serve(method, route, handler)
            router.route(method=method, path__regex=regex).mock(side_effect=side_effect)

    def fail(
        self,
        key: str,
        *,
        status: int = 500,
        message: str = "injected fault",
        headers: dict[str, str] | None = None,
        error: type[httpx.TransportError] | None = None,
        times: int = 1,
        after: bool = False,
        skip: int = 0,
    ) -> None:
        self.faults.append(Fault(key, times, status, message, headers or {}, error, after, skip))

    def calls(self, key: str) -> list[Recorded]:
        method, route = key.split(" ", 1)
        return [r for r in self.requests if (r.method, r.route) == (method, route)]

    # -- state helpers ----------------------------------------------------------------------------
    def add_machine(self, name: str, *, state: str = "ready", **fields: Any) -> str:
        machine_id = f"ps{next(self._ids):06d}"
        self.machines[machine_id] = _machine(machine_id, name, state=state, **fields)
        return machine_id

    def power_off(self, machine_id: str) -> None:
        self.machines[machine_id].update(state="off", publicIp=None)

    def live_machines(self) -> list[Json]:
        return [m for m in self.machines.values() if not m.get("_deleting")]

    # -- the API ----------------------------------------------------------------------------------
    def _serve(self, method: str, route: str, handler: Handler) -> Handler:
        key = f"{method} {route}"

        def serve(request: httpx.Request, **path: str) -> httpx.Response:
            body = _body(request)
            params = dict(request.url.params)
            self.requests.append(Recorded(method, route, params, body))
            if request.headers.get("Authorization") != f"Bearer {self.api_key}":
                return _error(401, "UNAUTHORIZED", "Invalid API key")
            fault = self._take_fault(key)
            if fault is not None and not fault.after:
                return _inject(fault, request)
            response = handler(params=params, body=body, **path)
            if fault is not None:
                return _inject(fault, request)
            return response

        return serve

    def _take_fault(self, key: str) -> Fault | None:
        for fault in self.faults:
            if fault.key != key or fault.times <= 0:
                continue
            if fault.skip > 0:
                fault.skip -= 1
                return None
            fault.times -= 1
            return fault
        return None

    def _list_machines(self, params: dict[str, str], body: Json | None) -> httpx.Response:
        items = [_public(m) for m in self.live_machines()]
        if params.get("name"):
            items = [m for m in items if params["name"] in m["name"]]
        return self._page(items, params)

    def _create_machine(self, params: dict[str, str], body: Json | None) -> httpx.Response:
        body = body or {}
        required = ("name", "machineType", "templateId", "diskSize", "region")
        missing = [name for name in required if name not in body]
        if missing:
            return _error(400, "BAD_REQUEST", f"missing {', '.join(missing)}")
        if (body["machineType"], body["region"]) in self.unavailable:
            message = f"There is no capacity for {body['machineType']} in {body['region']}"
            return _error(400, "BAD_REQUEST", message)
        network_id = body.get("networkId")
        network = self.networks.get(network_id) if network_id else None
        if network_id and (network is None or network["region"] != body["region"]):
            return _error(
                400, "BAD_REQUEST", f"no private network {network_id} in {body['region']}"
            )
        machine_id = f"ps{next(self._ids):06d}"
        machine = _machine(machine_id, body["name"], state="provisioning", request=body)
        if network is not None:
            on_it = sum(1 for m in self.machines.values() if m["networkId"] == network_id)
            prefix = network["network"].rsplit(".", 1)[0]
            machine.update(networkId=network_id, privateIp=f"{prefix}.{on_it + 2}")
        self.machines[machine_id] = machine
        script_id = body.get("startupScriptId")
        if script_id in self.scripts:
            self.scripts[script_id]["assignedMachineIds"].append(machine_id)
        return httpx.Response(
            200, json={"event": _event("create", machine_id), "data": _public(machine)}
        )

    def _get_machine(self, params: dict[str, str], body: Json | None, item: str) -> httpx.Response:
        machine = self.machines.get(item)
        if machine is None:
            return _error(404, "NOT_FOUND", "Machine not found")
        polls = self._polls[item] = self._polls.get(item, 0) + 1
        if machine.get("_deleting"):
            if polls >= self.gone_after_polls:
                del self.machines[item]
                return _error(404, "NOT_FOUND", "Machine not found")
        elif machine["state"] in ("provisioning", "starting"):
            if polls >= self.ready_after_polls:
                octet = int(item[2:]) % 250 + 1
                machine.update(state="ready", publicIp=f"203.0.113.{octet}")
            else:
                machine["state"] = "starting"
        return httpx.Response(200, json=_public(machine))

    def _delete_machine(
        self, params: dict[str, str], body: Json | None, item: str
    ) -> httpx.Response:
        machine = self.machines.get(item)
        if machine is None or machine.get("_deleting"):
            return _error(404, "NOT_FOUND", "Machine not found")
        machine.update(_deleting=True, state="stopping")
        self._polls[item] = 0
        return httpx.Response(
            200, json={"event": _event("deactivate", item), "data": _public(machine)}
        )

    def _availability(self, params: dict[str, str], body: Json | None) -> httpx.Response:
        if "machineType" not in params or "region" not in params:
            return _error(400, "BAD_REQUEST", "machineType and region are required")
        available = (params["machineType"], params["region"]) not in self.unavailable
        return httpx.Response(200, json={"available": available})

    def _list_templates(self, params: dict[str, str], body: Json | None) -> httpx.Response:
        return self._page(list(self.templates), params)

    def _list_scripts(self, params: dict[str, str], body: Json | None) -> httpx.Response:
        items = [_script_public(s) for s in self.scripts.values()]
        if params.get("name"):
            items = [s for s in items if params["name"] in s["name"]]
        return self._page(items, params)

    def _create_script(self, params: dict[str, str], body: Json | None) -> httpx.Response:
        body = body or {}
        if not body.get("name") or not body.get("script"):
            return _error(400, "BAD_REQUEST", "name and script are required")
        script_id = f"ss{next(self._ids):06d}"
        self.scripts[script_id] = {
            "id": script_id,
            "name": body["name"],
            "script": body["script"],
            "description": None,
            "isEnabled": True,
            "isRunOnce": bool(body.get("isRunOnce", False)),
            "assignedMachineIds": [],
            "dtCreated": _STAMP,
            "dtDeleted": None,
        }
        return httpx.Response(200, json=_script_public(self.scripts[script_id]))

    def _delete_script(
        self, params: dict[str, str], body: Json | None, item: str
    ) -> httpx.Response:
        script = self.scripts.pop(item, None)
        if script is None:
            return _error(404, "NOT_FOUND", "Startup script not found")
        return httpx.Response(200, json=_script_public(script))

    def _list_networks(self, params: dict[str, str], body: Json | None) -> httpx.Response:
        items = list(self.networks.values())
        if params.get("name"):
            items = [n for n in items if params["name"] in n["name"]]
        return self._page(items, params)

    def _create_network(self, params: dict[str, str], body: Json | None) -> httpx.Response:
        body = body or {}
        if not body.get("name") or body.get("region") not in ("ny2", "ca1", "ams1"):
            return _error(400, "BAD_REQUEST", "name and a region (ny2, ca1, ams1) are required")
        number = next(self._ids)
        network_id = f"pn{number:06d}"
        self.networks[network_id] = {
            "id": network_id,
            "name": body["name"],
            "region": body["region"],
            "network": f"10.{number % 250}.0.0",
            "netmask": "255.255.255.0",
            "dtCreated": _STAMP,
            "dtDeleted": None,
        }
        return httpx.Response(200, json=self.networks[network_id])

    def _delete_network(
        self, params: dict[str, str], body: Json | None, item: str
    ) -> httpx.Response:
        if item not in self.networks:
            return _error(404, "NOT_FOUND", "Private network not found")
        if any(m["networkId"] == item for m in self.machines.values()):
            return _error(400, "BAD_REQUEST", "Private network has machines on it")
        return httpx.Response(200, json=self.networks.pop(item))

    def _page(self, items: list[Json], params: dict[str, str]) -> httpx.Response:
        limit = int(params.get("limit", 20))
        if self.page_size:
            limit = min(limit, self.page_size)
        start = int(params.get("after", 0))
        chunk = items[start : start + limit]
        more = start + limit < len(items)
        page = {"items": chunk, "hasMore": more, "nextPage": str(start + limit) if more else None}
        return httpx.Response(200, json=page)


def _machine(
    machine_id: str, name: str, *, state: str, request: Json | None = None, **fields: Any
) -> Json:
    request = request or {}
    machine: Json = {
        "id": machine_id,
        "name": name,
        "state": state,
        "os": "Ubuntu 22.04",
        "machineType": request.get("machineType", "A4000"),
        "agentType": "LinuxHost",
        "cpus": 8,
        "ram": 48 * 2**30,
        "storageTotal": int(request.get("diskSize", 100)) * 2**30,
        "storageUsed": 0,
        "accelerators": [{"name": "A4000", "memory": 16 * 2**30, "count": 1}],
        "region": request.get("region", "ny2"),
        "privateIp": "10.0.0.2",
        "networkId": None,
        "publicIp": "203.0.113.200" if state == "ready" else None,
        "publicIpType": request.get("publicIpType", "dynamic"),
        "autoShutdownEnabled": request.get("autoShutdownEnabled", False),
        "autoShutdownTimeout": request.get("autoShutdownTimeout"),
        "autoShutdownForce": request.get("autoShutdownForce"),
        "autoSnapshotEnabled": False,
        "autoSnapshotFrequency": None,
        "autoSnapshotSaveCount": None,
        "updatesPending": False,
        "restorePointEnabled": False,
        "restorePointFrequency": None,
        "restorePointSnapshotId": None,
        "usageRate": 0.76,
        "storageRate": 0.0,
        "dtCreated": _STAMP,
        "dtModified": _STAMP,
        "dtDeleted": None,
        "reservation": None,
        "_request": request,  # what was asked for, for assertions (not shown by the API)
    }
    machine.update(fields)
    return machine


def _public(machine: Json) -> Json:
    return {key: value for key, value in machine.items() if not key.startswith("_")}


def _script_public(script: Json) -> Json:
    return {key: value for key, value in script.items() if key != "script"}


def _template(template_id: str, name: str, os_label: str) -> Json:
    types = ("A4000", "A5000", "A6000", "A100-80G", "H100", "P4000", "RTX4000", "C5")
    return {
        "id": template_id,
        "name": name,
        "agentType": "LinuxHost",
        "operatingSystemLabel": os_label,
        "defaultSizeGb": 50,
        "dtCreated": _STAMP,
        "availableMachineTypes": [{"machineTypeLabel": t, "isAvailable": True} for t in types],
    }


def _event(name: str, machine_id: str) -> Json:
    return {
        "id": f"ev-{name}-{machine_id}",
        "name": name,
        "state": "new",
        "machineId": machine_id,
        "dtCreated": _STAMP,
        "dtStarted": None,
        "dtFinished": None,
        "error": None,
    }


def _error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": message})


def _inject(fault: Fault, request: httpx.Request) -> httpx.Response:
    if fault.error is not None:
        raise fault.error(f"{fault.message} ({fault.key})", request=request)
    code = {429: "TOO_MANY_REQUESTS", 400: "BAD_REQUEST"}.get(fault.status, "INTERNAL_SERVER_ERROR")
    return httpx.Response(
        fault.status, json={"code": code, "message": fault.message}, headers=fault.headers
    )


def _body(request: httpx.Request) -> Json | None:
    if not request.content:
        return None
    value = json.loads(request.content)
    return value if isinstance(value, dict) else None
