"""AWS GPU quotas: Service Quotas counts running vCPUs per instance class, on-demand and spot.

    L-DB2E81BA  Running On-Demand G and VT instances   (g*, vt*)
    L-417A185B  Running On-Demand P instances           (p*)
    L-3819A6DF  All G and VT Spot Instance Requests
    L-7212CCBC  All P Spot Instance Requests

The limit comes from Service Quotas (the account's applied value, else AWS's default); what is in
use is the vCPUs of the region's pending and running instances of that class, as AWS counts them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gpujobs.errors import ProviderError
from gpujobs.providers.aws.client import AwsClients
from gpujobs.providers.base import Quota


@dataclass(frozen=True)
class QuotaCode:
    code: str
    name: str


_CODES: dict[tuple[str, bool], QuotaCode] = {
    ("G", False): QuotaCode("L-DB2E81BA", "Running On-Demand G and VT instances"),
    ("P", False): QuotaCode("L-417A185B", "Running On-Demand P instances"),
    ("G", True): QuotaCode("L-3819A6DF", "All G and VT Spot Instance Requests"),
    ("P", True): QuotaCode("L-7212CCBC", "All P Spot Instance Requests"),
}


def instance_class(instance_type: str) -> str | None:
    """'G' for g* and vt* types, 'P' for p*; None for classes without a GPU quota here."""
    family = instance_type.split(".")[0].lower()
    if family.startswith(("g", "vt")):
        return "G"
    if family.startswith("p"):
        return "P"
    return None


def quota_code(instance_type: str, spot: bool) -> QuotaCode | None:
    kind = instance_class(instance_type)
    return _CODES[(kind, spot)] if kind else None


def request_url(region: str, code: str) -> str:
    return f"https://{region}.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/{code}"


class AwsQuotas:
    """Quota lookups for one provider instance; each (region, code) is asked once."""

    def __init__(self, clients: AwsClients, vcpus_of: Callable[[str], int | None]) -> None:
        self.clients = clients
        self.vcpus_of = vcpus_of  # an instance type's vCPUs, as the quota counts them
        self._limits: dict[tuple[str, str], float] = {}
        self._in_use: dict[str, dict[tuple[str, bool], float]] = {}

    def quota(self, region: str, instance_type: str, spot: bool, per_node: float) -> Quota:
        code = quota_code(instance_type, spot)
        if code is None:
            return Quota(
                provider="aws",
                region=region,
                code="none",
                name="no GPU quota class",
                unit="vCPUs",
                limit=None,
                per_node=per_node,
            )
        kind = instance_class(instance_type) or "G"
        limit = self.limit(region, code.code)
        # Nothing can run under a limit of 0 (a new account's usual G and P quota): no need to
        # list the region's instances to know that none is in use.
        in_use = self.in_use(region).get((kind, spot), 0.0) if limit > 0 else 0.0
        return Quota(
            provider="aws",
            region=region,
            code=code.code,
            name=code.name,
            unit="vCPUs",
            limit=limit,
            in_use=in_use,
            request_at=request_url(region, code.code),
            per_node=per_node,
        )

    def report(self, region: str, classes: frozenset[str] = frozenset({"G", "P"})) -> list[Quota]:
        """The region's GPU quotas of the given instance classes, on demand and spot."""
        return [
            self.quota(region, "g.x" if kind == "G" else "p.x", spot, 0.0)
            for (kind, spot) in _CODES
            if kind in classes
        ]

    def limit(self, region: str, code: str) -> float:
        key = (region, code)
        if key not in self._limits:
            self._limits[key] = self._ask_limit(region, code)
        return self._limits[key]

    def _ask_limit(self, region: str, code: str) -> float:
        what = f"the quota {code} in {region}"
        try:
            answer = self.clients.call(
                "service-quotas",
                region,
                "get_service_quota",
                what,
                ServiceCode="ec2",
                QuotaCode=code,
            )
        except ProviderError as exc:
            # An account that never changed a quota has no applied value: AWS's default applies.
            if exc.code != "NoSuchResourceException":
                raise
            answer = self.clients.call(
                "service-quotas",
                region,
                "get_aws_default_service_quota",
                what,
                ServiceCode="ec2",
                QuotaCode=code,
            )
        return float(answer["Quota"]["Value"])

    def in_use(self, region: str) -> dict[tuple[str, bool], float]:
        """vCPUs of pending and running instances per (class, spot) in the region."""
        if region not in self._in_use:
            used: dict[tuple[str, bool], float] = {}
            reservations = self.clients.pages(
                "ec2",
                region,
                "describe_instances",
                "Reservations",
                f"listing instances in {region}",
                Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}],
            )
            for reservation in reservations:
                for instance in reservation.get("Instances", []):
                    kind = instance_class(instance.get("InstanceType", ""))
                    if kind is None:
                        continue
                    # The quota counts the type's vCPUs, whatever CPU options the instance runs.
                    cpu = instance.get("CpuOptions", {})
                    vcpus = self.vcpus_of(instance["InstanceType"]) or (
                        cpu.get("CoreCount", 1) * cpu.get("ThreadsPerCore", 1)
                    )
                    spot = instance.get("InstanceLifecycle") == "spot"
                    used[(kind, spot)] = used.get((kind, spot), 0.0) + vcpus
            self._in_use[region] = used
        return self._in_use[region]


__all__ = ["AwsQuotas", "instance_class", "quota_code", "request_url"]
