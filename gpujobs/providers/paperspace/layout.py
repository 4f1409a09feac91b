"""How gpujobs names, sizes and images its Paperspace resources, and turns machines into Nodes.

Paperspace has no tags: ownership is the name. A job's machines are `gpujobs-<job id>-<rank>`;
its startup script and (for a multi-node job) its private network are `gpujobs-<job id>`. A job
id may itself contain hyphens, so the rank is the last hyphen-separated number.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TypeVar

from gpujobs.errors import ProvisioningError
from gpujobs.providers.base import Node, Offer, TaggedResource
from gpujobs.providers.cloud import CloudNodeSettings
from gpujobs.providers.paperspace.models import (
    Machine,
    OsTemplate,
    PrivateNetwork,
    StartupScript,
)

T = TypeVar("T")

NAME_PREFIX = "gpujobs-"
# The disk sizes Paperspace offers, in GB: a request is rounded up to the next one.
DISK_SIZES_GB = (50, 100, 250, 500, 1000, 2000, 4000, 8000, 12000, 16000)
_MACHINE_NAME = re.compile(r"^gpujobs-(?P<job>.+)-(?P<rank>\d+)$")


# Paperspace has no firewall API, so SSH stays reachable from anywhere: the node makes its login
# key-only before anything else runs. The drop-in sorts first, and sshd keeps the first value it
# reads, so it wins over the image's own (e.g. 50-cloud-init.conf).
_KEYS_ONLY_SSH = """\
# gpujobs (paperspace): SSH by key only; no firewall stands in front of this machine.
printf 'PasswordAuthentication no\\nKbdInteractiveAuthentication no\\n' \\
    >/etc/ssh/sshd_config.d/00-gpujobs-keys-only.conf &&
    { systemctl reload ssh || systemctl reload sshd; } >/dev/null 2>&1
"""


def startup_script(bootstrap: str) -> str:
    """The shared bootstrap with Paperspace's preamble after its first (#!) line."""
    shebang, _, rest = bootstrap.partition("\n")
    return f"{shebang}\n{_KEYS_ONLY_SSH}{rest}"


def machine_name(job_id: str, rank: int) -> str:
    return f"{NAME_PREFIX}{job_id}-{rank}"


def script_name(job_id: str) -> str:
    return f"{NAME_PREFIX}{job_id}"


def network_name(job_id: str) -> str:
    return f"{NAME_PREFIX}{job_id}"


def parse_machine_name(name: str) -> tuple[str, int] | None:
    """(job id, rank) of a gpujobs machine name, or None."""
    match = _MACHINE_NAME.match(name)
    return (match["job"], int(match["rank"])) if match else None


def machine_job(name: str) -> tuple[str, int]:
    """(job id, rank) of a machine named `gpujobs-...`; one without a rank is rank 0."""
    return parse_machine_name(name) or (name[len(NAME_PREFIX) :], 0)


def named(items: list[T], name: str) -> T | None:
    """The live item with exactly this name (the API's `name` filter is not relied on)."""
    return next(iter(all_named(items, name)), None)


def all_named(items: list[T], name: str) -> list[T]:
    return [
        item
        for item in items
        if getattr(item, "name", None) == name and getattr(item, "dt_deleted", None) is None
    ]


def disk_size(gb: float) -> int:
    for size in DISK_SIZES_GB:
        if size >= gb:
            return size
    raise ProvisioningError(
        f"the spec asks for {gb:g} GB of disk; paperspace disks go up to {DISK_SIZES_GB[-1]} GB"
    )


def choose_template(
    templates: list[OsTemplate], wanted: str | None, *, needs_gpu: bool
) -> OsTemplate | None:
    """`wanted` (an id or exact name) if given, else the best Ubuntu 22.04 image by name."""
    if wanted:
        return next((t for t in templates if wanted in (t.id, t.name)), None)
    ranked = [
        (rank, t.name, t)
        for t in templates
        if (rank := _template_rank(t)) is not None and (rank < 2 or not needs_gpu)
    ]
    return min(ranked, key=lambda row: (row[0], row[1]))[2] if ranked else None


def _template_rank(template: OsTemplate) -> int | None:
    """0: ML-in-a-Box on Ubuntu 22.04 (NVIDIA driver, Docker and its NVIDIA runtime); 1: another
    Ubuntu 22.04 GPU image; 2: plain Ubuntu 22.04 (no GPU driver: CPU machines only)."""
    text = f"{template.name} {template.operating_system_label}".lower()
    if "22.04" not in text:
        return None
    if "ml-in-a-box" in text or "ml in a box" in text:
        return 0
    if any(word in text for word in ("gpu", "cuda", "nvidia")):
        return 1
    return 2 if "ubuntu" in text else None


def node_for(
    settings: CloudNodeSettings,
    job_id: str,
    rank: int,
    machine: Machine,
    *,
    offer: Offer | None = None,
    price: float = 0.0,
) -> Node:
    """The Node of one machine; its address may still be "" (not ready yet)."""
    return Node(
        provider="paperspace",
        job_id=job_id,
        node_id=machine.id,
        rank=rank,
        host=machine.public_ip or "",
        port=22,
        user=settings.ssh_user,
        workdir=settings.workdir(job_id),
        uses_job_key=True,
        runtime="docker",
        cache_dir=settings.cache_dir,
        ready_file=settings.ready_file,
        instance_type=offer.instance_type if offer else machine.machine_type,
        region=offer.region if offer else machine.region,
        price_per_hour=offer.price_per_hour if offer else price,
        spot=False,
    )


def addressed(settings: CloudNodeSettings, node: Node, machine: Machine) -> Node:
    """`node` once its machine is ready: its address, and the login of a Paperspace node."""
    return node.model_copy(
        update={
            "host": machine.public_ip or "",
            # The job's other nodes reach it on the job's private network.
            "private_host": machine.private_ip or None,
            "port": 22,
            "user": settings.ssh_user,
            "workdir": settings.workdir(node.job_id),
            "cache_dir": settings.cache_dir,
            "ready_file": settings.ready_file,
            "runtime": "docker",
            "uses_job_key": True,
            "spot": False,
        }
    )


def machine_resource(machine: Machine, price: float) -> TaggedResource:
    return TaggedResource(
        provider="paperspace",
        kind="machine",
        resource_id=machine.id,
        region=machine.region,
        job_id=machine_job(machine.name)[0],
        created_at=_epoch(machine.dt_created),
        price_per_hour=price,
        node_id=machine.id,
    )


def script_resource(script: StartupScript) -> TaggedResource:
    return TaggedResource(
        provider="paperspace",
        kind="startup-script",
        resource_id=script.id,
        region="global",
        job_id=script.name[len(NAME_PREFIX) :],
        created_at=_epoch(script.dt_created),
    )


def network_resource(network: PrivateNetwork) -> TaggedResource:
    return TaggedResource(
        provider="paperspace",
        kind="private-network",
        resource_id=network.id,
        region=network.region or "global",
        job_id=network.name[len(NAME_PREFIX) :],
        created_at=_epoch(network.dt_created),
    )


def _epoch(stamp: str | None) -> float | None:
    """The API's dtCreated ("2026-01-01T00:00:00.000Z") as epoch seconds."""
    try:
        return datetime.fromisoformat(stamp).timestamp() if stamp else None
    except ValueError:
        return None
