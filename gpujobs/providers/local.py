"""The local provider: this machine, no account. The embedded default: a first launch works offline.

A "node" is a work directory under `<gpujobs home>/work/<job id>`; terminating it stops the job's
process group and removes the directory. It never touches anything outside that directory.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

from gpujobs.providers.base import (
    Availability,
    Credentials,
    Node,
    NotTerminatedError,
    Offer,
    ProvisioningError,
    Quota,
    TaggedResource,
)
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.runtime.stop_job import stop_job_here
from gpujobs.spec import JobSpec, Resources

_GPU_QUERY_TIMEOUT_S = 5.0


class LocalProvider:
    name = "local"

    def __init__(
        self, work_root: Path, *, stop_grace_s: float = 10.0, cost_per_hour: float = 0.0
    ) -> None:
        self.work_root = work_root
        self.stop_grace_s = stop_grace_s
        self.cost_per_hour = cost_per_hour  # free, unless the spec prices this machine

    def for_spec(self, spec: JobSpec) -> LocalProvider:
        configured = copy.copy(self)
        configured.cost_per_hour = spec.cost_per_hour or 0.0
        return configured

    def check(self) -> Credentials:
        return Credentials(provider=self.name, ok=True, found="this machine; no account needed")

    def offers(self, resources: Resources) -> list[Offer]:
        gpu, gpus = _local_gpus()
        self.work_root.mkdir(parents=True, exist_ok=True)
        return [
            Offer(
                provider=self.name,
                instance_type="this-machine",
                region="local",
                gpu=gpu,
                gpus=gpus,
                cpus=os.cpu_count() or 1,
                memory_gb=round(_memory_bytes() / 1e9, 1),
                disk_gb=round(shutil.disk_usage(self.work_root).free / 1e9, 1),
                price_per_hour=self.cost_per_hour,
                availability=Availability.AVAILABLE,
                max_nodes=1,
            )
        ]

    def quota(self, offer: Offer) -> Quota:
        return Quota(
            provider=self.name,
            region="local",
            code="none",
            name="this machine",
            unit="node",
            limit=None,
        )

    def provision(
        self, job_id: str, offer: Offer, ssh_public_key: str | None, nodes: int, *, restart: int = 0
    ) -> list[Node]:
        if nodes != 1:
            raise ProvisioningError(
                f"the local provider runs one node, the spec asks for {nodes}: "
                "use the ssh provider or a cloud for several"
            )
        workdir = self._workdir(job_id)
        # exist_ok: provisioning the same job twice is the same node (idempotent).
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return [
            Node(
                provider=self.name,
                job_id=job_id,
                node_id=node_id(job_id, restart),
                host="localhost",
                workdir=str(workdir),
                transport="local",
                runtime="host",
                instance_type=offer.instance_type,
                region=offer.region,
                price_per_hour=offer.price_per_hour,
            )
        ]

    def wait_ready(self, nodes: list[Node]) -> list[Node]:
        return nodes

    def terminate(self, nodes: list[Node]) -> None:
        for node in nodes:
            workdir = Path(node.workdir)
            if workdir.resolve().parent != self.work_root.resolve():
                raise NotTerminatedError(
                    f"refusing to remove {workdir}: not a gpujobs work directory"
                )
            self._stop_processes(workdir)
            shutil.rmtree(workdir, ignore_errors=True)
            if workdir.exists():
                raise NotTerminatedError(f"could not remove {workdir}; remove it by hand")

    def owned(self) -> list[Node]:
        return [self._node(Path(found.resource_id)) for found in self._workdirs()]

    def tagged(self) -> list[TaggedResource]:
        """Every container a job of the docker runtime left here (first: they run in the
        folders), then every job's work directory under the work root."""
        return [*self._containers(), *self._workdirs()]

    def _containers(self) -> list[TaggedResource]:
        """Containers labelled with a job (`gpujobs-job=<id>`); none where docker is not."""
        if shutil.which("docker") is None:
            return []
        listed = subprocess.run(
            ["docker", "ps", "-a", "--filter", "label=gpujobs-job",
             "--format", '{{.ID}}\t{{.Label "gpujobs-job"}}'],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        found = []
        for line in listed.stdout.splitlines() if listed.returncode == 0 else []:
            container, _, job_id = line.partition("\t")
            found.append(
                TaggedResource(
                    provider=self.name,
                    kind="container",
                    resource_id=container,
                    region="local",
                    job_id=job_id,
                )
            )
        return found

    def _workdirs(self) -> list[TaggedResource]:
        """Every job's work directory under the work root (its age: its last change; the
        filesystem keeps no creation time everywhere)."""
        if not self.work_root.is_dir():
            return []
        found = []
        for path in sorted(self.work_root.iterdir()):
            try:
                if not path.is_dir():
                    continue
                changed = path.stat().st_mtime
            except OSError:  # removed meanwhile
                continue
            found.append(
                TaggedResource(
                    provider=self.name,
                    kind="workdir",
                    resource_id=str(path),
                    region="local",
                    job_id=path.name,
                    created_at=changed,
                    price_per_hour=self.cost_per_hour,
                    node_id=f"{path.name}-0",
                )
            )
        return found

    def delete(self, resource: TaggedResource) -> None:
        """Remove a container; or stop what runs in a work directory and remove it
        (terminate's own checks apply)."""
        if resource.kind == "container":
            argv = ["docker", "rm", "-f", resource.resource_id]
            removed = subprocess.run(argv, capture_output=True, text=True, timeout=120)
            if removed.returncode and "No such container" not in removed.stderr:
                raise NotTerminatedError(
                    f"docker rm -f {resource.resource_id}: {removed.stderr.strip()}"
                )
            return
        self.terminate([self._node(Path(resource.resource_id))])

    def _node(self, workdir: Path) -> Node:
        return Node(
            provider=self.name,
            job_id=workdir.name,
            node_id=f"{workdir.name}-0",
            host="localhost",
            workdir=str(workdir),
            transport="local",
            runtime="host",
            instance_type="this-machine",
            region="local",
        )

    def _workdir(self, job_id: str) -> Path:
        return self.work_root / job_id

    def _stop_processes(self, workdir: Path) -> None:
        """Stop every process of the job, background children included: TERM (the workload
        saves), then KILL after a grace (see runtime/stop_job.sh)."""
        stop_job_here(str(workdir), self.stop_grace_s)


def node_id(job_id: str, restart: int = 0, rank: int = 0) -> str:
    """A local or ssh node's id: its job's folder is the same after a restart, while the ledger
    and the node records need a row per node the job used."""
    return f"{job_id}-{rank}" if restart == 0 else f"{job_id}-{rank}-r{restart}"


def job_pid(workdir: Path) -> int | None:
    """The launch script's pid, if that process still belongs to this work directory.

    The cwd check guards against a recycled pid: we never signal a process that is not ours.
    """
    layout = NodeLayout(str(workdir))
    pid = None
    for candidate in (layout.pid, layout.started_pid):
        try:
            pid = int(Path(candidate).read_text().strip())
            break
        except (OSError, ValueError):
            continue
    if pid is None:
        return None
    if not _group_alive(pid):
        return None
    if not Path("/proc/self").exists():
        return pid  # no procfs (macOS): the pid file is all we have
    try:
        return pid if Path(f"/proc/{pid}/cwd").resolve(strict=True) == workdir.resolve() else None
    except OSError:
        return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 0


def _local_gpus() -> tuple[str | None, int]:
    """GPU model and count from nvidia-smi, or (None, 0) where there is none."""
    if shutil.which("nvidia-smi") is None:
        return None, 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=_GPU_QUERY_TIMEOUT_S,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return None, 0
    names = [line.strip() for line in out.splitlines() if line.strip()]
    if not names:
        return None, 0
    return _short_gpu_name(names[0]), len(names)


def _short_gpu_name(full: str) -> str:
    """'NVIDIA A100-SXM4-80GB' -> 'A100', 'Tesla T4' -> 'T4': the names specs use."""
    words = [w for w in full.replace("-", " ").split() if w.upper() not in {"NVIDIA", "TESLA"}]
    return words[0].upper() if words else full
