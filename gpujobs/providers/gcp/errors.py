"""The GCP error table: what the Compute API said -> what gpujobs does about it. The one place
that decides; every message keeps the cloud's own words and codes ("what the cloud said").

| the API said                                              | gpujobs                       |
|-----------------------------------------------------------|-------------------------------|
| ZONE_RESOURCE_POOL_EXHAUSTED[_WITH_DETAILS], "does not    | NoCapacityError (fail over)   |
|   have enough resources available"                        |                               |
| QUOTA_EXCEEDED, quotaExceeded, "Quota 'X' exceeded"       | QuotaExceededError (fail over)|
| 429, rateLimitExceeded, 5xx, no answer in time            | transient: retried, then the  |
|                                                           |   caller's default error      |
| 401, 403 (permission, API disabled), refused credentials  | ProviderAuthError (stop)      |
| anything else                                             | the caller's default error    |
"""

from __future__ import annotations

import re

from gpujobs.errors import (
    NoCapacityError,
    ProviderAuthError,
    ProviderError,
    QuotaExceededError,
)
from gpujobs.providers.gcp.adc import LOGIN_COMMAND
from gpujobs.providers.gcp.models import GcpApiError

_CAPACITY_CODES = frozenset(
    {"ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"}
)
_CAPACITY_TEXT = "does not have enough resources available"
_QUOTA_CODES = frozenset({"QUOTA_EXCEEDED", "quotaExceeded"})
_RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "backendError"})
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_QUOTA_TEXT = re.compile(r"Quota '([A-Za-z0-9_]+)' exceeded")
_REGION_TEXT = re.compile(r"in region ([a-z0-9-]+)")


def quota_url(project: str) -> str:
    return f"https://console.cloud.google.com/iam-admin/quotas?project={project}"


def _capacity(error: GcpApiError) -> bool:
    return bool(_CAPACITY_CODES.intersection(error.reasons)) or _CAPACITY_TEXT in error.message


def _quota(error: GcpApiError) -> bool:
    return bool(_QUOTA_CODES.intersection(error.reasons)) or bool(_QUOTA_TEXT.search(error.message))


def is_transient(exc: BaseException) -> bool:
    """Worth the same call again after a pause: throttling, a server fault, no answer."""
    if not isinstance(exc, GcpApiError) or exc.kind == "operation":
        return False
    if exc.kind in ("timeout", "connection"):
        return True
    if exc.kind != "http" or _capacity(exc) or _quota(exc):
        return False
    return exc.http_status in _TRANSIENT_STATUS or bool(_RATE_REASONS.intersection(exc.reasons))


def translate(
    error: GcpApiError,
    *,
    project: str,
    where: str,
    default: type[ProviderError] = ProviderError,
) -> ProviderError:
    """The gpujobs error for `error`; `where` names the place (a zone or region) it concerns."""
    said = f"what GCP said: {error}"
    if _capacity(error):
        return NoCapacityError(f"gcp: no capacity in {where} right now ({said})")
    if _quota(error):
        found = _QUOTA_TEXT.search(error.message)
        metric = error.quota_metric or (found.group(1) if found else "a GPU quota")
        region_found = _REGION_TEXT.search(error.message)
        region = error.quota_region or (region_found.group(1) if region_found else where)
        return QuotaExceededError(
            f"gcp: quota {metric} exceeded in {region} ({said}); request more for {metric} "
            f"in {region} at {quota_url(project)}"
        )
    if error.kind == "credentials" or (error.kind == "http" and error.http_status == 401):
        return ProviderAuthError(
            f"gcp: the application default credentials were refused ({said}); run `{LOGIN_COMMAND}`"
        )
    if error.kind == "http" and error.http_status == 403 and not is_transient(error):
        if "accessNotConfigured" in error.reasons or "SERVICE_DISABLED" in error.message:
            hint = (
                "enable the Compute Engine API: https://console.cloud.google.com/apis/library/"
                f"compute.googleapis.com?project={project}"
            )
        else:
            hint = (
                f"the account needs the Compute Instance Admin role on project {project}, or "
                f"run `{LOGIN_COMMAND}` as an account that has it"
            )
        return ProviderAuthError(f"gcp: permission denied in project {project} ({said}); {hint}")
    detail = error.message if error.kind in ("timeout", "connection", "deadline") else said
    if is_transient(error):  # every call was retried already: say so
        return default(f"gcp: {where}: {detail}, still after retries; try again later")
    return default(f"gcp: {where}: {detail}")
