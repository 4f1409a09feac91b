"""The Provider protocol, its optional capabilities, and (re-exported from gpujobs.models) the
typed data that crosses it.

A provider turns an Offer into Nodes and back into nothing. It knows nothing of SSH or of what
runs on the node; it returns quickly, and the lifecycle does the waiting. Its SDK's exceptions are
translated into the provider errors re-exported here, at the provider's own boundary.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from gpujobs.errors import (
    NoCapacityError,
    NotTerminatedError,
    ProviderAuthError,
    ProviderError,
    ProvisioningError,
    QuotaExceededError,
)
from gpujobs.models import (
    TAG_KEY,
    Availability,
    Credentials,
    Node,
    NodeLoss,
    Offer,
    Quota,
    TaggedResource,
)
from gpujobs.remote.transport import Transport
from gpujobs.spec import JobSpec, Resources

__all__ = [
    "TAG_KEY",
    "Availability",
    "BatchState",
    "Credentials",
    "NoCapacityError",
    "Node",
    "NodeLoss",
    "NotTerminatedError",
    "Offer",
    "Provider",
    "ProviderAuthError",
    "ProviderError",
    "ProvisioningError",
    "Quota",
    "QuotaExceededError",
    "SpecConfigured",
    "SupportsBatchJobs",
    "SupportsLossCheck",
    "SupportsQuotaReport",
    "SupportsSweep",
    "TaggedResource",
]


@runtime_checkable
class Provider(Protocol):
    name: str

    def check(self) -> Credentials:
        """Which credentials were found, and what is missing."""
        ...

    def offers(self, resources: Resources) -> list[Offer]:
        """Machines this provider can give, priced; may include ones that do not fit."""
        ...

    def quota(self, offer: Offer) -> Quota:
        """The quota that governs `offer`, in the provider's own unit."""
        ...

    def provision(
        self, job_id: str, offer: Offer, ssh_public_key: str | None, nodes: int, *, restart: int = 0
    ) -> list[Node]:
        """Create the nodes and return at once. Idempotent for the same job and `restart` (how
        many times the job lost its nodes and started again: a restart makes new nodes, and
        its idempotency keys and node ids differ from the lost ones')."""
        ...

    def wait_ready(self, nodes: list[Node]) -> list[Node]:
        """The nodes once reachable, with addresses filled in."""
        ...

    def terminate(self, nodes: list[Node]) -> None:
        """Stop everything of the job's on the nodes; idempotent; raise if it cannot confirm."""
        ...

    def owned(self) -> list[Node]:
        """Every node that carries gpujobs' tag, live or forgotten (for gc and down)."""
        ...


@runtime_checkable
class SupportsLossCheck(Protocol):
    """A provider that can say whether a running job's nodes still exist (the clouds): the
    driver asks it every so often and whenever a node stops answering, to tell a reclaimed
    spot machine from a slow link. Optional: local and ssh nodes cannot be taken back."""

    def losses(self, nodes: list[Node]) -> list[NodeLoss]:
        """The nodes that are gone or going (terminated, stopped, deleted); [] when all live."""
        ...


@runtime_checkable
class SupportsQuotaReport(Protocol):
    """A provider that can list its GPU quotas for `gpujobs quota` (every region it serves)."""

    def quotas(self, gpu: str | None = None) -> list[Quota]: ...


@runtime_checkable
class SupportsSweep(Protocol):
    """A provider that can list everything gpujobs tagged on it and delete any of it, for
    `gpujobs gc`. Optional: the ssh provider cannot (its hosts come from a job spec)."""

    def tagged(self) -> list[TaggedResource]:
        """Every tagged resource, live job's or not, in the order to delete them in: a kind
        others depend on comes after them (instances before their security group)."""
        ...

    def delete(self, resource: TaggedResource) -> None:
        """Delete it and wait until the provider confirms; one already gone is fine. Raises a
        ProviderError (NotTerminatedError when it cannot confirm)."""
        ...


@runtime_checkable
class SpecConfigured(Protocol):
    """A provider whose settings come from the job spec as well (the ssh provider's hosts).
    Optional: providers configured by the environment alone do not implement it."""

    def for_spec(self, spec: JobSpec) -> Provider: ...


class BatchState(BaseModel):
    """What a batch scheduler says of one of its jobs."""

    model_config = ConfigDict(frozen=True)
    live: bool  # the scheduler still holds it: it waits, runs or is being requeued
    state: str  # the scheduler's word: PENDING, RUNNING, ... ("" once it left the queue)
    reason: str = ""  # why it waits (Resources, Priority, QOSMaxJobsPerUser, ...)
    position: int | None = None  # 1 = next among the partition's waiting jobs

    def describe(self, batch_id: int) -> str:
        if not self.state:
            return f"slurm job {batch_id} has left the queue"
        words = f"slurm job {batch_id} is {self.state}"
        details = [self.reason] if self.reason and self.reason != "None" else []
        if self.position is not None:
            details.append(f"{_ordinal(self.position)} in the partition's queue")
        return words + (f" ({'; '.join(details)})" if details else "")


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@runtime_checkable
class SupportsBatchJobs(Protocol):
    """A provider whose scheduler starts the workload (Slurm). The lifecycle sets the job's
    folder up through the node's transport as on any node (a login node on the cluster's
    shared filesystem) and writes the launch script there; the provider then submits it,
    says what the scheduler makes of it, and stops it. Optional: where it is absent the
    lifecycle starts the launch script itself, detached."""

    def submit(self, transport: Transport, node: Node, *, max_seconds: float | None) -> int:
        """Submit the launch script already in `node`'s folder; returns the scheduler's job
        id. `max_seconds`: what is left of the job's cap (the scheduler's time limit)."""
        ...

    def batch_state(self, transport: Transport, batch_id: int) -> BatchState: ...

    def request_stop(self, transport: Transport, batch_id: int) -> None:
        """Ask the job to stop (TERM to every process of it: the workload checkpoints)."""
        ...
