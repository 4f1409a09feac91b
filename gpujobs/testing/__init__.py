"""Fakes for gpujobs' seams, shared by its own tests and by users' tests.

- RecordingProvider: wraps a real provider, records every call, and raises an injected error
  at a chosen method (fault injection at the provider boundary).
- ScriptedProvider: a provider whose offers and per-offer provisioning errors are scripted, and
  whose nodes are real local work directories, so everything after provisioning runs for real.
- FaultyTransport: wraps a real transport and raises an injected error at a chosen method.
- FakeClock: time that moves only when slept on (or advanced).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gpujobs.providers.base import (
    Credentials,
    Node,
    NodeLoss,
    Offer,
    Provider,
    Quota,
    SupportsLossCheck,
)
from gpujobs.providers.local import LocalProvider, job_pid
from gpujobs.remote.transport import CommandResult, RemoteFile, Transport
from gpujobs.spec import Resources


@dataclass
class Call:
    method: str
    args: tuple[object, ...]


@dataclass
class RecordingProvider:
    inner: Provider
    fail_on: dict[str, BaseException] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    def _call(self, method: str, *args: object, **kwargs: object) -> object:
        self.calls.append(Call(method, args))
        if method in self.fail_on:
            raise self.fail_on[method]
        return getattr(self.inner, method)(*args, **kwargs)

    def called(self, method: str) -> int:
        return sum(1 for call in self.calls if call.method == method)

    def check(self) -> Credentials:
        return self._call("check")  # type: ignore[return-value]

    def offers(self, resources: Resources) -> list[Offer]:
        return self._call("offers", resources)  # type: ignore[return-value]

    def quota(self, offer: Offer) -> Quota:
        return self._call("quota", offer)  # type: ignore[return-value]

    def provision(
        self, job_id: str, offer: Offer, ssh_public_key: str | None, nodes: int, *, restart: int = 0
    ) -> list[Node]:
        return self._call(  # type: ignore[return-value]
            "provision", job_id, offer, ssh_public_key, nodes, restart=restart
        )

    def wait_ready(self, nodes: list[Node]) -> list[Node]:
        return self._call("wait_ready", nodes)  # type: ignore[return-value]

    def terminate(self, nodes: list[Node]) -> None:
        self._call("terminate", nodes)

    def owned(self) -> list[Node]:
        return self._call("owned")  # type: ignore[return-value]

    def losses(self, nodes: list[Node]) -> list[NodeLoss]:
        if not isinstance(self.inner, SupportsLossCheck):
            return []
        return self._call("losses", nodes)  # type: ignore[return-value]


class ScriptedProvider(LocalProvider):
    """Scripted offers; `provision_errors[instance_type]` is raised when that offer is tried."""

    def __init__(
        self,
        name: str,
        work_root: Path,
        offers: Sequence[Offer],
        *,
        provision_errors: dict[str, BaseException] | None = None,
        credentials_ok: bool = True,
    ) -> None:
        super().__init__(work_root)
        self.name = name
        self._offers = list(offers)
        self.provision_errors = dict(provision_errors or {})
        self.credentials_ok = credentials_ok
        self.provisioned: list[str] = []
        self.taken_back: set[str] = set()

    def check(self) -> Credentials:
        if self.credentials_ok:
            return Credentials(provider=self.name, ok=True, found="scripted")
        return Credentials(provider=self.name, ok=False, missing="SCRIPTED_API_KEY is not set")

    def offers(self, resources: Resources) -> list[Offer]:
        return list(self._offers)

    def quota(self, offer: Offer) -> Quota:
        return Quota(
            provider=self.name,
            region=offer.region,
            code="SCRIPTED",
            name="gpus",
            unit="GPUs",
            limit=None,
        )

    def provision(
        self, job_id: str, offer: Offer, ssh_public_key: str | None, nodes: int, *, restart: int = 0
    ) -> list[Node]:
        self.provisioned.append(offer.instance_type)
        if offer.instance_type in self.provision_errors:
            raise self.provision_errors[offer.instance_type]
        made = super().provision(job_id, offer, ssh_public_key, nodes, restart=restart)
        return [node.model_copy(update={"provider": self.name}) for node in made]

    def preempt(self, node: Node) -> None:
        """Take a node back as a spot market does: its processes die at once (SIGKILL, no
        checkpoint), and from now on `losses` reports it."""
        self.taken_back.add(node.node_id)
        pid = job_pid(Path(node.workdir))
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    def losses(self, nodes: list[Node]) -> list[NodeLoss]:
        return [
            NodeLoss(node_id=node.node_id, reason="taken back (scripted)", preempted=True)
            for node in nodes
            if node.node_id in self.taken_back
        ]


@dataclass
class FaultyTransport:
    inner: Transport
    fail_on: dict[str, BaseException] = field(default_factory=dict)

    def _maybe_fail(self, method: str) -> None:
        if method in self.fail_on:
            raise self.fail_on[method]

    def run(
        self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True
    ) -> CommandResult:
        self._maybe_fail("run")
        return self.inner.run(argv, timeout=timeout, check=check)

    def start(self, script: str, *, cwd: str) -> int:
        self._maybe_fail("start")
        return self.inner.start(script, cwd=cwd)

    def read(self, path: str, offset: int, limit: int = 1 << 20) -> bytes:
        self._maybe_fail("read")
        return self.inner.read(path, offset, limit)

    def put(
        self, local: Path, remote: str, *, mode: int | None = None, atomic: bool = True
    ) -> None:
        self._maybe_fail("put")
        self.inner.put(local, remote, mode=mode, atomic=atomic)

    def get(self, remote: str, local: Path) -> None:
        self._maybe_fail("get")
        self.inner.get(remote, local)

    def list_files(self, remote_dir: str) -> list[RemoteFile]:
        self._maybe_fail("list_files")
        return self.inner.list_files(remote_dir)

    def make_dirs(self, paths: Sequence[str], *, private: bool = False) -> None:
        self._maybe_fail("make_dirs")
        self.inner.make_dirs(paths, private=private)

    def link(self, target: str, path: str) -> None:
        self._maybe_fail("link")
        self.inner.link(target, path)

    def close(self) -> None:
        self.inner.close()


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._mono = 0.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds
