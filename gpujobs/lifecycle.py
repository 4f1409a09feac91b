"""The launch state machine.

PENDING -> PLANNING -> PROVISIONING -> SETTING_UP -> SYNCING -> RUNNING -> COLLECTING ->
TEARING_DOWN -> SUCCEEDED | FAILED | CANCELLED

A node lost while the job runs (a spot machine taken back, a node that stopped answering) takes
it RUNNING -> RECOVERING -> PROVISIONING on another placement, up to `recovery.max_restarts`
times: the lost node is torn down, the new one set up and given the dataset, the last checkpoint
that came home and the log so far, and the workload continues with `--resume`.

Each transition is recorded in the store before its side effect, so a crash leaves a record of
what may exist. Teardown runs whatever happens: success, failure, an exception, or a cancel (Ctrl-C,
SIGTERM, `gpujobs down`). Signals never raise into this code: they set a CancelToken that the
driver checks between steps and while it waits, so teardown itself cannot be interrupted.
"""

from __future__ import annotations

import functools
import shutil
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gpujobs.budget import NODE_TIMER_SLACK_S, Allowance, JobCap, Shortfall, spent_by
from gpujobs.clock import Clock, SystemClock
from gpujobs.errors import (
    BudgetRefusedError,
    Cancelled,
    ConnectionLostError,
    GpuJobsError,
    JobFailedError,
    NoCapacityError,
    ProviderError,
    ProvisioningError,
    QuotaExceededError,
)
from gpujobs.group import NodeGroup
from gpujobs.node_layout import NodeLayout
from gpujobs.node_session import NodeSession
from gpujobs.paths import HomeLayout
from gpujobs.planner import cap_for, require_placements
from gpujobs.providers.base import (
    Node,
    NodeLoss,
    Offer,
    Provider,
    SpecConfigured,
    SupportsLossCheck,
)
from gpujobs.remote.connect import connect_node
from gpujobs.remote.keys import create_job_key, delete_job_key
from gpujobs.remote.logs import tail_lines
from gpujobs.remote.transport import GivesUp, Transport
from gpujobs.retry import call_with_retry
from gpujobs.runtime.base import Runtime, job_environment
from gpujobs.runtime.host import HostRuntime
from gpujobs.spec import JobSpec
from gpujobs.state import Billing, Books, JobRecord, JobState, LedgerEntry, Store


class EventSink(Protocol):
    """Where the lifecycle reports what happens; only the CLI draws it."""

    def state(self, job_id: str, state: JobState, message: str) -> None: ...

    def log(self, data: bytes) -> None: ...

    def note(self, message: str) -> None: ...

    def progress(self, label: str, done: int, total: int) -> None: ...


class NullSink:
    def state(self, job_id: str, state: JobState, message: str) -> None:
        return None

    def log(self, data: bytes) -> None:
        return None

    def note(self, message: str) -> None:
        return None

    def progress(self, label: str, done: int, total: int) -> None:
        return None


class CancelToken:
    """Set from a signal handler or another thread; the driver stops at its next check."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""
        self.forced = False

    def cancel(self, reason: str = "cancelled by the user") -> None:
        if self._event.is_set():
            self.forced = True  # a second request: stop waiting for the graceful checkpoint
            return
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled(self.reason)


@dataclass(frozen=True)
class LifecycleConfig:
    poll_interval_s: float = 0.1  # log latency: a line shows within ~0.1 s plus the link
    stop_grace_s: float = 60.0  # how long a stopping workload gets to write its checkpoint
    liveness_every_s: float = 5.0
    teardown_attempts: int = 3
    bootstrap_timeout_s: float = 900.0  # a cloud node installing Docker and the NVIDIA runtime
    bootstrap_poll_s: float = 5.0
    # A job that costs money is stopped this much before its cap (at most a tenth of the cap),
    # so that saving its checkpoint and the teardown are paid for within it.
    cap_margin_s: float = 90.0
    cap_warning_at: float = 0.8
    # How often a running job's provider is asked whether its nodes still exist (besides
    # whenever a node stops answering); a reclaimed spot machine is seen within this.
    loss_check_every_s: float = 30.0
    # A placement that lost a node is not chosen again for this long (the spot market there
    # is short), unless every placement did.
    recovery_cooldown_s: float = 600.0


def runtime_for(node: Node, spec: JobSpec) -> Runtime:
    """The spec's runtime, or the provider's own choice for the node (`runtime: auto`)."""
    kind = node.runtime if spec.runtime == "auto" else spec.runtime
    remote_python = spec.ssh.python if spec.ssh else "python3"
    if kind == "docker":
        from gpujobs.runtime.docker import DockerRuntime

        return DockerRuntime(node.job_id)
    if kind == "venv":
        from gpujobs.runtime.venv import VenvRuntime

        if node.transport == "local":
            return VenvRuntime(str(Path(node.workdir).parent.parent / "venvs"), sys.executable)
        return VenvRuntime(node.cache_dir or f"{node.workdir}/venvs", remote_python)
    return HostRuntime() if node.transport == "local" else HostRuntime(remote_python)


class BudgetCapReached(JobFailedError):
    pass


class NodeLost(JobFailedError):
    """A node of the running job is gone (its provider says so) or stopped answering."""

    def __init__(self, reason: str, *, preempted: bool = False) -> None:
        super().__init__(reason)
        self.preempted = preempted


def _cap_left(record: JobRecord, ledger: list[LedgerEntry], since: float, by: str) -> JobCap | None:
    """What is left at `since` of the cap the job was launched under: its money less what its
    nodes had cost by then, its hours less the time since its first node."""
    if record.cap_usd is None and record.cap_hours is None:
        return None
    spent, hours_used = _usage(ledger, since)
    usd = None if record.cap_usd is None else record.cap_usd - spent
    hours = None if record.cap_hours is None else record.cap_hours - hours_used
    return JobCap(hours, usd, by)


def _usage(ledger: list[LedgerEntry], at: float) -> tuple[float, float]:
    """What a job's nodes had cost at `at`, and the hours from its first node to then."""
    first = min((entry.started_at for entry in ledger), default=at)
    return sum(entry.cost(at) for entry in ledger), (at - first) / 3600


def _by_provider(nodes: list[Node]) -> dict[str, list[Node]]:
    grouped: dict[str, list[Node]] = {}
    for node in nodes:
        grouped.setdefault(node.provider, []).append(node)
    return grouped


class Lifecycle:
    def __init__(
        self,
        store: Store,
        home: HomeLayout,
        providers: Mapping[str, Provider],
        *,
        connect: Callable[[Node], Transport] | None = None,
        runtime_for: Callable[[Node, JobSpec], Runtime] = runtime_for,
        clock: Clock | None = None,
        sink: EventSink | None = None,
        config: LifecycleConfig | None = None,
    ) -> None:
        self.store = store
        self.home = home
        self.providers = providers
        self.connect = connect or functools.partial(connect_node, home=home)
        self.runtime_for = runtime_for
        self.clock = clock or SystemClock()
        self.sink = sink or NullSink()
        self.config = config or LifecycleConfig()

    def transition(self, job_id: str, state: JobState, message: str = "") -> None:
        self.store.transition(job_id, state, message, now=self.clock.now())
        self.sink.state(job_id, state, message)

    def drive(self, job_id: str, spec: JobSpec, cancel: CancelToken) -> JobRecord:
        """Take a PENDING job to a final state; always tears down what it started."""
        _Drive(self, job_id, spec, cancel).execute()
        return self.store.job(job_id)

    def adopt(
        self, job_id: str, spec: JobSpec, nodes: list[Node], cancel: CancelToken
    ) -> JobRecord:
        """Take over a job whose driver died, from where it was, to a final state: a running
        workload is followed again (its log from the byte the last driver reached), one that was
        being set up is set up again on its nodes, one that never got a node is launched anew."""
        drive = _Drive(self, job_id, spec, cancel)
        drive.adopt(nodes)
        return self.store.job(job_id)

    def tear_down(self, nodes: list[Node]) -> str | None:
        """Terminate nodes, retrying transient provider errors. Returns an error, or None."""
        errors: list[str] = []
        for name, group in _by_provider(nodes).items():
            provider = self.providers.get(name)
            if provider is None:
                ids = ", ".join(node.node_id for node in group)
                errors.append(f"{name}: provider not configured; nodes {ids} may remain")
                continue
            try:
                # Any provider error, not only a transient one: teardown must not give up early.
                call_with_retry(
                    functools.partial(provider.terminate, group),
                    is_transient=lambda exc: isinstance(exc, ProviderError),
                    clock=self.clock,
                    attempts=self.config.teardown_attempts,
                )
            except GpuJobsError as exc:
                errors.append(f"{name}: {exc}")
                continue
            except Exception as exc:  # a provider's bug: the job still ends, with `down` to run
                errors.append(f"{name}: internal error: {exc.__class__.__name__}: {exc}")
                continue
            for node in group:
                self.store.mark_node_terminated(node.job_id, node.node_id, now=self.clock.now())
        return "; ".join(errors) or None

    def forget_job_key(self, job_id: str, nodes: list[Node] | None = None) -> None:
        """Once every node of the job is gone, its key opens nothing: delete it. The host keys
        pinned for cloud nodes go too, as their addresses will serve other machines."""
        delete_job_key(self.home.job_key_dir(job_id))
        from gpujobs.remote.ssh import HostKeyPins

        pins = HostKeyPins(self.home.known_hosts)
        for node in nodes or []:
            if node.uses_job_key and node.transport == "ssh" and node.host:
                pins.forget(node.host, node.port)


class _Drive:
    """One launch of one job. Holds what exists so far, so teardown knows what to undo."""

    def __init__(
        self, lifecycle: Lifecycle, job_id: str, spec: JobSpec, cancel: CancelToken
    ) -> None:
        self.lc = lifecycle
        self.job_id = job_id
        self.spec = spec
        self.cancel = cancel
        self.nodes: list[Node] = []
        self.sessions: list[NodeSession] = []  # one per node, in rank order
        self.runtimes: list[Runtime] = []
        self.group: NodeGroup | None = None  # set for a multi-process (torchrun) job
        self.partial: dict[int, bytes] = {}  # a node's unfinished log line (prefixed output)
        self.started_at: float | None = None
        self.cap: JobCap | None = None  # set when a placement's money is held
        self.offer: Offer | None = None  # the placement the nodes came from
        self.cooling: dict[str, float] = {}  # placement label -> monotonic time it is free again
        self.next_loss_check = 0.0
        self.failed_rank = 0  # the node whose exit code failed the job
        self.warned = False
        record = lifecycle.store.job(job_id)
        self.runs_dir = Path(record.runs_dir)

    def adopt(self, nodes: list[Node]) -> None:
        record = self.lc.store.job(self.job_id)
        if not nodes:  # it never got a node (or none was recorded): launch it anew
            self.execute()
            return
        self.nodes = nodes
        ledger = self.lc.store.ledger(self.job_id)
        clock = self.lc.clock
        live = {node.node_id for node in nodes}
        billed_from = min(
            (entry.started_at for entry in ledger if entry.node_id in live), default=clock.now()
        )
        self.cap = _cap_left(record, ledger, billed_from, "the cap held at launch")
        self.started_at = clock.monotonic() - (clock.now() - billed_from)
        following = record.state in (JobState.RUNNING, JobState.COLLECTING, JobState.TEARING_DOWN)
        self.execute(follow=following)

    def execute(self, *, follow: bool = False) -> None:
        """Every step, or (`follow`: an adopted job whose workload was started) from watching
        the workload on."""
        final, error, exit_code = JobState.FAILED, None, None
        unexpected: BaseException | None = None
        try:
            exit_code = self._run(follow=follow)
            self._collect()
            if exit_code == 0:
                final = JobState.SUCCEEDED
            else:
                error = self._failure_message(exit_code, self.failed_rank)
        except (Cancelled, KeyboardInterrupt) as exc:
            final = JobState.CANCELLED
            error = str(exc) or self.cancel.reason or "cancelled"
            self._collect_quietly()
        except GpuJobsError as exc:
            error = str(exc)
            self._collect_quietly()
        except Exception as exc:  # a bug: still tear down, then let the CLI show it
            error = f"internal error: {exc.__class__.__name__}: {exc}"
            unexpected = exc
            self._collect_quietly()
        self.lc.transition(self.job_id, JobState.TEARING_DOWN)
        for session in self.sessions:
            session.transport.close()
        teardown_error = self.lc.tear_down(self.nodes)
        if not teardown_error:
            self.lc.forget_job_key(self.job_id, self.nodes)
        if teardown_error:
            final = JobState.FAILED
            error = "; ".join(
                part
                for part in (
                    error,
                    f"teardown incomplete ({teardown_error}); run `gpujobs down {self.job_id}`",
                )
                if part
            )
        self.lc.store.set_outcome(self.job_id, exit_code=exit_code, error=error)
        self.lc.transition(self.job_id, final, error or "")
        if unexpected is not None:
            raise unexpected

    # -- steps ------------------------------------------------------------------------------
    def _run(self, *, follow: bool) -> int:
        """From the first node to the workload's exit code, through every restart a lost node
        calls for."""
        if follow:
            self._reconnect()
        else:
            if not self.nodes:
                self._plan_and_provision()
            # An adopted job whose driver died setting up a replacement restores it as well.
            self._bring_up(restore=self.lc.store.job(self.job_id).restarts > 0)
        while True:
            try:
                return self._watch()
            except NodeLost as lost:
                self._recover(lost)
            while True:  # a replacement lost while being set up is replaced in turn
                try:
                    self._bring_up(restore=True)
                    break
                except NodeLost as lost:
                    self._recover(lost)

    def _bring_up(self, *, restore: bool) -> None:
        """Set the nodes up and start the workload; `restore`: a restart, which first puts
        back the last checkpoint that came home and the log so far."""
        try:
            self._set_up()
            self._sync()
            if restore:
                self._restore()
        except ConnectionLostError as exc:
            # Only a loss the provider confirms is recovered here: silence while setting up
            # is more often a wrong address or a firewall than a reclaimed machine.
            if lost := self._confirmed_loss():
                raise lost from exc
            raise
        self._start()

    def _recover(self, lost: NodeLost) -> None:
        """Replace the lost nodes: tear them down, and provision on another placement (the
        lost one cools down), with what is left of the job's cap."""
        self._drop_session()  # its node is gone: nothing more can come from it
        self.cancel.raise_if_cancelled()
        store, allowed = self.lc.store, self.spec.recovery.max_restarts
        made = store.job(self.job_id).restarts
        if made >= allowed:
            raise JobFailedError(
                f"{lost}; not restarted: recovery.max_restarts is {allowed} and {made} "
                "restart(s) were made; the last checkpoint is home"
            )
        if self.spec.redacted() == self.spec and self.spec.env:
            raise JobFailedError(
                f"{lost}; not restarted: the job was attached to, and its env values are not "
                f"stored (its spec file changed); the last checkpoint is home"
            )
        self.lc.transition(self.job_id, JobState.RECOVERING, str(lost))
        count = store.count_restart(self.job_id)
        if self.offer is not None:
            until = self.lc.clock.monotonic() + self.lc.config.recovery_cooldown_s
            self.cooling[self.offer.label] = until
        error = self.lc.tear_down(self.nodes)
        if error:
            raise ProvisioningError(f"{lost}; the lost node is not confirmed gone: {error}")
        self.nodes = []
        self._note(f"restart {count} of {allowed}: resuming from the last checkpoint home")
        spec = self._spec_left()
        placements = self._cooled(
            require_placements(spec, self.lc.providers, self._allowance()).offers
        )
        self._step(JobState.PROVISIONING)
        self._provision(placements, spec, restart=count)

    def _spec_left(self) -> JobSpec:
        """The spec with the budget the job has left: a restart spends what the lost nodes
        did not (the user's budgets count them already), and its node's own timer is set from
        that."""
        used_usd, used_hours = self._used()
        budget = self.spec.budget
        usd = None if budget.max_usd is None else budget.max_usd - used_usd
        hours = None if budget.max_hours is None else budget.max_hours - used_hours
        if (usd is not None and usd < 0.01) or (hours is not None and hours < 1 / 60):
            raise self._cap_reached()
        left = budget.model_copy(update={"max_usd": usd, "max_hours": hours})
        return self.spec.model_copy(update={"budget": left})

    def _used(self) -> tuple[float, float]:
        """What the job's nodes have cost so far, and the hours since its first one."""
        return _usage(self.lc.store.ledger(self.job_id), self.lc.clock.now())

    def _cooled(self, placements: list[Offer]) -> list[Offer]:
        """The placements not cooling down after a loss; when every one is, wait for the first
        to be free again (the job resumes there rather than not at all)."""
        clock = self.lc.clock
        ready = [o for o in placements if self.cooling.get(o.label, 0.0) <= clock.monotonic()]
        if ready:
            return ready
        until = min(self.cooling.get(o.label, 0.0) for o in placements)
        self._note(
            f"every placement lost a node in the last {self.lc.config.recovery_cooldown_s:g} s; "
            f"trying again in {until - clock.monotonic():.0f} s"
        )
        while clock.monotonic() < until:
            self.cancel.raise_if_cancelled()
            clock.sleep(min(self.lc.config.bootstrap_poll_s, until - clock.monotonic()))
        return placements

    def _allowance(self) -> Allowance:
        return Allowance(self.lc.store.books(), self.lc.clock.now())

    def _plan_and_provision(self) -> None:
        self._step(JobState.PLANNING)
        placements = require_placements(self.spec, self.lc.providers, self._allowance()).offers
        self._step(JobState.PROVISIONING)
        self._provision(placements, self.spec, restart=0)

    def _provision(self, placements: list[Offer], spec: JobSpec, *, restart: int) -> None:
        """Take the first placement that gives nodes, holding the job's cap on each tried."""
        clock, store = self.lc.clock, self.lc.store
        self.started_at = clock.monotonic()
        key = create_job_key(self.lc.home.job_key_dir(self.job_id), self.job_id)
        attempts: list[str] = []
        refused = 0
        for offer in placements:
            self.cancel.raise_if_cancelled()
            cap = self._hold(offer, spec)
            if isinstance(cap, Shortfall):  # another launch spent it since the plan
                refused += 1
                attempts.append(f"{offer.label}: {cap.reason()}")
                continue
            self.cap, self.offer = cap, offer
            provider = self._provider_for(offer, cap)
            store.set_placement(self.job_id, offer.label)
            # The job's cap: a restart's is what the job used before it and what it may use now.
            used_usd, used_hours = self._used() if restart else (0.0, 0.0)
            store.set_caps(
                self.job_id,
                usd=None if cap.usd is None else used_usd + cap.usd,
                hours=None if cap.hours is None else used_hours + cap.hours,
            )
            cap_words = "left of its cap:" if restart else "cap"
            self._note(
                f"provisioning {offer.label} (${offer.price_per_hour:.3f}/h; "
                f"{cap_words} {cap.describe()})"
            )
            billing = self._billing(offer, cap)
            try:
                nodes = provider.provision(
                    self.job_id, offer, key.public_line, self.spec.nodes, restart=restart
                )
                self._record_nodes(nodes, billing)
                self._record_nodes(provider.wait_ready(nodes), billing)
                return
            except (NoCapacityError, QuotaExceededError) as exc:
                # Only these move on (DESIGN): refused credentials or a broken request would
                # fail the same way everywhere. The provider removed what its failed call made;
                # nodes it returned are ours to remove before the next placement.
                attempts.append(f"{offer.label}: {exc}")
                self._note(f"{offer.label}: {exc}; trying the next placement")
                error = self.lc.tear_down(self.nodes)
                if error:
                    raise ProvisioningError(f"cleaning up {offer.label} failed: {error}") from exc
                self.nodes = []
        if refused == len(attempts):
            why = (
                "what the job has left does not cover a restart"
                if restart
                else "another launch took the money since this one was planned"
            )
            raise BudgetRefusedError(f"budget: {why}; " + "; ".join(attempts))
        raise ProvisioningError(
            f"every placement failed ({len(attempts)} tried): " + "; ".join(attempts)
        )

    def _hold(self, offer: Offer, spec: JobSpec) -> JobCap | Shortfall:
        """Hold the job's cap on `offer` against the user's budgets, in one transaction with
        reading what they leave: two launches cannot both count on the last dollars."""
        now = self.lc.clock.now()
        outcome: list[JobCap | Shortfall] = []

        def decide(books: Books) -> float | None:
            result = cap_for(spec, offer, Allowance(books, now))
            outcome.append(result)
            return None if isinstance(result, Shortfall) else result.usd or 0.0

        self.lc.store.hold(self.job_id, offer.provider, decide, now=now)
        return outcome[-1]

    def _provider_for(self, offer: Offer, cap: JobCap) -> Provider:
        """The offer's provider, told the cap's hours when a budget made them shorter than the
        spec's: that is what the node's own shutdown timer is set from."""
        provider = self.lc.providers[offer.provider]
        if cap.hours == self.spec.budget.max_hours or not isinstance(provider, SpecConfigured):
            return provider
        # A copy, not a new Budget: hours bought by max_usd may pass the spec's own bound.
        budget = self.spec.budget.model_copy(update={"max_hours": cap.hours})
        return provider.for_spec(self.spec.model_copy(update={"budget": budget}))

    def _billing(self, offer: Offer, cap: JobCap) -> Billing:
        started = self.lc.clock.now()
        return Billing(
            instance_type=offer.instance_type,
            region=offer.zone or offer.region,
            spot=offer.spot,
            price_per_hour=offer.price_per_hour,
            started_at=started,
            ends_by=None if cap.hours is None else started + cap.hours * 3600 + NODE_TIMER_SLACK_S,
        )

    def _set_up(self) -> None:
        self._step(JobState.SETTING_UP)
        self.nodes = sorted(self.nodes, key=lambda node: node.rank)
        self.sessions, self.runtimes = [], []
        for node in self.nodes:
            session = NodeSession(self._connect(node), NodeLayout(node.workdir), self._log(node))
            self.sessions.append(session)
            self._wait_for_bootstrap(session.transport, node)
            session.make_folders()
            if self.spec.workload is not None:
                session.push_code()
            runtime = self.lc.runtime_for(node, self.spec)
            self._note(f"preparing the {runtime.name} runtime on {node.host}")
            runtime.prepare(session.transport, session.layout, self.spec)
            self.runtimes.append(runtime)
        self.group = self._group()

    def _group(self) -> NodeGroup | None:
        """The rendezvous of a job with more than one process; None: one plain process."""
        group = NodeGroup.of(self.job_id, self.spec, self.nodes)
        return group if group.distributed else None

    def _log(self, node: Node) -> Path:
        return self.lc.home.node_log_file(self.job_id, node.rank)

    def _wait_for_bootstrap(self, transport: Transport, node: Node) -> None:
        """A cloud node installs Docker and its NVIDIA runtime at boot; set up after that."""
        if not node.ready_file:
            return
        config, clock = self.lc.config, self.lc.clock
        deadline = clock.monotonic() + config.bootstrap_timeout_s
        probe = 'if [ -e "$1" ]; then echo ready; elif [ -e "$1.failed" ]; then cat "$1.failed"; fi'
        self._note(f"waiting for {node.host}'s bootstrap (Docker, NVIDIA runtime)")
        while True:
            self.cancel.raise_if_cancelled()
            answer = transport.run(["sh", "-c", probe, "sh", node.ready_file], check=False)
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
                    f"the node's bootstrap did not finish in {config.bootstrap_timeout_s:g} s"
                )
            clock.sleep(config.bootstrap_poll_s)

    def _sync(self) -> None:
        self._step(JobState.SYNCING)
        if self.spec.dataset is None:
            return
        for node, session in zip(self.nodes, self._all_sessions(), strict=True):
            label = "dataset" if len(self.nodes) == 1 else f"dataset to node {node.rank}"

            def progress(done: int, total: int, label: str = label) -> None:
                self.lc.sink.progress(label, done, total)
                self.cancel.raise_if_cancelled()

            report = session.push_dataset(Path(self.spec.dataset.source), progress)
            self._note(
                f"{label}: {report.files_total} files, {report.bytes_total} bytes, "
                f"{report.files_sent} sent ({report.method}), verified on the node"
            )

    def _restore(self) -> None:
        """A restarted job's new nodes get what the lost ones had and home has: rank 0 the last
        checkpoints that came home, and each node its log so far (the workload appends to it,
        so the local copy's size stays the offset to follow from)."""
        report = self._session().push_checkpoints(self.runs_dir)
        for node, session in zip(self.nodes, self._all_sessions(), strict=True):
            local_log = self._log(node)
            if local_log.exists() and local_log.stat().st_size:
                session.transport.put(local_log, session.layout.log)
        self._note(
            f"restored {report.files_total} checkpoint file(s) from {self.runs_dir} and the "
            "log so far; the workload resumes from its last checkpoint"
        )

    def _start(self) -> None:
        self._step(JobState.RUNNING)
        if len(self.runtimes) != len(self.nodes):
            raise ProvisioningError("no runtime (setup did not run)")
        if self.group is not None:
            self._note(
                f"torchrun on {self.group.size} node(s) x {self.group.gpus_per_node} process(es), "
                f"rendezvous at {self.group.head}:{self.group.port}"
            )
        parts = zip(self.nodes, self._all_sessions(), self.runtimes, strict=True)
        for node, session, runtime in parts:
            argv = runtime.argv(self.spec, session.layout, self.group, node.rank)
            environment = job_environment(
                self.job_id, self.spec, session.layout, self.group, node.rank
            )
            pid = session.start(argv, environment, max_seconds=self._seconds_left())
            self.lc.store.set_node_pid(self.job_id, node.node_id, pid)

    def _reconnect(self) -> None:
        """An adopted job: reach its nodes and their workload processes again."""
        self.nodes = sorted(self.nodes, key=lambda node: node.rank)
        rows = {row.node_id: row for row in self.lc.store.nodes(self.job_id)}
        self.sessions = []
        for node in self.nodes:
            row = rows.get(node.node_id)
            session = NodeSession(
                self._connect(node),
                NodeLayout(node.workdir),
                self._log(node),
                pid=row.pid if row else None,
            )
            self.sessions.append(session)
            offset = session.follower.offset
            self._note(f"attached: following {node.host}'s log from byte {offset}")

    def _watch(self) -> int:
        """Until the workload exits, is stopped at its cap, or the job is cancelled; raises
        NodeLost when its node is gone or stopped answering."""
        try:
            return self._follow_workload()
        except ConnectionLostError as exc:
            if self.cancel.cancelled:
                raise Cancelled(self.cancel.reason or "cancelled") from exc
            raise self._confirmed_loss() or NodeLost(f"the node stopped answering: {exc}") from exc

    def _follow_workload(self) -> int:
        head, config, clock = self._session(), self.lc.config, self.lc.clock
        pull_every = self.spec.checkpoints.every_minutes * 60
        next_pull = clock.monotonic() + pull_every
        next_liveness = clock.monotonic() + config.liveness_every_s
        self.next_loss_check = clock.monotonic() + config.loss_check_every_s
        while True:
            self._forward_log()
            if (code := self._group_exit()) is not None:
                self._forward_log()
                if head.stopped_by_node() == "max_hours":
                    raise self._cap_reached()
                return code
            if self.cancel.cancelled:
                self._stop(self.cancel.reason or "cancelled")
                raise Cancelled(self.cancel.reason or "cancelled")
            left = self._seconds_left()
            if left is not None:
                self._warn_near_cap()
                if left <= 0:
                    self._stop(f"its cap is reached: {self._cap().describe()}")
                    raise self._cap_reached()
            now = clock.monotonic()
            if now >= self.next_loss_check and (lost := self._confirmed_loss()):
                raise lost
            if now >= next_liveness:
                next_liveness = now + config.liveness_every_s
                self._check_alive()
            if now >= next_pull:
                next_pull = now + pull_every
                self._pull()
            clock.sleep(config.poll_interval_s)

    def _group_exit(self) -> int | None:
        """The job's exit code once every node's workload has exited; when one node fails,
        the others are stopped at once (a group cannot go on without a member)."""
        codes = [session.exit_code() for session in self._all_sessions()]
        failed = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0)]
        if failed and None in codes:
            rank, code = failed[0]
            self._stop(f"node {rank} exited with code {code}")
            codes = [session.exit_code() for session in self._all_sessions()]
        if None in codes and not failed:
            return None
        if failed:
            self.failed_rank, code = failed[0]
            return code or 1
        return 0

    def _check_alive(self) -> None:
        for rank, session in enumerate(self._all_sessions()):
            if session.alive() or session.exit_code() is not None:
                continue
            self._forward_log()
            if lost := self._confirmed_loss():
                raise lost
            where = f"node {rank}: " if len(self.sessions) > 1 else ""
            raise JobFailedError(
                f"{where}the workload's process vanished without an exit code "
                "(killed from outside, or the node rebooted)"
            )

    def _collect(self) -> None:
        # No cancel check here: collecting is what a cancel still owes the user.
        self.lc.transition(self.job_id, JobState.COLLECTING)
        self._forward_log()
        for rank, rest in sorted(self.partial.items()):  # a last line without its newline
            self.lc.sink.log(f"[node {rank}] ".encode() + rest + b"\n")
        self.partial.clear()
        self._pull()
        for node in self.nodes:
            local_log = self._log(node)
            if local_log.exists():
                name = "job.log" if node.rank == 0 else f"job.node{node.rank}.log"
                shutil.copyfile(local_log, self.runs_dir / name)

    def _collect_quietly(self) -> None:
        """After a failure or cancel: bring home what exists, without masking the first error."""
        if not self.sessions or self.sessions[0].pid is None:
            return
        try:
            self._collect()
        except Exception as exc:
            self._note(f"could not bring the checkpoints home: {exc}")

    # -- helpers ----------------------------------------------------------------------------
    def _connect(self, node: Node) -> Transport:
        transport = self.lc.connect(node)
        if isinstance(transport, GivesUp):
            # Reconnecting to a node its provider has taken back only wastes the window.
            transport.give_up = self._loss_reason
        return transport

    def _losses(self) -> list[NodeLoss]:
        """What the nodes' providers say is gone; a provider that cannot answer now says
        nothing (the next check asks again)."""
        self.next_loss_check = self.lc.clock.monotonic() + self.lc.config.loss_check_every_s
        found: list[NodeLoss] = []
        for name, group in _by_provider(self.nodes).items():
            provider = self.lc.providers.get(name)
            if not isinstance(provider, SupportsLossCheck):
                continue
            try:
                found += provider.losses(group)
            except GpuJobsError as exc:
                self._note(f"could not ask {name} whether the job's nodes still exist: {exc}")
        return found

    def _loss_reason(self) -> str | None:
        return str(lost) if (lost := self._confirmed_loss()) else None

    def _confirmed_loss(self) -> NodeLost | None:
        losses = self._losses()
        if not losses:
            return None
        reason = "; ".join(loss.reason for loss in losses)
        return NodeLost(reason, preempted=any(loss.preempted for loss in losses))

    def _drop_session(self) -> None:
        for session in self.sessions:
            session.transport.close()
        self.sessions, self.runtimes = [], []

    def _step(self, state: JobState, message: str = "") -> None:
        self.cancel.raise_if_cancelled()
        self.lc.transition(self.job_id, state, message)

    def _note(self, message: str) -> None:
        self.lc.store.note(self.job_id, message, now=self.lc.clock.now())
        self.lc.sink.note(message)

    def _session(self) -> NodeSession:
        if not self.sessions:
            raise ProvisioningError("no node session (setup did not run)")
        return self.sessions[0]

    def _all_sessions(self) -> list[NodeSession]:
        if not self.sessions:
            raise ProvisioningError("no node session (setup did not run)")
        return self.sessions

    def _record_nodes(self, nodes: list[Node], billing: Billing) -> None:
        self.nodes = nodes
        for node in nodes:
            self.lc.store.add_node(
                self.job_id,
                node_id=node.node_id,
                provider=node.provider,
                node_json=node.model_dump_json(),
                billing=billing,
                now=self.lc.clock.now(),
            )

    def _forward_log(self) -> None:
        for rank, session in enumerate(self.sessions):
            chunk = session.follow()
            if chunk and len(self.sessions) > 1:
                chunk = self._prefixed(rank, chunk)
            if chunk:
                self.lc.sink.log(chunk)

    def _pull(self) -> None:
        report = self._session().pull_checkpoints(self.runs_dir)
        for name in report.refused:
            self._note(f"refused checkpoint file {name!r}: it would land outside {self.runs_dir}")
        if report.files_sent:
            self._note(f"pulled {report.files_sent} file(s) to {self.runs_dir}")
        if report.pruned:
            self._note(f"removed {len(report.pruned)} checkpoint(s) the node no longer keeps")

    def _stop(self, reason: str) -> None:
        self._note(f"stopping the workload ({reason}); it saves a checkpoint first")
        head, *others = self._all_sessions()
        for session in others:  # TERM every node at once: the group agrees on when it stops
            session.request_stop()
        head.stop_gracefully(
            self.lc.clock,
            grace_s=self.lc.config.stop_grace_s,
            poll_s=self.lc.config.poll_interval_s,
            on_log=lambda chunk: self.lc.sink.log(self._prefixed(0, chunk) if others else chunk),
            forced=lambda: self.cancel.forced,
        )

    def _prefixed(self, rank: int, chunk: bytes) -> bytes:
        """Whole lines of node `rank`'s log, each led by its rank; a partial line waits."""
        lines = (self.partial.pop(rank, b"") + chunk).split(b"\n")
        if rest := lines.pop():  # after the last newline
            self.partial[rank] = rest
        lead = f"[node {rank}] ".encode()
        return b"".join(lead + line + b"\n" for line in lines)

    def _cap(self) -> JobCap:
        return self.cap or JobCap(self.spec.budget.max_hours, None, "budget.max_hours")

    def _spent(self) -> float:
        now = self.lc.clock.now()
        return spent_by(self.lc.store.ledger(self.job_id), now).get(self.job_id, 0.0)

    def _cap_reached(self) -> BudgetCapReached:
        return BudgetCapReached(
            f"stopped at its budget cap ({self._cap().describe()}) with ${self._spent():.2f} "
            "spent; the last checkpoint is home"
        )

    def _cap_seconds(self) -> float | None:
        hours = self._cap().hours
        return None if hours is None else hours * 3600

    def _seconds_left(self) -> float | None:
        """Until the driver stops the job: its cap, less the margin a paid one needs to stop."""
        cap_s = self._cap_seconds()
        if cap_s is None or self.started_at is None:
            return None
        margin = min(self.lc.config.cap_margin_s, cap_s / 10) if self._cap().usd else 0.0
        return cap_s - margin - (self.lc.clock.monotonic() - self.started_at)

    def _warn_near_cap(self) -> None:
        cap_s = self._cap_seconds()
        if self.warned or cap_s is None or self.started_at is None:
            return
        used = (self.lc.clock.monotonic() - self.started_at) / cap_s
        if used < self.lc.config.cap_warning_at:
            return
        self.warned = True
        cap = self._cap()
        spent = f"${self._spent():.2f} of ${cap.usd:.2f}" if cap.usd else f"{used:.0%} of the time"
        self._note(
            f"warning: {used:.0%} of the job's cap used ({spent}, set by {cap.by}); at the cap "
            "it is stopped, its checkpoint brought home, and its nodes torn down"
        )

    def _failure_message(self, exit_code: int, rank: int = 0) -> str:
        tail = tail_lines(self.lc.home.node_log_file(self.job_id, rank), lines=10)
        where = f"on node {rank} " if len(self.nodes) > 1 else ""
        return f"the workload {where}exited with code {exit_code}" + (
            f"; last lines:\n{tail}" if tail else ""
        )
