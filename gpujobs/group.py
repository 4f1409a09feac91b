"""A multi-node job's group: which node is the head, where the others reach it, and what each
node's workload is told (torchrun's rendezvous flags, and GPUJOBS_* for custom commands).

torchrun is started with a static rendezvous (`--master-addr/--master-port --node-rank`), not
c10d's dynamic one: gpujobs already knows every node and its rank, so node K is rank K, its log
is node K's, and rank 0 (whose folder holds the checkpoints) is the node whose checkpoints come
home.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gpujobs.models import Node
from gpujobs.spec import JobSpec

# The range rendezvous ports are taken from (torchrun's default is 29500): a job's own port,
# from its id, so two jobs on the same hosts do not collide, and a firewall rule can name it.
PORT_BASE = 29500
PORT_SPAN = 500

# NCCL and Gloo do not stay on the rendezvous port: every rank listens on a port of its own,
# drawn from the kernel's ephemeral range, and tells the others through the rendezvous. No rule
# can name such a port in advance, so a multi-node cloud node confines its ephemeral range to
# this band (its bootstrap sets net.ipv4.ip_local_port_range) and the group's rule admits the
# group's own members to the band. 2,000 ports: ample for a node's own outgoing connections,
# which come from the same range. Below Linux's default range, above the rendezvous ports.
COLLECTIVE_PORTS = (30000, 31999)


def rendezvous_port(job_id: str) -> int:
    digest = hashlib.sha256(job_id.encode()).digest()
    return PORT_BASE + int.from_bytes(digest[:4], "big") % PORT_SPAN


def member_ports(job_id: str) -> list[tuple[int, int]]:
    """The (first, last) port ranges a multi-node job's nodes must reach on each other, and
    only those: the rendezvous port, and the band NCCL and Gloo listen in."""
    port = rendezvous_port(job_id)
    return [(port, port), COLLECTIVE_PORTS]


@dataclass(frozen=True)
class NodeGroup:
    """The nodes of one job, in rank order."""

    job_id: str
    addresses: tuple[str, ...]  # where the other nodes reach each node (rank order)
    gpus_per_node: int
    port: int

    @classmethod
    def of(cls, job_id: str, spec: JobSpec, nodes: list[Node]) -> NodeGroup:
        ordered = sorted(nodes, key=lambda node: node.rank)
        return cls(
            job_id=job_id,
            addresses=tuple(node.private_host or node.host for node in ordered),
            gpus_per_node=max(spec.resources.gpu_count, 1),
            port=rendezvous_port(job_id),
        )

    @property
    def size(self) -> int:
        return len(self.addresses)

    @property
    def head(self) -> str:
        return self.addresses[0]

    @property
    def distributed(self) -> bool:
        """More than one process in all: the workload runs under torchrun."""
        return self.size * self.gpus_per_node > 1

    def environment(self, rank: int) -> dict[str, str]:
        """What every node's workload (a custom command too) is told about the group."""
        return {
            "GPUJOBS_NODE_RANK": str(rank),
            "GPUJOBS_NUM_NODES": str(self.size),
            "GPUJOBS_HEAD_ADDR": self.head,
            "GPUJOBS_HEAD_PORT": str(self.port),
            "GPUJOBS_NODE_ADDRS": ",".join(self.addresses),
            "GPUJOBS_GPUS_PER_NODE": str(self.gpus_per_node),
        }

    def torchrun(self, rank: int) -> list[str]:
        """`python -m` arguments that start torchrun for node `rank`, before `-m jobs.<name>`."""
        return [
            "torch.distributed.run",
            "--nnodes", str(self.size),
            "--nproc-per-node", str(self.gpus_per_node),
            "--node-rank", str(rank),
            "--master-addr", self.head,
            "--master-port", str(self.port),
        ]  # fmt: skip
