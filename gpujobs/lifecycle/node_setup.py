"""Getting one node ready for its workload: wait for its bootstrap (a cloud node installs Docker
and its NVIDIA runtime at boot), make its folders, push the bundled code, prepare its runtime,
and give it the dataset.

The same steps on every node of a group, so they are written once, for one node, and run on
every node at once (a thread each): a group's setup then takes as long as its slowest node, not
the sum of them. The launch state machine (lifecycle.py) records the SETTING_UP and SYNCING
transitions around them.
"""

from __future__ import annotations

import posixpath
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gpujobs.clock import Clock
from gpujobs.errors import Cancelled, ProvisioningError
from gpujobs.lifecycle.events import CancelToken
from gpujobs.lifecycle.job_files import (
    ContentHashes,
    StepRunner,
    run_setup,
    send_files,
    send_workdir,
)
from gpujobs.lifecycle.node_session import NodeSession
from gpujobs.providers.base import Node
from gpujobs.remote.fetch import SourceRequest, fetch_on_node, start_checkpoint_upload
from gpujobs.remote.transport import Transport
from gpujobs.runtime.base import Runtime, job_environment
from gpujobs.runtime.host import HostRuntime
from gpujobs.spec import JobSpec

T = TypeVar("T")
_FETCH_NOTE_EVERY_S = 30.0

_BOOTSTRAP_PROBE = (
    'if [ -e "$1" ]; then echo ready; elif [ -e "$1.failed" ]; then cat "$1.failed"; fi'
)


def fetch_dataset(session: NodeSession, node: Node, spec: JobSpec, **follow: Any) -> list[str]:
    """The node pulls the dataset's buckets and URLs itself, through the host's cache;
    `follow`: fetch_on_node's on_line, should_stop, sleep and poll_s."""
    assert spec.dataset is not None
    python = (
        sys.executable
        if node.transport == "local"
        else (spec.ssh.python if spec.ssh else "python3")
    )
    layout = session.layout
    return fetch_on_node(
        session.transport,
        python=python,
        sources=[
            SourceRequest(source, spec.dataset.sha256, spec.dataset.endpoint_url)
            for source in spec.dataset.fetched_sources
        ],
        dest=layout.data,
        cache=layout.cache,
        log=layout.log,
        scratch=posixpath.join(layout.workdir, ".fetch"),
        env={key: str(value) for key, value in spec.env.items()},
        write_private=lambda text, path: session.write_private(text, path),
        **follow,
    )


def _node_python(node: Node, spec: JobSpec) -> str:
    if node.transport == "local":
        return sys.executable
    return spec.ssh.python if spec.ssh else "python3"


def start_upload(session: NodeSession, node: Node, spec: JobSpec) -> int:
    """The node's checkpoint uploader, detached: it outlives this laptop's connection."""
    assert spec.checkpoints.upload is not None
    layout = session.layout
    return start_checkpoint_upload(
        session.transport,
        python=_node_python(node, spec),
        target=spec.checkpoints.upload,
        folder=layout.checkpoints,
        workdir=layout.workdir,
        exit_code=layout.exit_code,
        cache=layout.cache,
        log=layout.log,
        env={key: str(value) for key, value in spec.env.items()},
        endpoint_url=spec.checkpoints.upload_endpoint_url,
        write_private=lambda text, path: session.write_private(text, path),
    )


def runtime_for(node: Node, spec: JobSpec) -> Runtime:
    """The spec's runtime, or the provider's own choice for the node (`runtime: auto`)."""
    kind = node.runtime if spec.runtime == "auto" else spec.runtime
    remote_python = spec.ssh.python if spec.ssh else "python3"
    if node.provider == "slurm" and spec.slurm is not None:
        remote_python = spec.slurm.python
    if kind == "docker":
        from gpujobs.runtime.docker import DockerRuntime

        return DockerRuntime(node.job_id)
    if kind == "venv":
        from gpujobs.runtime.venv import VenvRuntime

        if node.transport == "local":
            return VenvRuntime(str(Path(node.workdir).parent.parent / "venvs"), sys.executable)
        return VenvRuntime(node.cache_dir or f"{node.workdir}/venvs", remote_python)
    return HostRuntime() if node.transport == "local" else HostRuntime(remote_python)


@dataclass(frozen=True)
class NodeSetup:
    """What setting a node up needs from the driver of its job. `note` and `progress` are
    called from the nodes' threads: the driver passes them on one at a time."""

    spec: JobSpec
    runtime_for: Callable[[Node, JobSpec], Runtime]
    clock: Clock
    cancel: CancelToken
    note: Callable[[str], None]
    progress: Callable[[str, int, int], None]
    bootstrap_timeout_s: float
    bootstrap_poll_s: float
    on_log: Callable[[bytes], None]  # a setup's output, as it arrives (called like note)
    hashes: ContentHashes  # of `files`, remembered across launches
    runs_root: Path | None = None  # left out of the code folder's sync when inside it
    # Set when one node's step failed: the others stop at their next check.
    halted: threading.Event = field(default_factory=threading.Event)

    def on_every_node(
        self, step: Callable[[Node, NodeSession], T], nodes: list[Node], sessions: list[NodeSession]
    ) -> list[T]:
        """`step` on every node at once, a thread each; its results in the nodes' order. A
        one-node job runs it in the caller's thread, as it always did.

        The first failure is raised once every thread has ended: the other nodes stop at their
        next check, and are waited for, so none is left working on a node that teardown is
        about to remove. A call under way on a node (a pip install, say) finishes first, as it
        does when the job is cancelled."""
        if len(nodes) == 1:
            return [step(nodes[0], sessions[0])]
        self.halted.clear()
        failure: BaseException | None = None
        with ThreadPoolExecutor(len(nodes), thread_name_prefix="gpujobs-setup") as pool:
            futures = [pool.submit(step, n, s) for n, s in zip(nodes, sessions, strict=True)]
            try:
                for future in as_completed(futures):
                    error = future.exception()
                    if error is not None and failure is None:
                        failure = error
                        self.halted.set()
            except BaseException:  # KeyboardInterrupt where no handler turns it into a cancel
                self.halted.set()
                raise
        if failure is not None:
            raise failure
        return [future.result() for future in futures]

    def prepare(self, node: Node, session: NodeSession) -> Runtime:
        """Make the node ready to start the workload: its folders, the bundled code, the
        user's code folder and files, the runtime, and the setup. Returns the runtime that
        starts the workload."""
        spec = self.spec
        self.wait_for_bootstrap(session.transport, node)
        self._stop_if_halted()
        session.make_folders()
        if spec.workload is not None:
            session.push_code()
        send_workdir(session, spec, runs_root=self.runs_root, note=self.note,
                     progress=lambda done, total: self._sent("workdir", done, total))  # fmt: skip
        cached = send_files(session, spec, self.hashes, progress=self._sent, note=self.note,
                            python=_node_python(node, spec))  # fmt: skip
        self._stop_if_halted()  # before the longest step: a venv or image may take minutes
        runtime = self.runtime_for(node, spec)
        self.note(f"preparing the {runtime.name} runtime on {node.host}")
        runtime.prepare(session.transport, session.layout, spec)
        steps = StepRunner(self.clock, self.cancel, self.on_log, self.note, self.bootstrap_poll_s)
        if build := runtime.build_argv(session.transport, session.layout, spec):
            self.note(f"building the workload image on {node.host} (once per image content)")
            code = steps.run(session, build, cwd=session.layout.code, marker=None,
                             banner="docker build of the workload image")  # fmt: skip
            if code != 0:
                raise ProvisioningError(
                    f"the workload image did not build on {node.host} (exit {code}); its "
                    f"last lines:\n{steps.tail(session)}"
                )
        if cached:
            runtime.use_files(session.transport, session.layout, spec, cached)
        self._stop_if_halted()
        environment = job_environment(node.job_id, spec, session.layout, None, node.rank)
        run_setup(session, runtime, spec, environment, steps)
        if spec.checkpoints.upload and node.rank == 0:
            self.note(f"checkpoints are also uploaded to {spec.checkpoints.upload} by the node")
            start_upload(session, node, spec)
        return runtime

    def _sent(self, label: str, done: int, total: int) -> None:
        self.progress(label, done, total)
        self.cancel.raise_if_cancelled()
        self._stop_if_halted()

    def push_dataset(self, node: Node, session: NodeSession, *, of_several: bool) -> None:
        """The spec's dataset onto the node; `of_several`: the node is one of a group's. A local
        folder is sent from here; buckets, URLs, the Hub and Kaggle are fetched by the node."""
        dataset = self.spec.dataset
        if dataset is None:
            return
        label = f"dataset to node {node.rank}" if of_several else "dataset"
        if dataset.fetched_sources:
            self.note(
                f"{label}: the node fetches {', '.join(dataset.fetched_sources)} "
                "(progress in the job log)"
            )
            fetch_dataset(
                session,
                node,
                self.spec,
                on_line=self._fetch_lines(label),
                should_stop=lambda: self.cancel.cancelled or self.halted.is_set(),
                sleep=self.clock.sleep,
                poll_s=min(self.bootstrap_poll_s, 1.0),
            )
            self.cancel.raise_if_cancelled()
            self._stop_if_halted()
        if dataset.local_source is None:
            return

        def progress(done: int, total: int) -> None:
            self.progress(label, done, total)
            self.cancel.raise_if_cancelled()
            self._stop_if_halted()

        report = session.push_dataset(Path(dataset.local_source), progress)
        self.note(
            f"{label}: {report.files_total} files, {report.bytes_total} bytes, "
            f"{report.files_sent} sent ({report.method}), verified on the node"
        )

    def _fetch_lines(self, label: str) -> Callable[[str], None]:
        """The fetcher's lines as notes: each source's first and last line, and its progress
        lines at most every half minute (every note is stored; the job log has them all)."""
        last = [float("-inf")]

        def note(line: str) -> None:
            progress = line.startswith("fetch: ") and " MB/s" in line and ": done," not in line
            now = self.clock.monotonic()
            if progress and now - last[0] < _FETCH_NOTE_EVERY_S:
                return
            last[0] = now if progress else last[0]
            self.note(f"{label}: {line}")

        return note

    def wait_for_bootstrap(self, transport: Transport, node: Node) -> None:
        """A cloud node installs Docker and its NVIDIA runtime at boot; set up after that."""
        if not node.ready_file:
            return
        clock = self.clock
        deadline = clock.monotonic() + self.bootstrap_timeout_s
        self.note(f"waiting for {node.host}'s bootstrap (Docker, NVIDIA runtime)")
        while True:
            self.cancel.raise_if_cancelled()
            self._stop_if_halted()
            probe = ["sh", "-c", _BOOTSTRAP_PROBE, "sh", node.ready_file]
            answer = transport.run(probe, check=False)
            said = answer.stdout.strip()
            if said == "ready":
                return
            if said:
                raise ProvisioningError(
                    f"the node's bootstrap failed: {said} (its log: "
                    f"{node.ready_file.rsplit('/', 1)[0]}/bootstrap.log on {node.host})"
                )
            if clock.monotonic() >= deadline:
                raise ProvisioningError(
                    f"the node's bootstrap did not finish in {self.bootstrap_timeout_s:g} s"
                )
            clock.sleep(self.bootstrap_poll_s)

    def _stop_if_halted(self) -> None:
        if self.halted.is_set():
            # Never shown: the node whose failure halted this one gives the job its error.
            raise Cancelled("stopped: another node's setup failed")
