"""The docker runtime: the workload image from docker/, run with the node's GPUs, the dataset
mounted read-only at `dataset.target` and the checkpoint folder at `checkpoints.path`.

The command is built as argv (no shell), and environment values never appear in it: the launch
script sources the job's 0600 env file, and `-e NAME` tells docker to pass NAME's value through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpujobs import __version__
from gpujobs.errors import ProvisioningError
from gpujobs.remote.transport import Transport
from gpujobs.runtime.base import workload_flags
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.spec import JobSpec

if TYPE_CHECKING:
    from gpujobs.group import NodeGroup

# Built from docker/Dockerfile: `docker build -f docker/Dockerfile -t gpujobs-workloads:0.1.0 .`
DEFAULT_IMAGE = f"gpujobs-workloads:{__version__}"


class DockerRuntime:
    name = "docker"

    def __init__(self, job_id: str, image: str = DEFAULT_IMAGE) -> None:
        self.job_id = job_id
        self.image = image
        self.user: str | None = None  # uid:gid on the node, so checkpoints belong to its user

    def prepare(self, transport: Transport, layout: NodeLayout, spec: JobSpec) -> None:
        probe = transport.run(
            ["docker", "version", "--format", "{{.Server.Version}}"], timeout=60, check=False
        )
        if not probe.ok:
            raise ProvisioningError(
                f"docker is not usable on the node ({probe.tail(2) or 'not installed'}); "
                "use a node with docker, or the venv runtime where there is no root"
            )
        uid = transport.run(["id", "-u"]).stdout.strip()
        gid = transport.run(["id", "-g"]).stdout.strip()
        self.user = f"{uid}:{gid}"

    def argv(
        self, spec: JobSpec, layout: NodeLayout, group: NodeGroup | None = None, rank: int = 0
    ) -> list[str]:
        image = spec.image or self.image
        command = [
            "docker",
            "run",
            "--rm",
            "--name",
            f"gpujobs-{self.job_id}",
            # The default 64 MB /dev/shm starves PyTorch DataLoader workers.
            "--ipc",
            "host",
            "--label",
            f"gpujobs-job={self.job_id}",
        ]
        if spec.resources.gpu_count > 0:
            command += ["--gpus", "all"]
        if group is not None and group.size > 1:
            # The other nodes reach torchrun's rendezvous (and NCCL) on the host's addresses.
            command += ["--network", "host"]
        if self.user:
            command += ["--user", self.user]
        data_target = spec.dataset.target if spec.dataset else "/data"
        command += [
            "-v",
            f"{layout.data}:{data_target}:ro",
            "-v",
            f"{layout.checkpoints}:{spec.checkpoints.path}",
        ]
        group_names = sorted(group.environment(rank)) if group is not None else []
        for name in [*sorted(spec.env), *group_names, "GPUJOBS_JOB_ID"]:
            command += ["-e", name]
        command += [
            "-e",
            f"GPUJOBS_DATA_DIR={data_target}",
            "-e",
            f"GPUJOBS_CKPT_DIR={spec.checkpoints.path}",
        ]
        if spec.command is not None:
            return [*command, "--entrypoint", "sh", image, "-c", spec.command]
        # The image's entrypoint is `python -m`.
        launcher = [*group.torchrun(rank), "-m"] if group is not None and group.distributed else []
        return [
            *command,
            image,
            *launcher,
            f"jobs.{spec.workload}",
            *workload_flags(spec, data=data_target, out=spec.checkpoints.path),
        ]
