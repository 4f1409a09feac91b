"""The only place that speaks to AWS: boto3 clients per region, and the one table that turns
botocore's exceptions into gpujobs' errors, keeping what AWS said.

botocore's own retries are turned off (one attempt), so gpujobs' retry policy (retry.py) is the one
that runs, with jitter and a ceiling, and every call has connect and read timeouts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from gpujobs.clock import Clock
from gpujobs.errors import (
    NoCapacityError,
    ProviderAuthError,
    ProviderError,
    ProvisioningError,
    QuotaExceededError,
)
from gpujobs.retry import call_with_retry

if TYPE_CHECKING:
    import boto3

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 30

_AUTH_CODES = frozenset(
    {
        "AuthFailure",
        "UnauthorizedOperation",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "AccessDenied",
        "AccessDeniedException",
        "OptInRequired",
        "UnrecognizedClientException",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "EC2ThrottledException",
        "ServiceUnavailable",
        "Unavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientCapacity",
        "InsufficientReservedInstanceCapacity",
        "SpotMaxPriceTooLow",
        "Unsupported",  # the instance type is not offered in that zone
    }
)
_QUOTA_CODES = frozenset(
    {"VcpuLimitExceeded", "InstanceLimitExceeded", "MaxSpotInstanceCountExceeded"}
)

CREDENTIALS_HELP = (
    "run `aws configure` (or `aws sso login --profile NAME`), or set AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY; AWS_PROFILE picks a profile"
)


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    message = str(error.get("Message", ""))
    message = message or str(exc)
    # UnauthorizedOperation carries a long encoded authorization message: keep the sentence.
    return message.split(" Encoded authorization failure message")[0][:300]


def is_transient(exc: BaseException) -> bool:
    return error_code(exc) in _TRANSIENT_CODES or _is_network_fault(exc)


def _is_network_fault(exc: BaseException) -> bool:
    """No answer: refused, reset, or timed out (connect or read)."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    return isinstance(exc, BotoConnectionError | HTTPClientError)


def translate(exc: BaseException, what: str, *, request_quota_at: str = "") -> ProviderError:
    """A botocore exception as the gpujobs error that decides what the lifecycle does next."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, ProfileNotFound

    if isinstance(exc, NoCredentialsError):
        return ProviderAuthError(f"aws: no credentials found: {CREDENTIALS_HELP}")
    if isinstance(exc, ProfileNotFound):
        return ProviderAuthError(f"aws: {exc}: check AWS_PROFILE and ~/.aws/config")
    if _is_network_fault(exc):
        return ProviderError(f"aws did not answer {what} ({exc.__class__.__name__}); try again")
    if isinstance(exc, ClientError):
        code, message = error_code(exc), _error_message(exc)
        said = f"{code}: {message}"
        if code in _AUTH_CODES:
            return ProviderAuthError(f"aws refused {what} ({said}); {CREDENTIALS_HELP}", code=code)
        if code in _CAPACITY_CODES:
            return NoCapacityError(f"aws has no capacity for {what} ({said})", code=code)
        if code in _QUOTA_CODES:
            where = f"; request more at {request_quota_at}" if request_quota_at else ""
            return QuotaExceededError(f"aws quota does not allow {what} ({said}){where}", code=code)
        if code in _TRANSIENT_CODES:
            return ProviderError(f"aws kept throttling {what} ({said}); try again later", code=code)
        return ProvisioningError(f"aws failed {what} ({said})", code=code)
    if isinstance(exc, BotoCoreError):
        # SSO token expiry and the like: credentials that exist but cannot be used.
        if "token" in str(exc).lower() or "sso" in str(exc).lower():
            return ProviderAuthError(f"aws: {exc}; {CREDENTIALS_HELP}")
        return ProvisioningError(f"aws failed {what}: {exc}")
    return ProvisioningError(f"aws failed {what}: {exc.__class__.__name__}: {exc}")


class AwsClients:
    """boto3 clients per (service, region), made once from one session. boto3 sessions are not
    thread-safe but its clients are, so clients are made under a lock and then shared."""

    def __init__(self, session_factory: Callable[[], boto3.Session], clock: Clock) -> None:
        self._session_factory = session_factory
        self._session: boto3.Session | None = None
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self.clock = clock

    @property
    def session(self) -> boto3.Session:
        with self._lock:
            if self._session is None:
                self._session = self._session_factory()
            return self._session

    def client(self, service: str, region: str) -> Any:
        session = self.session
        with self._lock:
            key = (service, region)
            if key not in self._clients:
                from botocore.config import Config

                config = Config(
                    connect_timeout=CONNECT_TIMEOUT_S,
                    read_timeout=READ_TIMEOUT_S,
                    retries={"total_max_attempts": 1},
                    user_agent_appid="gpujobs",
                )
                self._clients[key] = session.client(service, region_name=region, config=config)
            return self._clients[key]

    def call(
        self,
        service: str,
        region: str,
        operation: str,
        what: str,
        *,
        quota_url: str = "",
        **params: Any,
    ) -> Any:
        """One API call, retried while AWS throttles, translated when it fails."""
        method = getattr(self.client(service, region), operation)
        try:
            return call_with_retry(
                lambda: method(**params), is_transient=is_transient, clock=self.clock
            )
        except Exception as exc:
            if isinstance(exc, ProviderError):
                raise
            raise translate(exc, what, request_quota_at=quota_url) from None

    def pages(
        self, service: str, region: str, operation: str, key: str, what: str, **params: Any
    ) -> list[Any]:
        """Every item under `key` across all pages of a paginated call."""
        items: list[Any] = []
        token_field = "NextToken"
        while True:
            answer = self.call(service, region, operation, what, **params)
            items.extend(answer.get(key, []))
            token = answer.get(token_field)
            if not token:
                return items
            params[token_field] = token
