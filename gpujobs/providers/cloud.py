"""What the cloud providers share: the caller's public address (for firewall rules), the node
bootstrap script (Docker with the NVIDIA runtime, and the budget's shutdown timer), and where the
job's folder lives on a cloud node.

The bootstrap script is a package resource (`bootstrap.sh`) rendered with shell-quoted values, so
it is linted as a script and tested as the text a node receives.
"""

from __future__ import annotations

import ipaddress
import math
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from string import Template

from gpujobs.errors import ProviderError

# A function answering the caller's public IPv4 address; providers take one in their constructor
# so tests pass a constant and never look anything up.
CallerAddress = Callable[[], str]

_ADDRESS_SERVICES = ("https://checkip.amazonaws.com", "https://api.ipify.org")
_LOOKUP_TIMEOUT_S = 5.0


def lookup_caller_address() -> str:
    """This machine's public IPv4 address as the internet sees it (for a /32 firewall rule)."""
    import httpx

    problems: list[str] = []
    for url in _ADDRESS_SERVICES:
        try:
            answer = httpx.get(url, timeout=_LOOKUP_TIMEOUT_S).raise_for_status().text.strip()
            return str(ipaddress.IPv4Address(answer))
        except (httpx.HTTPError, ValueError) as exc:
            problems.append(f"{url}: {exc.__class__.__name__}")
    raise ProviderError(
        "could not find this machine's public address to open SSH to it alone ("
        + "; ".join(problems)
        + "); check the network, or set GPUJOBS_CALLER_IP"
    )


def caller_cidr(address: CallerAddress) -> str:
    """The /32 a firewall rule admits: only the caller."""
    answer = address()
    try:
        return f"{ipaddress.IPv4Address(answer.strip())}/32"
    except ValueError:
        raise ProviderError(
            f"the caller's address {answer!r} is not an IPv4 address; set GPUJOBS_CALLER_IP"
        ) from None


@dataclass(frozen=True)
class CloudNodeSettings:
    """Where a job lives on a cloud node, and who logs in. Tests point `root` at a temp folder
    when the node's SSH endpoint is the loopback sshd."""

    ssh_user: str = "ubuntu"
    root: str = "/opt/gpujobs"

    def workdir(self, job_id: str) -> str:
        return f"{self.root}/work/{job_id}"

    @property
    def cache_dir(self) -> str:
        return f"{self.root}/cache"

    @property
    def ready_file(self) -> str:
        return f"{self.root}/bootstrap.done"


@dataclass(frozen=True)
class Bootstrap:
    """The values of one node's bootstrap script."""

    job_id: str
    settings: CloudNodeSettings
    max_hours: float | None
    ssh_public_key: str | None = None  # only for clouds that cannot install it themselves
    # A multi-node job's node keeps its ephemeral ports (where NCCL and Gloo listen) in this
    # band, which the group's firewall rule opens to the group (gpujobs.group.COLLECTIVE_PORTS).
    port_band: tuple[int, int] | None = None
    # A cloud without a firewall API: the node admits SSH from this address range only, and
    # (a multi-node job) everything from its group's private network.
    ssh_from: str | None = None
    group_cidr: str | None = None

    @property
    def shutdown_minutes(self) -> int | None:
        """Whole minutes until the node powers itself off: max_hours, rounded up, plus the
        minute the client's own stop needs to save a checkpoint first."""
        if self.max_hours is None:
            return None
        return math.ceil(self.max_hours * 60) + 1

    def render(self) -> str:
        template = Template(
            resources.files("gpujobs.providers").joinpath("bootstrap.sh").read_text()
        )
        minutes = self.shutdown_minutes
        return template.substitute(
            JOB_ID=shlex.quote(self.job_id),
            SSH_USER=shlex.quote(self.settings.ssh_user),
            ROOT=shlex.quote(self.settings.root),
            READY_FILE=shlex.quote(self.settings.ready_file),
            SHUTDOWN_MINUTES=str(minutes) if minutes is not None else "",
            SSH_PUBLIC_KEY=shlex.quote(self.ssh_public_key or ""),
            PORT_BAND=" ".join(str(port) for port in self.port_band) if self.port_band else "",
            SSH_FROM=shlex.quote(self.ssh_from or ""),
            GROUP_CIDR=shlex.quote(self.group_cidr or ""),
        )
