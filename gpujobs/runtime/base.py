"""The Runtime seam: prepare a node to run the workload, and say the command that runs it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from gpujobs.remote.transport import Transport
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.spec import JobSpec

if TYPE_CHECKING:
    from gpujobs.group import NodeGroup


class Runtime(Protocol):
    name: str

    def prepare(self, transport: Transport, layout: NodeLayout, spec: JobSpec) -> None:
        """Make the node able to run the workload (or raise saying what is missing)."""
        ...

    def argv(
        self, spec: JobSpec, layout: NodeLayout, group: NodeGroup | None = None, rank: int = 0
    ) -> list[str]:
        """The command that runs the workload on the node (node `rank` of `group`)."""
        ...


def workload_argv(
    python: str, spec: JobSpec, layout: NodeLayout, group: NodeGroup | None = None, rank: int = 0
) -> list[str]:
    """The bundled-workload convention: python -m jobs.<name> --data --out --resume ... + args;
    under torchrun (`python -m torch.distributed.run ... -m jobs.<name> ...`) when the group
    runs more than one process.

    `--resume` is always passed: a first run finds no checkpoint and starts fresh, a restarted one
    continues from the newest checkpoint.
    """
    if spec.command is not None:
        return ["sh", "-c", spec.command]
    launcher = [*group.torchrun(rank), "-m"] if group is not None and group.distributed else []
    return [
        python, "-m", *launcher, f"jobs.{spec.workload}",
        *workload_flags(spec, data=layout.data, out=layout.checkpoints),
    ]  # fmt: skip


def workload_flags(spec: JobSpec, *, data: str, out: str) -> list[str]:
    """The flags every bundled workload takes, then the spec's own `args`."""
    return [
        "--data", data,
        "--out", out,
        "--resume",
        "--checkpoint-every-minutes", f"{spec.checkpoints.every_minutes:g}",
        "--keep", str(spec.checkpoints.keep),
        *spec.workload_flags(),
    ]  # fmt: skip


def job_environment(
    job_id: str,
    spec: JobSpec,
    layout: NodeLayout,
    group: NodeGroup | None = None,
    rank: int = 0,
) -> dict[str, str]:
    """What the workload finds in its environment: the spec's env plus where things are, and
    for a group, where the other nodes are (GPUJOBS_NODE_RANK, GPUJOBS_NUM_NODES, ...)."""
    return {
        **{key: str(value) for key, value in spec.env.items()},
        **(group.environment(rank) if group is not None else {}),
        "GPUJOBS_JOB_ID": job_id,
        "GPUJOBS_DATA_DIR": layout.data,
        "GPUJOBS_CKPT_DIR": layout.checkpoints,
        "PYTHONPATH": layout.code,
        "PYTHONUNBUFFERED": "1",
    }
