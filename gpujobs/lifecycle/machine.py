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

This module is the machine: the order of the steps, the transitions, and what exists so far.
What a step does for one node or one concern lives beside it: node_setup.py (a node made ready),
group_sessions.py (the nodes' workloads as one group), recovery.py (a lost node: seen, and
whether and where the job restarts), cap_watch.py (time against the job's cap), events.py (the
EventSink it reports to and the CancelToken that stops it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gpujobs.clock import Clock, SystemClock
from gpujobs.errors import (
    BudgetRefusedError,
    Cancelled,
    ConnectionLostError,
    GpuJobsError,
    LocalDiskFullError,
    NoCapacityError,
    ProviderError,
    ProvisioningError,
    QuotaExceededError,
    is_disk_full,
)
from gpujobs.group import NodeGroup
from gpujobs.lifecycle.batch_job import BatchJob
from gpujobs.lifecycle.cap_watch import CapWatch
from gpujobs.lifecycle.events import (  # imported from here too (cli, tests)
    CancelToken,
    EventSink,
    NullSink,
)
from gpujobs.lifecycle.group_sessions import GroupSessions
from gpujobs.lifecycle.job_files import ContentHashes
from gpujobs.lifecycle.node_session import NodeSession
from gpujobs.lifecycle.node_setup import NodeSetup, runtime_for
from gpujobs.lifecycle.notify import node_notify_lines
from gpujobs.lifecycle.recovery import LossCheck, NodeLost, Restarts, by_provider, cap_left
from gpujobs.money.budget import NODE_TIMER_SLACK_S, Allowance, JobCap, Shortfall, cap_for
from gpujobs.paths import HomeLayout
from gpujobs.placement.planner import require_placements
from gpujobs.providers.base import Node, Offer, Provider, SpecConfigured, SupportsBatchJobs
from gpujobs.remote.connect import connect_node
from gpujobs.remote.keys import create_job_key, delete_job_key
from gpujobs.remote.logs import tail_lines
from gpujobs.remote.transport import GivesUp, Transport
from gpujobs.retry import call_with_retry
from gpujobs.runtime.base import Runtime, job_environment
from gpujobs.runtime.docker import REMOVE_CONTAINERS
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.spec import JobSpec
from gpujobs.state import Billing, Books, JobRecord, JobState, Store

# What a stopped job asks the user to free at home when its disk filled: the store's next
# writes and the job's log, with room to spare.
_HOME_ROOM_MB = 64


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
        drive = _Drive(self, job_id, spec, cancel)
        drive.execute()
        return drive.outcome()

    def adopt(
        self, job_id: str, spec: JobSpec, nodes: list[Node], cancel: CancelToken
    ) -> JobRecord:
        """Take over a job whose driver died, from where it was, to a final state: a running
        workload is followed again (its log from the byte the last driver reached), one that was
        being set up is set up again on its nodes, one that never got a node is launched anew."""
        drive = _Drive(self, job_id, spec, cancel)
        drive.adopt(nodes)
        return drive.outcome()

    def tear_down(self, nodes: list[Node], spec: JobSpec | None = None) -> str | None:
        """Terminate nodes, retrying transient provider errors. Returns an error, or None.
        With the job's spec, its containers on machines that outlive it (this one, ssh hosts)
        are removed first."""
        if spec is not None:
            self._remove_containers(nodes, spec)
        errors: list[str] = []
        for name, group in by_provider(nodes).items():
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
            try:
                for node in group:
                    self.store.mark_node_terminated(node.job_id, node.node_id, now=self.clock.now())
            except Exception as exc:
                if not is_disk_full(exc):
                    raise
                # They are gone; only the record is missing, and the other providers' nodes
                # must still go. `gpujobs down` records it once there is room.
                self.sink.note(f"{name}: nodes terminated, but not recorded ({exc})")
        return "; ".join(errors) or None

    def _remove_containers(self, nodes: list[Node], spec: JobSpec) -> None:
        """Best effort: a container left by a killed `docker run` (or a setup's) would run on
        after its job. Cloud machines go whole, so only kept machines are asked."""
        for node in nodes:
            if (
                node.provider not in ("local", "ssh")
                or self.runtime_for(node, spec).name != "docker"
            ):
                continue
            try:
                transport = self.connect(node)
            except GpuJobsError:
                continue
            try:
                transport.run(["sh", "-c", REMOVE_CONTAINERS, "sh", node.job_id], timeout=120,
                              check=False)  # fmt: skip
            except GpuJobsError:
                pass  # unreachable now: `gpujobs gc` lists what stays
            finally:
                transport.close()

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
        # Notes and progress come from the nodes' threads while a group is set up; the store's
        # connection and the sink take them one at a time.
        self.reporting = threading.Lock()
        self.job_id = job_id
        self.spec = spec
        self.cancel = cancel
        self.nodes: list[Node] = []
        self.runtimes: list[Runtime] = []  # one per node, in rank order
        self.group: NodeGroup | None = None  # set for a multi-process (torchrun) job
        self.offer: Offer | None = None  # the placement the nodes came from
        # The final state and error, when the store could not take them (its disk is full).
        self.unrecorded_end: tuple[JobState, str | None] | None = None
        config, clock = lifecycle.config, lifecycle.clock
        self.cap = CapWatch(
            job_id,
            spec,
            lifecycle.store,
            clock,
            self._note,
            margin_s=config.cap_margin_s,
            warning_at=config.cap_warning_at,
        )
        self.sessions = GroupSessions(
            log=lifecycle.sink.log,
            note=self._note,
            clock=clock,
            cancel=cancel,
            grace_s=config.stop_grace_s,
            poll_s=config.poll_interval_s,
        )
        self.loss_check = LossCheck(
            lifecycle.providers, clock, self._note, every_s=config.loss_check_every_s
        )
        self.restarts = Restarts(
            job_id,
            spec,
            lifecycle.store,
            clock,
            cancel,
            self._note,
            cooldown_s=config.recovery_cooldown_s,
            poll_s=config.bootstrap_poll_s,
        )
        self.setup = NodeSetup(
            spec,
            lifecycle.runtime_for,
            clock,
            cancel,
            self._note,
            self._progress,
            bootstrap_timeout_s=config.bootstrap_timeout_s,
            bootstrap_poll_s=config.bootstrap_poll_s,
            on_log=self._setup_log,
            hashes=ContentHashes(lifecycle.home.content_hashes),
            runs_root=Path(lifecycle.store.job(job_id).runs_dir).parent,
        )
        record = lifecycle.store.job(job_id)
        self.runs_dir = Path(record.runs_dir)
        self.odd_reported: set[str] = set()  # reported once, not at every pull

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
        self.cap.held = cap_left(record, ledger, billed_from, "the cap held at launch")
        self.cap.started_at = clock.monotonic() - (clock.now() - billed_from)
        following = record.state in (JobState.RUNNING, JobState.COLLECTING, JobState.TEARING_DOWN)
        if following and not self._workload_started(nodes):
            # RUNNING is recorded before the start (the machine records first): a driver that
            # died in between leaves a workload that never ran, not one that vanished.
            self._note("its workload had not started when the driver died: starting it now")
            following = False
        self.execute(follow=following)

    def _workload_started(self, nodes: list[Node]) -> bool:
        """Whether every node's workload was started: its pid is stored, or (a driver that
        died between the start and the store) the node's launch script recorded one."""
        rows = {row.node_id: row for row in self.lc.store.nodes(self.job_id)}
        for node in nodes:
            row = rows.get(node.node_id)
            if row is not None and row.pid is not None:
                continue
            layout = NodeLayout(node.workdir)
            transport = self._connect(node)
            try:
                raw = transport.read(layout.started_pid, 0, 64) or transport.read(layout.pid, 0, 64)
            finally:
                transport.close()
            try:
                pid = int(raw.strip())
            except ValueError:
                return False
            self.lc.store.set_node_pid(self.job_id, node.node_id, pid)
        return True

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
                error = self._failure_message(exit_code, self.sessions.failed_rank)
        except (Cancelled, KeyboardInterrupt) as exc:
            final = JobState.CANCELLED
            error = str(exc) or self.cancel.reason or "cancelled"
            self._collect_quietly()
        except GpuJobsError as exc:
            error = str(exc)
            self._collect_quietly()
        except Exception as exc:
            if is_disk_full(exc):
                # GPUJOBS_HOME's disk filled: nothing can be recorded, so nothing may run on
                # unwatched. The workload saves its checkpoint, what fits comes home, and the
                # nodes go as after any failure.
                error = self._home_full_message(exc)
                self._stop_unrecorded(error)
            else:  # a bug: still tear down, then let the CLI show it
                error = f"internal error: {exc.__class__.__name__}: {exc}"
                unexpected = exc
            self._collect_quietly()
        self._record(JobState.TEARING_DOWN)
        self.sessions.close()
        teardown_error = self.lc.tear_down(self.nodes, self.spec)
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
        try:
            self.lc.store.set_outcome(self.job_id, exit_code=exit_code, error=error)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
        self._record(final, error or "")
        if unexpected is not None:
            raise unexpected

    def outcome(self) -> JobRecord:
        """The job as it ended: the store's record, with the end this driver could not record
        there (a full disk at home) put in."""
        record = self.lc.store.job(self.job_id)
        if self.unrecorded_end is not None and not record.state.is_terminal:
            state, error = self.unrecorded_end
            record = dataclasses.replace(record, state=state, error=error)
        return record

    def _record(self, state: JobState, message: str = "") -> None:
        """A transition that a full disk at home must not stop: teardown still runs, and the
        sink still tells the user (the store then says RUNNING until `gpujobs down`)."""
        try:
            self.lc.transition(self.job_id, state, message)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            self.lc.sink.state(self.job_id, state, message)
            if state.is_terminal:
                self.unrecorded_end = (state, message or None)

    def _home_full_message(self, exc: BaseException) -> str:
        home = self.lc.store.path.parent
        try:
            free = shutil.disk_usage(home).free
        except OSError:
            free = 0
        return (
            f"the disk of {home} is full ({free / 1e6:.1f} MB free; {exc}): gpujobs could not "
            f"record the job, so it stopped it; free at least {_HOME_ROOM_MB} MB there (the "
            "store and the job's log), then run `gpujobs status`"
        )

    def _stop_unrecorded(self, reason: str) -> None:
        """TERM every node's workload and wait for it to save and exit, writing nothing here
        (its last lines stay in the node's log, which comes home with the checkpoints)."""
        if not self.sessions.started:
            return
        clock, config = self.lc.clock, self.lc.config
        self.lc.sink.note(f"stopping the workload: {reason}")
        try:
            for session in self.sessions.all():
                session.request_stop()
            deadline = clock.monotonic() + config.stop_grace_s
            head = self.sessions.head
            while head.exit_code() is None and clock.monotonic() < deadline:
                clock.sleep(config.poll_interval_s)
        except Exception as exc:  # teardown still kills it
            self.lc.sink.note(f"could not stop the workload gracefully: {exc}")

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
            elif self._inherits_checkpoints():
                self._push_inherited()
        except ConnectionLostError as exc:
            # Only a loss the provider confirms is recovered here: silence while setting up
            # is more often a wrong address or a firewall than a reclaimed machine.
            if lost := self._confirmed_loss():
                raise lost from exc
            raise
        self._start()

    def _recover(self, lost: NodeLost) -> None:
        """Replace the lost nodes: tear them down, and provision on another placement (the
        lost one cools down), with what is left of the job's cap. Whether the job may restart,
        on what and where, is recovery.py's to say; the transitions are recorded here."""
        self._drop_session()  # its node is gone: nothing more can come from it
        self.cancel.raise_if_cancelled()
        self.restarts.allow(lost)
        self.lc.transition(self.job_id, JobState.RECOVERING, str(lost))
        count = self.lc.store.count_restart(self.job_id)
        self.restarts.cool_down(self.offer)
        error = self.lc.tear_down(self.nodes)
        if error:
            raise ProvisioningError(f"{lost}; the lost node is not confirmed gone: {error}")
        self.nodes = []
        allowed = self.spec.recovery.max_restarts
        self._note(f"restart {count} of {allowed}: resuming from the last checkpoint home")
        spec = self.restarts.spec_left()
        if spec is None:
            raise self.cap.reached()
        placements = self.restarts.cooled(
            require_placements(spec, self.lc.providers, self._allowance()).offers
        )
        self._step(JobState.PROVISIONING)
        self._provision(placements, spec, restart=count)

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
        self.cap.started_at = clock.monotonic()
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
            self.cap.held, self.offer = cap, offer
            provider = self._provider_for(offer, cap)
            store.set_placement(self.job_id, offer.label)
            # The job's cap: a restart's is what the job used before it and what it may use now.
            used_usd, used_hours = self.restarts.used() if restart else (0.0, 0.0)
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
        self.sessions.clear()
        self.runtimes = []
        for node in self.nodes:  # quick (a transport connects when first used)
            session = NodeSession(
                self._connect(node),
                NodeLayout(node.workdir),
                self._log(node),
                batch=self._batch(node),
                uploads=self.spec.checkpoints.upload is not None,
            )
            self.sessions.add(session)
        setup = self.setup
        self.runtimes = setup.on_every_node(setup.prepare, self.nodes, self.sessions.all())
        self.group = self._group()

    def _group(self) -> NodeGroup | None:
        """The rendezvous of a job with more than one process; None: one plain process."""
        group = NodeGroup.of(self.job_id, self.spec, self.nodes)
        return group if group.distributed else None

    def _log(self, node: Node) -> Path:
        return self.lc.home.node_log_file(self.job_id, node.rank)

    def _sync(self) -> None:
        self._step(JobState.SYNCING)
        if self.spec.dataset is None:
            return
        push = functools.partial(self.setup.push_dataset, of_several=len(self.nodes) > 1)
        self.setup.on_every_node(push, self.nodes, self.sessions.all())

    def _restore(self) -> None:
        """A restarted job's new nodes get what the lost ones had and home has: rank 0 the last
        checkpoints that came home, and each node its log so far (the workload appends to it,
        so the local copy's size stays the offset to follow from)."""
        report = self.sessions.head.push_checkpoints(self.runs_dir)
        for node, session in zip(self.nodes, self.sessions.all(), strict=True):
            local_log = self._log(node)
            if local_log.exists() and local_log.stat().st_size:
                session.transport.put(local_log, session.layout.log)
        self._note(
            f"restored {report.files_total} checkpoint file(s) from {self.runs_dir} and the "
            "log so far; the workload resumes from its last checkpoint"
        )

    def _inherits_checkpoints(self) -> bool:
        """A job launched with --resume-from has the other job's checkpoints at home before
        its first start; a fresh job's runs folder does not exist yet."""
        return self.runs_dir.is_dir() and any(self.runs_dir.iterdir())

    def _push_inherited(self) -> None:
        report = self.sessions.head.push_checkpoints(self.runs_dir)
        self._note(
            f"gave the node {report.files_total} checkpoint file(s) from {self.runs_dir}; the "
            "workload continues from the newest"
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
        parts = zip(self.nodes, self.sessions.all(), self.runtimes, strict=True)
        notify = node_notify_lines(self.spec, self.lc.home)
        for node, session, runtime in parts:
            argv = runtime.argv(self.spec, session.layout, self.group, node.rank)
            environment = job_environment(
                self.job_id, self.spec, session.layout, self.group, node.rank
            )
            cwd = session.layout.run_dir(self.spec.workdir is not None)
            pid = session.start(argv, environment, max_seconds=self.cap.seconds_left(), cwd=cwd,
                                notify_targets=notify)  # fmt: skip
            self.lc.store.set_node_pid(self.job_id, node.node_id, pid)

    def _reconnect(self) -> None:
        """An adopted job: reach its nodes and their workload processes again."""
        self.nodes = sorted(self.nodes, key=lambda node: node.rank)
        rows = {row.node_id: row for row in self.lc.store.nodes(self.job_id)}
        self.sessions.clear()
        for node in self.nodes:
            row = rows.get(node.node_id)
            session = NodeSession(
                self._connect(node),
                NodeLayout(node.workdir),
                self._log(node),
                pid=row.pid if row else None,
                batch=self._batch(node),
                uploads=self.spec.checkpoints.upload is not None,
            )
            self.sessions.add(session)
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
        head, config, clock = self.sessions.head, self.lc.config, self.lc.clock
        pull_every = self.spec.checkpoints.every_minutes * 60
        next_pull = clock.monotonic() + pull_every
        next_liveness = clock.monotonic() + config.liveness_every_s
        self.loss_check.postpone()
        while True:
            self.sessions.forward_log()
            if (code := self.sessions.exit_code()) is not None:
                self.sessions.forward_log()
                if head.stopped_by_node() == "max_hours":
                    raise self.cap.reached()
                return code
            if self.cancel.cancelled:
                self.sessions.stop(self.cancel.reason or "cancelled")
                raise Cancelled(self.cancel.reason or "cancelled")
            left = self.cap.seconds_left()
            if left is not None:
                self.cap.warn_if_near()
                if left <= 0:
                    self.sessions.stop(f"its cap is reached: {self.cap.current.describe()}")
                    raise self.cap.reached()
            now = clock.monotonic()
            if self.loss_check.due(now) and (lost := self._confirmed_loss()):
                raise lost
            if now >= next_liveness:
                next_liveness = now + config.liveness_every_s
                self.sessions.check_alive(self._confirmed_loss)
            if now >= next_pull:
                next_pull = now + pull_every
                try:
                    self._pull()
                except LocalDiskFullError as exc:
                    # The node is fine and keeps its checkpoints: the next pull tries again.
                    self._note(f"warning: {exc}")
            clock.sleep(config.poll_interval_s)

    def _collect(self) -> None:
        # No cancel check here: collecting is what a cancel still owes the user.
        self._record(JobState.COLLECTING)
        self.sessions.forward_log()
        self.sessions.flush_log()
        for problem in self.sessions.stop_leftovers(min(self.lc.config.stop_grace_s, 5.0)):
            self._note(f"could not stop what the workload left running ({problem})")
        self._pull()
        for node in self.nodes:
            local_log = self._log(node)
            if local_log.exists():
                name = "job.log" if node.rank == 0 else f"job.node{node.rank}.log"
                shutil.copyfile(local_log, self.runs_dir / name)

    def _collect_quietly(self) -> None:
        """After a failure or cancel: bring home what exists, without masking the first error."""
        if not self.sessions.started:
            return
        try:
            self._collect()
        except Exception as exc:
            with contextlib.suppress(Exception):  # the store itself may be what failed
                self._note(f"could not bring the checkpoints home: {exc}")

    # -- helpers ----------------------------------------------------------------------------
    def _connect(self, node: Node) -> Transport:
        transport = self.lc.connect(node)
        if isinstance(transport, GivesUp):
            # Reconnecting to a node its provider has taken back only wastes the window.
            transport.give_up = self._loss_reason
        return transport

    def _batch(self, node: Node) -> BatchJob | None:
        """The scheduler that runs the node's workload, where its provider has one (Slurm)."""
        provider = self.lc.providers.get(node.provider)
        if isinstance(provider, SupportsBatchJobs):
            return BatchJob(provider, node, self._note, self.lc.clock)
        return None

    def _loss_reason(self) -> str | None:
        return str(lost) if (lost := self._confirmed_loss()) else None

    def _confirmed_loss(self) -> NodeLost | None:
        return self.loss_check.confirmed(self.nodes)

    def _drop_session(self) -> None:
        self.sessions.drop()
        self.runtimes = []

    def _step(self, state: JobState, message: str = "") -> None:
        self.cancel.raise_if_cancelled()
        self.lc.transition(self.job_id, state, message)

    def _note(self, message: str) -> None:
        with self.reporting:
            self.lc.store.note(self.job_id, message, now=self.lc.clock.now())
            self.lc.sink.note(message)

    def _setup_log(self, chunk: bytes) -> None:
        with self.reporting:
            self.lc.sink.log(chunk)

    def _progress(self, label: str, done: int, total: int) -> None:
        with self.reporting:
            self.lc.sink.progress(label, done, total)

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

    def _pull(self) -> None:
        report = self.sessions.head.pull_checkpoints(self.runs_dir)
        for name in report.refused:
            self._note(f"refused checkpoint file {name!r}: it would land outside {self.runs_dir}")
        if report.files_sent:
            self._note(f"pulled {report.files_sent} file(s) to {self.runs_dir}")
        if report.pruned:
            self._note(f"removed {len(report.pruned)} checkpoint(s) the node no longer keeps")
        if new_odd := [name for name in report.odd if name not in self.odd_reported]:
            self.odd_reported.update(new_odd)
            self._note(f"skipped what cannot come home: {', '.join(new_odd)}")

    def _failure_message(self, exit_code: int, rank: int = 0) -> str:
        tail = tail_lines(self.lc.home.node_log_file(self.job_id, rank), lines=10)
        where = f"on node {rank} " if len(self.nodes) > 1 else ""
        return f"the workload {where}exited with code {exit_code}" + (
            f"; last lines:\n{tail}" if tail else ""
        )
