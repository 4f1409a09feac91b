"""The docker runtime: the workload image from docker/, run with the node's GPUs, the dataset
mounted read-only at `dataset.target` and the checkpoint folder at `checkpoints.path`.

The command is built as argv (no shell), and environment values never appear in it: the launch
script sources the job's 0600 env file, and `-e NAME` tells docker to pass NAME's value through.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from gpujobs import __version__
from gpujobs.errors import ProvisioningError
from gpujobs.remote.sync import push_dir
from gpujobs.remote.transport import Transport
from gpujobs.runtime.base import workload_flags
from gpujobs.runtime.bundle import bundle_digest, is_bundle_junk
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.runtime.registry import log_in, login_for
from gpujobs.spec import JobSpec
from gpujobs.workloads import jobs_package_dir

if TYPE_CHECKING:
    from gpujobs.group import NodeGroup

# Built from docker/Dockerfile (shipped as gpujobs/runtime/Dockerfile) by the node itself, or by
# `gpujobs image build`; tagged by the content hash of what goes into it (workload_image_tag).
IMAGE_REPOSITORY = "gpujobs-workloads"
DEFAULT_IMAGE = f"{IMAGE_REPOSITORY}:{__version__}"
# Build arguments a node's build takes from the driver's environment: another base (an
# air-gapped cluster's mirror, a ROCm image) and a folder of wheels inside it to install from.
# Exit 0 on a host whose GPUs a container can be given: the driver answers, and docker has the
# NVIDIA runtime (or CDI) to pass them through.
HAS_NVIDIA_GPU = (
    "nvidia-smi -L >/dev/null 2>&1 && "
    "{ docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q nvidia || "
    "[ -d /etc/cdi ] || [ -d /var/run/cdi ]; }"
)
# Every container of a job ($1): its run's and its setup's, by their label.
REMOVE_CONTAINERS = (
    "command -v docker >/dev/null 2>&1 || exit 0; "
    'ids=$(docker ps -aq --filter "label=gpujobs-job=$1"); '
    '[ -z "$ids" ] || docker rm -f $ids >/dev/null'
)
BUILD_ARG_ENV = {"BASE": "GPUJOBS_IMAGE_BASE", "WHEELS": "GPUJOBS_IMAGE_WHEELS"}
# Inside the container: the user's code folder (`workdir:`), and the working folder of every job
# (relative `files` paths are inside it).
CONTAINER_WORKDIR = "/workspace"
# A setup's result: the image the setup ran in, committed, tagged by the setup's key.
SETUP_IMAGE = "gpujobs-setup"
# Runs the setup in a container of the image, commits it as the setup's image, and removes the
# container whatever happened. Arguments: name, tag, then the `docker run` options and image.
_SETUP_IN_CONTAINER = (
    'name=$1; tag=$2; shift 2; docker rm -f "$name" >/dev/null 2>&1\n'
    'docker run --name "$name" "$@"; rc=$?\n'
    'if [ "$rc" -eq 0 ]; then docker commit "$name" "$tag" >/dev/null; rc=$?; fi\n'
    'docker rm -f "$name" >/dev/null 2>&1; exit "$rc"\n'
)


def dockerfile() -> bytes:
    return resources.files("gpujobs.runtime").joinpath("Dockerfile").read_bytes()


def build_args() -> dict[str, str]:
    return {arg: os.environ[env] for arg, env in BUILD_ARG_ENV.items() if os.environ.get(env)}


def workload_image_tag(args: dict[str, str] | None = None) -> str:
    """The tag of the workload image for this gpujobs: the hash of its Dockerfile, of every
    file of the bundled workloads and of the build arguments. A node that has it skips the
    build; a changed workload makes a new tag, never a stale image."""
    digest = hashlib.sha256(dockerfile())
    for name, value in sorted((args if args is not None else build_args()).items()):
        digest.update(f"\0{name}={value}".encode())
    digest.update(f"\0bundle={bundle_digest()}".encode())
    return f"{IMAGE_REPOSITORY}:{__version__}-{digest.hexdigest()[:12]}"


class DockerRuntime:
    name = "docker"

    def __init__(self, job_id: str, image: str = DEFAULT_IMAGE) -> None:
        self.job_id = job_id
        self.image = image
        self.user: str | None = None  # uid:gid on the node, so checkpoints belong to its user
        self.mounts: list[tuple[str, str]] = []  # `files`: (cached copy, path in the container)
        self.setup_image: str | None = None  # the image a setup made, once it has a key
        self.has_gpus: bool | None = None  # what prepare() found on the node; None: not asked
        # "host" where the engine has no default bridge (dockerd --bridge=none): a container
        # then shares the node's network, as the host and venv runtimes' processes do.
        self.network: str | None = None

    def prepare(self, transport: Transport, layout: NodeLayout, spec: JobSpec) -> None:
        probe = transport.run(
            ["docker", "version", "--format", "{{.Server.Version}}"], timeout=60, check=False
        )
        if not probe.ok:
            raise ProvisioningError(
                f"docker is not usable on the node ({probe.tail(2) or 'not installed'}); "
                "use a node with docker, or the venv runtime where there is no root"
            )
        self.image = spec.image or self.image
        self.has_gpus = transport.run(["sh", "-c", HAS_NVIDIA_GPU], check=False).ok
        bridge = transport.run(["docker", "network", "inspect", "bridge"], check=False)
        self.network = None if bridge.ok else "host"
        if login := login_for(spec):
            log_in(transport, login)
        uid = transport.run(["id", "-u"]).stdout.strip()
        gid = transport.run(["id", "-g"]).stdout.strip()
        self.user = f"{uid}:{gid}"

    def build_argv(
        self, transport: Transport, layout: NodeLayout, spec: JobSpec
    ) -> list[str] | None:
        """The default image is built on the node from the Dockerfile and the bundle gpujobs
        sends anyway, once per content (its tag says which); a named image is used as it is."""
        if spec.image is not None:
            present = transport.run(["docker", "image", "inspect", spec.image], check=False)
            return None if present.ok else ["docker", "pull", spec.image]
        args = build_args()
        self.image = workload_image_tag(args)
        if transport.run(["docker", "image", "inspect", self.image], check=False).ok:
            return None
        # A build context of its own: the job's code/jobs is a link to the host's shared
        # bundle, and docker does not follow a link out of its context.
        context = f"{layout.code}/image"
        push_dir(transport, jobs_package_dir(), f"{context}/jobs", skip=is_bundle_junk)
        with tempfile.TemporaryDirectory(prefix="gpujobs-") as folder:
            local = Path(folder) / "Dockerfile"
            local.write_bytes(dockerfile())
            transport.put(local, f"{context}/Dockerfile")
        flags = [
            word for name, value in args.items() for word in ("--build-arg", f"{name}={value}")
        ]
        if self.network:
            flags += ["--network", self.network]
        return ["docker", "build", "--label", "gpujobs-image=workloads", *flags,
                "-f", f"{context}/Dockerfile", "-t", self.image, context]  # fmt: skip

    def environment_id(self) -> str:
        return f"docker:{self.image}"  # prepare() made it the spec's image, if it names one

    def use_files(
        self, transport: Transport, layout: NodeLayout, spec: JobSpec, cached: dict[str, str]
    ) -> None:
        """Each file is mounted read-only at its node path (a relative one inside the job's
        working folder), straight from the node's cache."""
        self.mounts = [
            (source, path if path.startswith("/") else f"{CONTAINER_WORKDIR}/{path}")
            for path, source in cached.items()
        ]

    def setup_argv(self, spec: JobSpec, layout: NodeLayout, key: str) -> list[str]:
        base = spec.image or self.image
        self.setup_image = f"{SETUP_IMAGE}:{key}"
        # As the container's root: what it installs lands in the image for every user.
        run = self._run_options(spec, layout, group=None, rank=0, as_node_user=False)
        return [
            "sh", "-c", _SETUP_IN_CONTAINER, "sh", f"gpujobs-setup-{self.job_id}",
            self.setup_image, *run, "--entrypoint", "sh", base, "-c", spec.setup or "true",
        ]  # fmt: skip

    def argv(
        self, spec: JobSpec, layout: NodeLayout, group: NodeGroup | None = None, rank: int = 0
    ) -> list[str]:
        image = self.setup_image or spec.image or self.image
        command = [
            "docker",
            "run",
            "--rm",
            "--name",
            f"gpujobs-{self.job_id}",
            *self._run_options(spec, layout, group, rank),
            *self._published(spec, group),
        ]
        if spec.command is not None:
            return [*command, "--entrypoint", "sh", image, "-c", spec.command]
        # The image's entrypoint is `python -m`.
        launcher = [*group.torchrun(rank), "-m"] if group is not None and group.distributed else []
        data_target = spec.dataset.target if spec.dataset else "/data"
        return [
            *command,
            image,
            *launcher,
            f"jobs.{spec.workload}",
            *workload_flags(spec, data=data_target, out=spec.checkpoints.path),
        ]

    def _published(self, spec: JobSpec, group: NodeGroup | None) -> list[str]:
        """The spec's `ports` on the node's loopback only, where `gpujobs forward` reaches them
        over SSH; on the host's network they are there already."""
        if self.network == "host" or (group is not None and group.size > 1):
            return []
        return [word for port in spec.ports for word in ("-p", f"127.0.0.1:{port}:{port}")]

    def _run_options(
        self,
        spec: JobSpec,
        layout: NodeLayout,
        group: NodeGroup | None,
        rank: int,
        *,
        as_node_user: bool = True,
    ) -> list[str]:
        """What a job's containers (its setup's and its own) are run with: labels, GPUs,
        network, user, mounts, environment names and working folder."""
        command = [
            # The default 64 MB /dev/shm starves PyTorch DataLoader workers.
            "--ipc",
            "host",
            "--label",
            f"gpujobs-job={self.job_id}",
        ]
        # `--gpus all` fails on a host without the NVIDIA runtime: ask the node, not the spec.
        gpus = self.has_gpus if self.has_gpus is not None else spec.resources.gpu_count > 0
        if gpus:
            command += ["--gpus", "all"]
        if group is not None and group.size > 1:
            # The other nodes reach torchrun's rendezvous (and NCCL) on the host's addresses.
            command += ["--network", "host"]
        elif self.network:
            command += ["--network", self.network]
        if self.user and as_node_user:
            command += ["--user", self.user]
        data_target = spec.dataset.target if spec.dataset else "/data"
        command += [
            "-v",
            f"{layout.data}:{data_target}:ro",
            "-v",
            f"{layout.checkpoints}:{spec.checkpoints.path}",
        ]
        if spec.workdir is not None:
            command += ["-v", f"{layout.src}:{CONTAINER_WORKDIR}"]
        for source, target in self.mounts:
            command += ["-v", f"{source}:{target}:ro"]
        if spec.workdir is not None or any(not path.startswith("/") for path in spec.files):
            command += ["-w", CONTAINER_WORKDIR]
        group_names = sorted(group.environment(rank)) if group is not None else []
        for name in [*sorted(spec.env), *group_names, "GPUJOBS_JOB_ID"]:
            command += ["-e", name]
        command += [
            "-e",
            f"GPUJOBS_DATA_DIR={data_target}",
            "-e",
            f"GPUJOBS_CKPT_DIR={spec.checkpoints.path}",
            "-e",
            "GPUJOBS_FILES=",
        ]
        return command
