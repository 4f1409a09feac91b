"""The Paperspace REST API (https://api.paperspace.com/v1) over one httpx.Client: the only place in
gpujobs that speaks HTTP to Paperspace, and the one place its errors become gpujobs errors.

- Auth: `Authorization: Bearer <API key>`; the key lives in that header only (never in a repr,
  a message or a log line; a message the API echoes is scrubbed of it).
- Timeouts: connect 10 s, read/write/pool 30 s.
- Transient faults (429, 5xx, timeouts, dropped connections) go through `call_with_retry`, the
  one retry policy; a `Retry-After` on a 429/503 is waited out first (capped at 30 s). A create
  (POST) is repeated only when the API cannot have acted on it (429, no connection): after a 5xx
  or a timeout it may have, so `UnconfirmedCreateError` hands the decision to the caller, who
  looks the resource up by name before creating it again.
- Lists follow `nextPage` (`?after=`) until `hasMore` is false.
- The error table is `translate()`: 401/403 -> ProviderAuthError naming PAPERSPACE_API_KEY;
  capacity wording -> NoCapacityError; machine-limit wording -> QuotaExceededError; the rest
  -> ProvisioningError with the API's own code and message. 404 is an answer, not an error,
  where the caller says so (a machine or script already gone).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from gpujobs.clock import Clock, SystemClock
from gpujobs.errors import (
    NoCapacityError,
    ProviderAuthError,
    ProviderError,
    ProvisioningError,
    QuotaExceededError,
)
from gpujobs.providers.paperspace.credentials import HOW_TO_SET, ApiKey
from gpujobs.providers.paperspace.models import (
    ApiError,
    Machine,
    MachineAvailability,
    MachineCreate,
    MachineMutation,
    OsTemplate,
    Page,
    PrivateNetwork,
    PrivateNetworkCreate,
    StartupScript,
    StartupScriptCreate,
)
from gpujobs.retry import call_with_retry

API_URL = "https://api.paperspace.com/v1"
# The availability endpoint as the current reference documents it (docs.digitalocean.com,
# "Machine Types", generated 2026); older notes call it /machines/availability.
AVAILABILITY_PATH = "/machine-availability"
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
PAGE_LIMIT = 120  # the API's maximum
MAX_PAGES = 1000
RETRY_AFTER_CAP_S = 30.0
STATUS_PAGE = "https://status.paperspace.com"

_CAPACITY = re.compile(
    r"capacity|(not|no|un)\s*available|availability|out of stock|sold out|insufficient"
    r"|no (machines|gpus?|hosts?)",
    re.IGNORECASE,
)
_LIMIT = re.compile(r"(machine|instance)s? limit|max(imum)? (number of )?machines", re.IGNORECASE)

M = TypeVar("M", bound=BaseModel)


class ApiUnreachableError(ProviderError):
    """Paperspace kept failing or timing out past the retry policy."""


class UnconfirmedCreateError(ApiUnreachableError):
    """A create that may or may not have happened (5xx or timeout after the request was sent)."""


class _Transient(Exception):
    def __init__(self, what: str, *, delivered: bool) -> None:
        super().__init__(what)
        self.what = what
        self.delivered = delivered  # the API may have acted on the request


def translate(status: int, error: ApiError, action: str, key: ApiKey) -> ProviderError:
    """The one table from an HTTP error answer to a gpujobs error, keeping what Paperspace said."""
    said = f"HTTP {status} {error.code or ''}".strip()
    if error.message:
        said += f": {_scrub(error.message, key)}"
    if status in (401, 403):
        return ProviderAuthError(
            f"paperspace refused the API key from {key.source} while {action} ({said}); "
            f"{HOW_TO_SET}"
        )
    if _LIMIT.search(error.message):
        return QuotaExceededError(
            f"paperspace refused {action} ({said}): the team's machine limit is reached; "
            "delete unused machines or ask Paperspace support to raise the limit"
        )
    if status in (400, 409, 422) and _CAPACITY.search(error.message):
        return NoCapacityError(f"paperspace has no capacity for {action} ({said})")
    return ProvisioningError(f"paperspace refused {action} ({said})")


class PaperspaceClient:
    """Typed calls to the endpoints gpujobs uses. `transport` is the test seam (respx or
    httpx.MockTransport); `clock` makes retry waits fake in tests."""

    def __init__(
        self,
        key: ApiKey,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Clock | None = None,
        base_url: str = API_URL,
    ) -> None:
        self._key = key
        self._clock = clock or SystemClock()
        self._http = httpx.Client(
            base_url=base_url,
            timeout=TIMEOUT,
            transport=transport,
            headers={"Authorization": f"Bearer {key.value}", "Accept": "application/json"},
        )

    def __repr__(self) -> str:
        return f"PaperspaceClient(key from {self._key.source})"

    def close(self) -> None:
        self._http.close()

    # -- machines ---------------------------------------------------------------------------------
    def list_machines(self, name: str | None = None) -> list[Machine]:
        params = {"name": name} if name else {}
        return self._all("/machines", Machine, action="listing machines", params=params)

    def get_machine(self, machine_id: str) -> Machine | None:
        """The machine, or None once it is gone (404)."""
        action = f"reading machine {machine_id}"
        response = self._send_or_404("GET", f"/machines/{machine_id}", action=action)
        return None if response is None else _parse(Machine, response, action)

    def create_machine(self, body: MachineCreate) -> Machine:
        action = f"creating machine {body.name} ({body.machine_type} in {body.region})"
        response = self._send(
            "POST", "/machines", action=action, json=body.wire(), repeatable=False
        )
        return _mutated_machine(response, action)

    def delete_machine(self, machine_id: str) -> bool:
        """Ask for the machine's deletion; False when it was already gone (404)."""
        action = f"deleting machine {machine_id}"
        return self._send_or_404("DELETE", f"/machines/{machine_id}", action=action) is not None

    def machine_available(self, machine_type: str, region: str) -> bool:
        action = f"checking {machine_type} availability in {region}"
        response = self._send(
            "GET",
            AVAILABILITY_PATH,
            action=action,
            params={"machineType": machine_type, "region": region},
        )
        return _parse(MachineAvailability, response, action).available

    def list_os_templates(self) -> list[OsTemplate]:
        return self._all("/os-templates", OsTemplate, action="listing OS templates")

    # -- startup scripts --------------------------------------------------------------------------
    def list_startup_scripts(self, name: str | None = None) -> list[StartupScript]:
        params = {"name": name} if name else {}
        return self._all(
            "/startup-scripts", StartupScript, action="listing startup scripts", params=params
        )

    def create_startup_script(self, body: StartupScriptCreate) -> StartupScript:
        action = f"creating startup script {body.name}"
        response = self._send(
            "POST", "/startup-scripts", action=action, json=body.wire(), repeatable=False
        )
        return _parse(StartupScript, response, action)

    def delete_startup_script(self, script_id: str) -> bool:
        """False when it was already gone (404)."""
        action = f"deleting startup script {script_id}"
        return (
            self._send_or_404("DELETE", f"/startup-scripts/{script_id}", action=action) is not None
        )

    # -- private networks -------------------------------------------------------------------------
    def list_private_networks(self, name: str | None = None) -> list[PrivateNetwork]:
        params = {"name": name} if name else {}
        return self._all(
            "/private-networks", PrivateNetwork, action="listing private networks", params=params
        )

    def create_private_network(self, body: PrivateNetworkCreate) -> PrivateNetwork:
        action = f"creating private network {body.name} in {body.region}"
        response = self._send(
            "POST", "/private-networks", action=action, json=body.wire(), repeatable=False
        )
        return _parse(PrivateNetwork, response, action)

    def delete_private_network(self, network_id: str) -> bool:
        """False when it was already gone (404). Paperspace refuses while machines are on it."""
        action = f"deleting private network {network_id}"
        path = f"/private-networks/{network_id}"
        return self._send_or_404("DELETE", path, action=action) is not None

    # -- plumbing ---------------------------------------------------------------------------------
    def _all(
        self, path: str, item: type[M], *, action: str, params: dict[str, str] | None = None
    ) -> list[M]:
        """Every item of a list endpoint, following its cursor to the last page."""
        items: list[M] = []
        seen: set[str] = set()
        after: str | None = None
        for _ in range(MAX_PAGES):
            query: dict[str, Any] = {**(params or {}), "limit": PAGE_LIMIT}
            if after:
                query["after"] = after
            response = self._send("GET", path, action=action, params=query)
            page = _parse(Page[item], response, action)  # type: ignore[valid-type]
            items.extend(page.items)
            if not page.has_more or not page.next_page:
                return items
            if page.next_page in seen:
                raise ProviderError(f"paperspace repeated a page cursor while {action}")
            seen.add(page.next_page)
            after = page.next_page
        raise ProviderError(f"paperspace answered more than {MAX_PAGES} pages while {action}")

    def _send_or_404(self, method: str, path: str, *, action: str) -> httpx.Response | None:
        """The answer, or None when the thing is not (or no longer) there."""
        response = self._attempts(method, path, action=action)
        return None if response.status_code == 404 else self._checked(response, action)

    def _send(
        self,
        method: str,
        path: str,
        *,
        action: str,
        params: dict[str, Any] | None = None,
        json: dict[str, object] | None = None,
        repeatable: bool = True,
    ) -> httpx.Response:
        response = self._attempts(
            method, path, action=action, params=params, json=json, repeatable=repeatable
        )
        return self._checked(response, action)

    def _checked(self, response: httpx.Response, action: str) -> httpx.Response:
        if response.is_success:
            return response
        raise translate(response.status_code, _error_body(response), action, self._key)

    def _attempts(
        self,
        method: str,
        path: str,
        *,
        action: str,
        params: dict[str, Any] | None = None,
        json: dict[str, object] | None = None,
        repeatable: bool = True,
    ) -> httpx.Response:
        """The request, through the retry policy: transient faults are retried, any other
        answer (success or error) is returned."""
        waits: list[float] = []  # a Retry-After, waited out before the next attempt

        def attempt() -> httpx.Response:
            if waits:
                self._clock.sleep(waits.pop())
            try:
                response = self._http.request(method, path, params=params, json=json)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                raise _Transient(exc.__class__.__name__, delivered=False) from exc
            except httpx.TransportError as exc:  # read timeout, dropped connection
                raise _Transient(exc.__class__.__name__, delivered=True) from exc
            if response.status_code == 429 or response.status_code >= 500:
                wait = _retry_after(response, self._clock.now)
                if wait is not None:
                    waits.append(wait)
                raise _Transient(
                    f"HTTP {response.status_code}", delivered=response.status_code != 429
                )
            return response

        def is_transient(exc: BaseException) -> bool:
            return isinstance(exc, _Transient) and (repeatable or not exc.delivered)

        try:
            return call_with_retry(attempt, is_transient=is_transient, clock=self._clock)
        except _Transient as exc:
            if not repeatable and exc.delivered:
                raise UnconfirmedCreateError(
                    f"paperspace did not confirm {action} ({exc.what}); it may have happened"
                ) from exc
            raise ApiUnreachableError(
                f"paperspace did not answer {action} ({exc.what}, after retries); its API may "
                f"be down or slow: see {STATUS_PAGE} and try again"
            ) from exc


def _parse(model: type[M], response: httpx.Response, action: str) -> M:
    try:
        return model.model_validate(response.json())
    except (ValueError, ValidationError) as exc:
        raise ProviderError(
            f"paperspace answered {action} with something gpujobs cannot read "
            f"(HTTP {response.status_code}, {exc.__class__.__name__})"
        ) from exc


def _mutated_machine(response: httpx.Response, action: str) -> Machine:
    """POST /machines answers {"event", "data": machine} (the OpenAPI document); accept a bare
    machine too, as some older examples show."""
    body = _json(response)
    if isinstance(body, dict) and "data" in body:
        return _parse(MachineMutation, response, action).data
    return _parse(Machine, response, action)


def _json(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def _error_body(response: httpx.Response) -> ApiError:
    body = _json(response)
    if isinstance(body, dict):
        try:
            return ApiError.model_validate(body)
        except ValidationError:
            pass
    return ApiError(code=response.reason_phrase, message=response.text[:200])


def _retry_after(response: httpx.Response, now: Callable[[], float]) -> float | None:
    """Seconds the API asked us to wait (a number or an HTTP date), capped; None if not said."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def _scrub(text: str, key: ApiKey) -> str:
    return text.replace(key.value, "***") if key.value else text
