"""The Nodes the GCP provider hands out, and the tagged resources it lists for gc. A node's id is
`<zone>/<instance name>`, so terminate needs nothing but the node; `firewall/<rule>` stands for a
job's rule left without instances."""

from __future__ import annotations

import re

from gpujobs.providers.base import Node, Offer, TaggedResource
from gpujobs.providers.cloud import CloudNodeSettings
from gpujobs.providers.gcp.models import (
    JOB_METADATA_KEY,
    LABEL_KEY,
    FirewallInfo,
    InstanceInfo,
    instance_name,
)

FIREWALL_NODE = "firewall"
JOB_IN_DESCRIPTION = re.compile(rf"^{LABEL_KEY}=(\S+?);")


def location(node: Node) -> tuple[str, str]:
    """(zone, instance name) of a node."""
    zone, _, name = node.node_id.partition("/")
    return zone, name


def is_rule_only(node: Node) -> bool:
    return node.node_id.startswith(f"{FIREWALL_NODE}/")


def _common(settings: CloudNodeSettings, job_id: str) -> dict[str, object]:
    return {
        "provider": "gcp",
        "job_id": job_id,
        "port": 22,
        "user": settings.ssh_user,
        "workdir": settings.workdir(job_id),
        "uses_job_key": True,
        "runtime": "docker",
        "cache_dir": settings.cache_dir,
        "ready_file": settings.ready_file,
    }


def new_node(settings: CloudNodeSettings, job_id: str, rank: int, offer: Offer) -> Node:
    """A node just asked for: no address yet."""
    return Node(
        **_common(settings, job_id),
        node_id=f"{offer.zone}/{instance_name(job_id, rank)}",
        rank=rank,
        host="",
        instance_type=offer.instance_type,
        region=offer.region,
        price_per_hour=offer.price_per_hour,
        spot=offer.spot,
    )


def ready_node(settings: CloudNodeSettings, node: Node, host: str, private_host: str) -> Node:
    """A running node: reached from the client at its public address, and from the job's other
    nodes at its VPC address (which the group's firewall rule covers)."""
    update = {**_common(settings, node.job_id), "host": host, "private_host": private_host or None}
    return node.model_copy(update=update)


def job_of(info: InstanceInfo) -> str:
    """The job of an instance found by its label: from the metadata (label values are lossy)."""
    return info.metadata.get(JOB_METADATA_KEY) or info.labels.get(LABEL_KEY, "")


def job_of_rule(rule: FirewallInfo) -> str | None:
    """The job a firewall rule was made for (from its description), or None: not gpujobs'."""
    match = JOB_IN_DESCRIPTION.match(rule.description)
    return match.group(1) if match else None


def owned_node(settings: CloudNodeSettings, info: InstanceInfo, price: float) -> Node:
    """A node found by its label."""
    rank = info.name.rsplit("-", 1)[-1]
    return Node(
        **_common(settings, job_of(info)),
        node_id=f"{info.zone}/{info.name}",
        rank=int(rank) if rank.isdigit() else 0,
        host=info.public_ip,
        private_host=info.private_ip or None,
        instance_type=info.machine_type,
        region=info.zone.rsplit("-", 1)[0],
        price_per_hour=price,
        spot=info.spot,
    )


def rule_node(settings: CloudNodeSettings, job_id: str, rule: str) -> Node:
    """A job's firewall rule left without instances, as a node that gc can terminate."""
    return Node(
        **_common(settings, job_id),
        node_id=f"{FIREWALL_NODE}/{rule}",
        host="",
        instance_type="firewall-rule",
        region="global",
    )


def instance_resource(info: InstanceInfo, price: float) -> TaggedResource:
    return TaggedResource(
        provider="gcp",
        kind="instance",
        resource_id=info.name,
        region=info.zone,
        job_id=job_of(info),
        created_at=info.created_at,
        price_per_hour=price,
        node_id=f"{info.zone}/{info.name}",
    )


def rule_resource(rule: FirewallInfo, job_id: str) -> TaggedResource:
    return TaggedResource(
        provider="gcp",
        kind="firewall-rule",
        resource_id=rule.name,
        region="global",
        job_id=job_id,
        created_at=rule.created_at,
    )
