"""The plain data that crosses the provider seam: offers, quotas, credentials, nodes, losses and
tagged resources. Ground floor: providers make these, the planner ranks them, the lifecycle and
`remote` use them, and the CLI draws them, none of which needs the Provider protocol for that.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from gpujobs.spec import Resources

TAG_KEY = "gpujobs-job"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Availability(StrEnum):
    AVAILABLE = "available"
    NO_QUOTA = "no_quota"
    NOT_AVAILABLE = "not_available"
    UNKNOWN = "unknown"


class Credentials(_Frozen):
    provider: str
    ok: bool
    found: str = Field("", description="which credential was found, e.g. 'profile default'")
    missing: str = Field("", description="what is missing and how to provide it")


class Offer(_Frozen):
    provider: str
    instance_type: str
    region: str
    zone: str | None = None
    gpu: str | None = None
    gpus: int = 0
    cpus: int
    memory_gb: float
    disk_gb: float | None = None
    price_per_hour: float = 0.0
    spot: bool = False
    availability: Availability = Availability.UNKNOWN
    max_nodes: int | None = Field(None, description="most nodes one job may use; None = any")
    unavailable_reason: str = Field("", description="why availability is NOT_AVAILABLE")

    @property
    def label(self) -> str:
        where = self.zone or self.region
        kind = "spot " if self.spot else ""
        if where == self.provider:  # local and ssh: no regions to tell apart
            return f"{self.provider}/{kind}{self.instance_type}"
        return f"{self.provider}/{where}/{kind}{self.instance_type}"

    def misfit(self, resources: Resources) -> str | None:
        """Why this offer cannot host `resources`, or None when it can."""
        wanted = resources.gpu_count
        if resources.gpu and wanted and (self.gpu or "").upper() != resources.gpu:
            return f"has {self.gpu or 'no GPU'}, the spec asks for {resources.gpu}"
        if self.gpus < wanted:
            return f"has {self.gpus} GPU(s), the spec asks for {wanted}"
        if resources.cpus and self.cpus < resources.cpus:
            return f"has {self.cpus} vCPUs, the spec asks for {resources.cpus}"
        if resources.memory_gb and self.memory_gb < resources.memory_gb:
            return f"has {self.memory_gb:g} GB memory, the spec asks for {resources.memory_gb:g}"
        if resources.disk_gb and self.disk_gb is not None and self.disk_gb < resources.disk_gb:
            return f"has {self.disk_gb:g} GB free disk, the spec asks for {resources.disk_gb:g}"
        return None


class Quota(_Frozen):
    provider: str
    region: str
    code: str = Field(description="the provider's own quota code or metric")
    name: str
    unit: str
    limit: float | None = Field(None, description="None: no limit applies")
    in_use: float = 0.0
    request_at: str = Field("", description="where to ask for more")
    per_node: float = Field(
        0.0, description="how much of this quota one node of the offer uses, in `unit`"
    )

    @property
    def free(self) -> float | None:
        return None if self.limit is None else max(self.limit - self.in_use, 0.0)


class Node(_Frozen):
    """One machine (or, for local/ssh, one work directory on a machine) serving one job."""

    provider: str
    job_id: str
    node_id: str
    rank: int = 0
    host: str
    private_host: str | None = Field(
        None,
        description="where the job's other nodes reach it (a cloud's private address); None: host",
    )
    port: int = 22
    user: str | None = None
    workdir: str = Field(description="the job's folder on the node; everything lives under it")
    transport: str = Field("ssh", description="how to reach it: local or ssh")
    identity_file: str | None = Field(
        None,
        description="the private key to log in with; None: the job's own key (clouds) "
        "or the user's agent and ~/.ssh keys (uses_job_key false)",
    )
    uses_job_key: bool = Field(True, description="log in with the per-job key gpujobs made")
    runtime: str = Field("docker", description="the provider's runtime: host, venv or docker")
    cache_dir: str | None = Field(None, description="a folder on the node that outlives jobs")
    ready_file: str | None = Field(
        None,
        description="a file the node's bootstrap writes when done (clouds); the lifecycle "
        "waits for it, and for `<ready_file>.failed`, before setting up",
    )
    instance_type: str = ""
    region: str = ""
    price_per_hour: float = 0.0
    spot: bool = False


class NodeLoss(_Frozen):
    """A node the provider says is gone or going while its job runs."""

    node_id: str
    reason: str = Field(description="the provider's own words, e.g. its state reason code")
    preempted: bool = Field(
        False, description="taken back by the provider (spot/preemptible), not failed"
    )


class TaggedResource(_Frozen):
    """One thing in a provider's account that carries gpujobs' tag (`gpujobs-job=<job id>`; a
    GCP label; on Paperspace, the name prefix `gpujobs-`), whoever's job it belongs to."""

    provider: str
    kind: str = Field(
        description="instance, key-pair, security-group, firewall-rule, machine, "
        "startup-script or workdir"
    )
    resource_id: str = Field(description="the provider's own id (or name) for it")
    region: str = Field(description="its region or zone; 'global' where it has none")
    job_id: str = Field(description="the job its tag names ('' when the tag names none)")
    created_at: float | None = Field(None, description="epoch seconds; None: not known")
    price_per_hour: float = Field(0.0, description="the catalog's $/h; 0: free or not known")
    node_id: str | None = Field(
        None, description="for a node (an instance, a machine): the Node id, as the ledger has it"
    )
