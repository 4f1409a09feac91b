"""What crosses between the GCP provider and its Compute client: plain data, no SDK types, and
the rules for naming what gpujobs creates (GCP names and label values are restricted).

The client (client.py) turns these into compute_v1 messages and back, so the provider and its
tests never see a protobuf, and `import gpujobs.providers.gcp` imports no Google library.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from gpujobs.providers.base import TAG_KEY

# Machine families that come with their GPUs attached: listing guest accelerators for them is
# an error (A2: A100, A3: H100, G2: L4, and the newer A4/G4 likewise).
_BUNDLED_GPU_FAMILIES = ("a2-", "a3-", "a4-", "a4x-", "g2-", "g4-")

# GPU model (as the catalog spells it, normalised) -> (accelerator type for N1 machines, the
# infix of its quota metrics: NVIDIA_<infix>_GPUS and PREEMPTIBLE_NVIDIA_<infix>_GPUS).
GPU_MODELS: dict[str, tuple[str, str]] = {
    "T4": ("nvidia-tesla-t4", "T4"),
    "L4": ("nvidia-l4", "L4"),
    "V100": ("nvidia-tesla-v100", "V100"),
    "P100": ("nvidia-tesla-p100", "P100"),
    "P4": ("nvidia-tesla-p4", "P4"),
    "A100": ("nvidia-tesla-a100", "A100"),
    "A100_80GB": ("nvidia-a100-80gb", "A100_80GB"),
    "H100": ("nvidia-h100-80gb", "H100"),
    "H100_MEGA": ("nvidia-h100-mega-80gb", "H100_MEGA"),
}
GLOBAL_GPU_METRIC = "GPUS_ALL_REGIONS"

_NAME_OK = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_MAX_NAME = 63


def gpu_model(gpu: str | None, instance_type: str) -> str | None:
    """The key into GPU_MODELS for an offer's GPU ('A100-80GB', 'a100_80gb' and an a2-ultragpu
    type all give 'A100_80GB'); None for no GPU or one gpujobs does not know."""
    if not gpu:
        return None
    compact = re.sub(r"[^A-Z0-9]", "", gpu.upper())
    if compact.startswith("A100") and ("80" in compact[4:] or instance_type.startswith("a2-ultra")):
        return "A100_80GB"
    if compact.startswith("H100"):
        return "H100_MEGA" if "MEGA" in compact or instance_type.startswith("a3-mega") else "H100"
    return compact if compact in GPU_MODELS else None


def gpus_are_bundled(machine_type: str) -> bool:
    """Accelerator-optimized machine types carry their GPUs; N1 takes guest accelerators."""
    return machine_type.startswith(_BUNDLED_GPU_FAMILIES)


def _digest(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def label_value(job_id: str) -> str:
    """The job id as a label value (lowercase [a-z0-9_-], at most 63). A job id that needs no
    change is kept as is; one that does gets a digest of the original appended, so two ids
    that sanitise alike never share a label. The same id always gives the same value."""
    clean = re.sub(r"[^a-z0-9_-]", "_", job_id.lower())
    if clean == job_id and len(clean) <= _MAX_NAME:
        return clean
    return f"{clean[: _MAX_NAME - 9]}-{_digest(job_id)}"


def resource_name(job_id: str, suffix: str = "") -> str:
    """`gpujobs-<job>[-<suffix>]` as a valid GCP name (RFC 1035, at most 63), deterministic:
    an id that does not fit is cleaned and shortened, with a digest of it kept for uniqueness."""
    tail = f"-{suffix}" if suffix else ""
    wanted = f"gpujobs-{job_id}{tail}"
    if _NAME_OK.match(wanted) and len(wanted) <= _MAX_NAME:
        return wanted
    clean = re.sub(r"[^a-z0-9-]", "-", job_id.lower()).strip("-")
    room = _MAX_NAME - len("gpujobs--") - len(tail) - 8
    stem = clean[:room].rstrip("-")
    return f"gpujobs-{stem}-{_digest(job_id)}{tail}" if stem else f"gpujobs-{_digest(job_id)}{tail}"


def instance_name(job_id: str, rank: int) -> str:
    return resource_name(job_id, str(rank))


def firewall_name(job_id: str) -> str:
    return resource_name(job_id, "ssh")


def group_firewall_name(job_id: str) -> str:
    """The rule that lets a multi-node job's instances reach each other."""
    return resource_name(job_id, "group")


def firewall_names(job_id: str) -> tuple[str, ...]:
    """Every rule a job may have, in the order they are made."""
    return firewall_name(job_id), group_firewall_name(job_id)


def network_tag(job_id: str) -> str:
    """The tag the job's instances carry and its firewall rule targets."""
    return resource_name(job_id)


LABEL_KEY = TAG_KEY
JOB_METADATA_KEY = TAG_KEY  # the job id unsanitised, for owned() to read back
FIREWALL_PREFIX = "gpujobs-"


@dataclass(eq=False)
class GcpApiError(Exception):
    """What the Compute API (or the way to it) said, before gpujobs decides what it means.

    kind: "http" (an error answer), "operation" (an operation finished with errors),
    "timeout" and "connection" (no answer), "credentials" (the credentials could not be used),
    "deadline" (operations still not done when gpujobs stopped waiting).
    """

    kind: str
    message: str
    http_status: int = 0
    reasons: tuple[str, ...] = ()  # errors[].reason of an answer, errors[].code of an operation
    quota_metric: str = ""  # from an operation's quotaInfo, when the API names one
    quota_region: str = ""

    def __str__(self) -> str:
        code = f"{self.http_status} " if self.http_status else ""
        why = f" [{', '.join(self.reasons)}]" if self.reasons else ""
        return f"{code}{self.message}{why}"


@dataclass(frozen=True)
class ImageInfo:
    self_link: str
    disk_gb: int  # the smallest boot disk the image fits on


@dataclass(frozen=True)
class OperationRef:
    """A zonal (zone set) or global operation to wait for."""

    name: str
    zone: str | None = None


@dataclass(frozen=True)
class OperationState:
    name: str
    done: bool
    error: GcpApiError | None = None


@dataclass(frozen=True)
class InstanceSpec:
    """Everything one instance is created with."""

    name: str
    zone: str
    machine_type: str
    image: str  # an image's self link
    disk_gb: int
    labels: dict[str, str]
    metadata: dict[str, str]
    tags: tuple[str, ...]
    accelerator: tuple[str, int] | None = None  # (accelerator type, count), N1 only
    spot: bool = False
    max_run_s: int | None = None  # a provider-side cap; the instance is deleted at the end
    network: str = "global/networks/default"


@dataclass(frozen=True)
class InstanceInfo:
    name: str
    zone: str
    status: str  # PROVISIONING, STAGING, RUNNING, STOPPING, STOPPED, TERMINATED, ...
    machine_type: str = ""
    public_ip: str = ""
    private_ip: str = ""  # the first network interface's address in the VPC
    labels: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    spot: bool = False
    created_at: float | None = None  # epoch seconds, from creationTimestamp


@dataclass(frozen=True)
class FirewallSpec:
    """An ingress rule: TCP `ports` ("22", "30000-31999") to instances tagged `target_tags`,
    from `source_ranges` or from instances tagged `source_tags` (GCP ORs the two)."""

    name: str
    description: str
    target_tags: tuple[str, ...]
    source_ranges: tuple[str, ...] = ()
    source_tags: tuple[str, ...] = ()
    network: str = "global/networks/default"
    ports: tuple[str, ...] = ("22",)


@dataclass(frozen=True)
class FirewallInfo:
    name: str
    description: str
    source_ranges: tuple[str, ...]
    target_tags: tuple[str, ...]
    created_at: float | None = None
    source_tags: tuple[str, ...] = ()
    ports: tuple[str, ...] = ()


@dataclass(frozen=True)
class QuotaValue:
    metric: str
    limit: float
    usage: float
