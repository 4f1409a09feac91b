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

    def build_argv(
        self, transport: Transport, layout: NodeLayout, spec: JobSpec
    ) -> list[str] | None:
        """A build the job's environment needs first (an image), run streamed after prepare;
        None when there is nothing to build (or it is built already)."""
        ...

    def setup_argv(self, spec: JobSpec, layout: NodeLayout, key: str) -> list[str]:
        """The command that runs the spec's `setup:` in the environment the job will run in;
        `key` names that setup's result. Called whether or not the setup must run (a runtime
        whose setup makes something new, an image, starts using it from here on)."""
        ...

    def environment_id(self) -> str:
        """What the job's environment is made of (an interpreter, a venv, an image): a setup
        that ran in one need not run again in the same one."""
        ...

    def use_files(
        self, transport: Transport, layout: NodeLayout, spec: JobSpec, cached: dict[str, str]
    ) -> None:
        """Make the spec's `files` (node path -> where the node's cache holds it) appear where
        the job looks for them."""
        ...


def in_path_env(bin_dir: str | None, argv: list[str]) -> list[str]:
    """argv run with `bin_dir` first on PATH (and as VIRTUAL_ENV when it is a venv's), so a
    `pip install` in a setup or a `python` in a command is the runtime's own."""
    if not bin_dir:
        return argv
    script = 'PATH="$1:$PATH"; export PATH; shift; exec "$@"'
    return ["sh", "-c", script, "sh", bin_dir, *argv]


class ProcessRuntime:
    """What the runtimes without containers (host, venv) share: the job is a process of the
    node's user, `files` are symlinks from the node's cache, setup and command run with the
    runtime's `bin_dir` first on PATH, and there is no image to build."""

    def __init__(self) -> None:
        self.node_paths: dict[str, str] = {}  # `files` node path -> its place (use_files)

    @property
    def bin_dir(self) -> str | None:
        raise NotImplementedError

    def setup_argv(self, spec: JobSpec, layout: NodeLayout, key: str) -> list[str]:
        return in_path_env(self.bin_dir, ["sh", "-c", spec.setup or "true"])

    def build_argv(
        self, transport: Transport, layout: NodeLayout, spec: JobSpec
    ) -> list[str] | None:
        return None  # the node's own Python, or a venv prepare() made

    def use_files(
        self, transport: Transport, layout: NodeLayout, spec: JobSpec, cached: dict[str, str]
    ) -> None:
        self.node_paths = link_files(transport, layout, spec, cached)


def link_files(
    transport: Transport, layout: NodeLayout, spec: JobSpec, cached: dict[str, str]
) -> dict[str, str]:
    """A node without containers: each `files` entry becomes a symlink to its cached copy at
    its place (an absolute node path under the job's `files/`, a relative one in the job's
    working folder). Returns absolute node path -> real place, for the workload's args."""
    places: dict[str, str] = {}
    has_code = spec.workdir is not None
    for node_path, source in cached.items():
        place = layout.file_place(node_path, has_code)
        transport.run(
            ["sh", "-c", 'mkdir -p "$(dirname "$2")" && ln -sfn "$1" "$2"', "sh", source, place]
        )
        if node_path.startswith("/"):
            places[node_path] = place
    return places


def workload_argv(
    python: str,
    spec: JobSpec,
    layout: NodeLayout,
    group: NodeGroup | None = None,
    rank: int = 0,
    *,
    node_paths: dict[str, str] | None = None,
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
        *workload_flags(spec, data=layout.data, out=layout.checkpoints, node_paths=node_paths),
    ]  # fmt: skip


def workload_flags(
    spec: JobSpec, *, data: str, out: str, node_paths: dict[str, str] | None = None
) -> list[str]:
    """The flags every bundled workload takes, then the spec's own `args`."""
    return [
        "--data", data,
        "--out", out,
        "--resume",
        "--checkpoint-every-minutes", f"{spec.checkpoints.every_minutes:g}",
        "--keep", str(spec.checkpoints.keep),
        *spec.workload_flags(node_paths),
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
        # `files` with an absolute node path are at "$GPUJOBS_FILES<path>" (a container has
        # them at <path> itself, and sets this empty).
        "GPUJOBS_FILES": layout.files,
        "PYTHONPATH": layout.code,
        "PYTHONUNBUFFERED": "1",
    }
