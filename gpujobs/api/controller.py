"""What each command asks of the core: submit and drive a job (here or detached), list jobs
with their drivers' liveness, follow a log, tear a job down, plan, the clouds' read commands,
money and gc. The CLI and the public functions of `gpujobs.api` parse and render; this module
decides. Built around its dependencies (home, store, providers, clock), so tests hand in fakes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gpujobs.clock import Clock, SystemClock
from gpujobs.driver_lock import DriverLock, driver_alive
from gpujobs.errors import BadInputError, GpuJobsError, UnknownJobError
from gpujobs.paths import HomeLayout
from gpujobs.state import EventRecord, JobRecord, JobState, LedgerEntry, NodeRecord, Store

if TYPE_CHECKING:  # imported lazily at run time: `status` and `logs` never need them
    from gpujobs.lifecycle.events import CancelToken, EventSink
    from gpujobs.lifecycle.machine import Lifecycle, LifecycleConfig
    from gpujobs.models import Offer
    from gpujobs.money.budget import Allowance
    from gpujobs.money.report import BudgetReport
    from gpujobs.placement.dataset_size import DatasetSize
    from gpujobs.placement.gc import GcItem, GcReport, SweepResult
    from gpujobs.placement.planner import Plan
    from gpujobs.placement.quota import QuotaReport
    from gpujobs.providers.base import Credentials, Node, Provider
    from gpujobs.providers.catalog import CatalogInfo
    from gpujobs.remote.fetch.cache import CacheEntry
    from gpujobs.remote.transport import Transport
    from gpujobs.spec import JobSpec

# The spec path recorded for a job launched from Python with a mapping or a JobSpec.
SPEC_FROM_PYTHON = "<python>"

# How many finished jobs `status` shows beside the active ones, unless asked for all.
RECENT_JOBS = 20
# Beside the recent ones, plain `status` shows this many active jobs at most.
ACTIVE_SHOWN = 50
# `status --all` shows every job a page at a time.
PAGE_SIZE = 100


@dataclass(frozen=True)
class JobView:
    record: JobRecord
    driver_alive: bool

    @property
    def driver_lost(self) -> bool:
        return not self.record.state.is_terminal and not self.driver_alive


@dataclass(frozen=True)
class JobDetail:
    """One job as `gpujobs status JOB` shows it: its view, history, nodes and ledger rows."""

    view: JobView
    events: list[EventRecord]
    nodes: list[NodeRecord]
    ledger: list[LedgerEntry]
    now: float


def default_controller() -> Controller:
    """The controller of this machine's gpujobs home (GPUJOBS_HOME, else the user's data dir)."""
    from gpujobs.paths import HomeLayout, gpujobs_home

    home = HomeLayout(gpujobs_home()).ensure()

    def providers() -> Mapping[str, Provider]:
        # Loaded on first use: `status` and `logs` never pay for pydantic or a cloud SDK.
        from gpujobs.providers import default_providers

        return default_providers(home)

    return Controller(home, Store(home.state_db), providers)


class Controller:
    def __init__(
        self,
        home: HomeLayout,
        store: Store,
        providers: Callable[[], Mapping[str, Provider]],
        *,
        clock: Clock | None = None,
        config: LifecycleConfig | None = None,
        connect: Callable[[Node], Transport] | None = None,
    ) -> None:
        self.home = home
        self.connect = connect  # None: connect_node (tests point nodes at a loopback sshd)
        self.store = store
        self._providers_factory = providers
        self._providers: Mapping[str, Provider] | None = None
        self.clock = clock or SystemClock()
        self.config = config

    @property
    def providers(self) -> Mapping[str, Provider]:
        if self._providers is None:
            self._providers = self._providers_factory()
        return self._providers

    def providers_for(self, spec: JobSpec | None) -> Mapping[str, Provider]:
        """The providers, with those that take settings from a spec (ssh hosts) given it."""
        if spec is None:
            return self.providers
        from gpujobs.providers import LazyProviders
        from gpujobs.providers.base import SpecConfigured

        def configured(provider: Provider) -> Provider:
            return provider.for_spec(spec) if isinstance(provider, SpecConfigured) else provider

        if isinstance(self.providers, LazyProviders):
            return self.providers.adapted(configured)  # only the providers asked for are made
        return {name: configured(provider) for name, provider in self.providers.items()}

    def lifecycle(self, sink: EventSink | None = None, spec: JobSpec | None = None) -> Lifecycle:
        from gpujobs.lifecycle.machine import Lifecycle

        return Lifecycle(
            self.store,
            self.home,
            self.providers_for(spec),
            connect=self.connect,
            clock=self.clock,
            sink=sink,
            config=self.config,
        )

    # -- the clouds' read commands -----------------------------------------------------------
    def plan(self, spec: JobSpec) -> Plan:
        from gpujobs.placement.planner import plan

        return plan(spec, self.providers_for(spec), self.allowance())

    def dataset_size(self, spec: JobSpec) -> DatasetSize | None:
        """The dataset's size as planning sees it (buckets and URLs listed from here)."""
        from gpujobs.placement.dataset_size import dataset_size

        return dataset_size(spec)

    def egress_estimate(self, size: DatasetSize, provider: str) -> tuple[float, str] | None:
        from gpujobs.placement.dataset_size import egress_estimate

        return egress_estimate(size, provider)

    def check(self) -> list[Credentials]:
        from concurrent.futures import ThreadPoolExecutor

        providers = list(self.providers.values())
        with ThreadPoolExecutor(max_workers=max(len(providers), 1)) as pool:
            return list(pool.map(lambda provider: provider.check(), providers))

    def quota(self, provider: str | None, gpu: str | None) -> QuotaReport:
        from gpujobs.placement.quota import quota_report

        return quota_report(self.providers, provider=provider, gpu=gpu)

    def gpu_offers(
        self, *, providers: list[str] | None, gpu: str | None, region: str | None
    ) -> tuple[list[Offer], list[CatalogInfo]]:
        """The clouds' catalog offers, cheapest first (on-demand before spot at equal price),
        and which catalogs they came from. Needs no account."""
        from gpujobs.providers.catalog import catalog_offers

        return catalog_offers(providers=providers, gpu=gpu, region=region)

    def refusal(self, spec: JobSpec, result: Plan) -> str:
        """Why no placement fits, in one line: a budget refusal says what would fit."""
        if any(item.kind == "budget" for item in result.rejected):
            from gpujobs.placement.advice import refusal

            return refusal(spec, result.rejected, result.allowance)
        return "every offer above was dropped"

    # -- launch -----------------------------------------------------------------------------
    def with_session_token(self, spec: JobSpec) -> JobSpec:
        """An interactive session's spec (`dev:`) with its JupyterLab token; others unchanged."""
        if spec.dev is None:
            return spec
        from gpujobs.api.dev import with_token

        return with_token(spec)[0]

    def preflight(self, spec: JobSpec, *, source: str = "the spec") -> None:
        """Refuse (exit 2, nothing recorded) a spec that no placement can satisfy; `source`
        names the spec file in a budget refusal."""
        from gpujobs.errors import BudgetRefusedError
        from gpujobs.placement.planner import require_placements

        if spec.registry_auth is not None:
            from gpujobs.runtime.registry import login_for

            try:
                login_for(spec)  # its token must be here now, not found missing on a node
            except BadInputError as exc:
                raise BadInputError(f"{source}: {exc}") from None

        if spec.dataset is not None and spec.resources.disk_gb is not None:
            from gpujobs.placement.dataset_size import check_disk, dataset_size

            check_disk(spec, dataset_size(spec), source)
        try:
            require_placements(spec, self.providers_for(spec), self.allowance())
        except BudgetRefusedError as exc:
            raise BudgetRefusedError(f"{source}: {exc}") from None

    # -- money ------------------------------------------------------------------------------
    def allowance(self) -> Allowance:
        from gpujobs.money.budget import Allowance

        return Allowance(self.store.books(), self.clock.now())

    def costs(self, job_ids: list[str]) -> dict[str, float]:
        """USD spent so far, per job."""
        from gpujobs.money.budget import spent_by

        return spent_by(self.store.ledger(*job_ids), self.clock.now()) if job_ids else {}

    def budget_report(self, *, show_all: bool = False) -> BudgetReport:
        from gpujobs.money.report import budget_report

        return budget_report(self.store, self.clock.now(), show_all=show_all)

    def set_budget(self, amount: float, *, provider: str | None, monthly: bool) -> None:
        _check_budget_provider(provider)
        if not amount > 0 or amount == float("inf"):
            raise BadInputError(
                f"budget set {amount:g}: give an amount in USD above 0, e.g. gpujobs budget set 300"
            )
        self.store.set_budget(
            provider=provider, monthly=monthly, limit_usd=amount, now=self.clock.now()
        )

    def remove_budget(self, *, provider: str | None, monthly: bool) -> None:
        from gpujobs.money.budget import budget_flags

        _check_budget_provider(provider)
        if not self.store.remove_budget(provider=provider, monthly=monthly):
            raise BadInputError(
                f"budget unset{budget_flags(provider, monthly)}: no such budget is set; "
                "`gpujobs budget` lists them"
            )

    def submit(
        self,
        spec: JobSpec,
        spec_path: Path | None,
        runs_root: Path,
        *,
        resume_from: str | None = None,
    ) -> tuple[JobRecord, DriverLock]:
        """Record a PENDING job, holding its driver lock (taken before the row exists).
        `spec_path` None: the spec came from Python, not from a file. `resume_from`: a finished
        job whose checkpoints this one starts from (copied into its runs folder, which the
        node then gets before the workload starts)."""
        inherited = self._checkpoints_to_resume(resume_from) if resume_from else None
        job_id = f"{spec.name}-{secrets.token_hex(3)}"
        lock = DriverLock(self.home.lock_file(job_id))
        if not lock.acquire():
            raise GpuJobsError(f"job id {job_id} is in use; launch again")
        record = self.store.create_job(
            job_id=job_id,
            name=spec.name,
            spec_json=spec.redacted().model_dump_json(),
            spec_path=str(spec_path.resolve()) if spec_path else SPEC_FROM_PYTHON,
            runs_dir=str((runs_root / job_id).resolve()),
            driver_pid=os.getpid(),
            now=self.clock.now(),
        )
        if inherited is not None:
            source, files = inherited
            copied = _link_or_copy(files, Path(source.runs_dir), Path(record.runs_dir))
            self.store.note(
                record.id,
                f"resumes from {source.id}: {copied} file(s) of its checkpoints",
                now=self.clock.now(),
            )
        return record, lock

    def _checkpoints_to_resume(self, job_ref: str) -> tuple[JobRecord, list[Path]]:
        """The files of a finished job's runs folder that a new job continues from."""
        source = self.find(job_ref)
        if not source.state.is_terminal:
            raise BadInputError(
                f"--resume-from {source.id}: it is still {source.state.value}; wait for it, or "
                f"stop it with `gpujobs down {source.id}` (its checkpoint comes home first)"
            )
        runs = Path(source.runs_dir)
        files = sorted(
            path for path in runs.rglob("*") if path.is_file() and path.name != "job.log"
        ) if runs.is_dir() else []  # fmt: skip
        if not any(path.suffix == ".pt" or "ckpt" in path.name for path in files):
            raise BadInputError(
                f"--resume-from {source.id}: no checkpoint came home from it ({runs} holds "
                "none); launch without --resume-from to start afresh"
            )
        return source, files

    def drive(
        self,
        job_id: str,
        spec: JobSpec,
        lock: DriverLock,
        cancel: CancelToken,
        sink: EventSink | None = None,
    ) -> JobRecord:
        from gpujobs.api.live import live_sink

        try:
            return self.lifecycle(live_sink(self, job_id, spec, sink, cancel), spec).drive(
                job_id, spec, cancel
            )
        finally:
            lock.release()

    def drive_as_detached_child(
        self, job_id: str, spec: JobSpec, lock_fd: int, cancel: CancelToken, sink: EventSink
    ) -> JobRecord:
        """The detached driver's side of `spawn_detached`: the lock came open on `lock_fd`."""
        self.store.set_driver(job_id, os.getpid())
        return self.drive(job_id, spec, DriverLock(self.home.lock_file(job_id), fd=lock_fd),
                          cancel, sink)  # fmt: skip

    def spawn_detached(self, job_id: str, spec: JobSpec, lock: DriverLock) -> int:
        """Hand the job to a driver process of its own session, which outlives this one.

        The child inherits the open lock (so the job is never driverless in between) and reads
        the full spec, secrets included, from a pipe rather than from disk.
        """
        driver_log = self.home.driver_log_file(job_id)
        with driver_log.open("ab") as log:
            child = subprocess.Popen(
                [sys.executable, "-m", "gpujobs", "_drive", job_id, "--lock-fd", str(lock.fd)],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(lock.fd,),
                start_new_session=True,
            )
        assert child.stdin is not None
        child.stdin.write(spec.model_dump_json().encode())
        child.stdin.close()
        self.store.set_driver(job_id, child.pid)
        lock.release()  # our copy only: the child's keeps the lock held
        return child.pid

    # -- attach -----------------------------------------------------------------------------
    def attach(self, job_ref: str, cancel: CancelToken, sink: EventSink | None = None) -> JobRecord:
        """Adopt a job whose driver is gone: this process becomes its driver, follows it to the
        end, brings its checkpoints home and tears it down."""
        record = self.find(job_ref)
        if record.state.is_terminal:
            raise BadInputError(
                f"{record.id} is {record.state.value}: nothing to attach to "
                f"(`gpujobs status {record.id}` shows how it ended)"
            )
        lock = DriverLock(self.home.lock_file(record.id))
        if not lock.acquire():
            raise BadInputError(
                f"{record.id} has a live driver (pid {record.driver_pid}); follow it with "
                f"`gpujobs logs -f {record.id}`, or stop it with `gpujobs down {record.id}`"
            )
        from gpujobs.api.live import live_sink

        try:
            spec = self._spec_to_adopt(record)
            self.store.set_driver(record.id, os.getpid())
            self.store.note(record.id, f"attached by pid {os.getpid()}", now=self.clock.now())
            providers = self.providers_for(spec)
            nodes = self._live_nodes(record, spec, providers) if self._has_nodes(record) else []
            sink = live_sink(self, record.id, spec, sink, cancel)
            return self.lifecycle(sink, spec).adopt(record.id, spec, nodes, cancel)
        finally:
            lock.release()

    def _has_nodes(self, record: JobRecord) -> bool:
        return any(row.terminated_at is None for row in self.store.nodes(record.id))

    def _spec_to_adopt(self, record: JobRecord) -> JobSpec:
        """The stored spec, whose env values are redacted, serves a job whose workload already
        runs. One still to be started needs the real values: its spec file, if unchanged."""
        from gpujobs.spec import load_spec

        stored = self._stored_spec(record)
        if stored is None:
            raise GpuJobsError(
                f"{record.id} was stored by another version of gpujobs; `gpujobs down "
                f"{record.id}` saves its checkpoint and tears it down"
            )
        if not stored.env:
            return stored
        # The env values are not stored: the spec file gives them, if it is unchanged. A job
        # whose workload runs has them already, so it is adopted without (a restart after a
        # lost node then says what is missing).
        started = any(row.pid is not None for row in self.store.nodes(record.id))
        try:
            spec: JobSpec | None = load_spec(Path(record.spec_path))
        except GpuJobsError:
            spec = None
        if spec is not None and spec.redacted() == stored:
            return spec
        if started:
            return stored
        raise BadInputError(
            f"{record.spec_path} changed since {record.id} was launched, and its workload "
            f"had not started: `gpujobs down {record.id}`, then launch it again"
        )

    # -- the workload image -----------------------------------------------------------------
    def build_image(
        self,
        *,
        base: str | None,
        wheels: str | None,
        tag: str | None,
        on_line: Callable[[str], None],
    ) -> str:
        from gpujobs.runtime.image_build import build

        return build(base=base, wheels=wheels, tag=tag, on_line=on_line)

    def push_image(self, reference: str, *, on_line: Callable[[str], None]) -> str:
        from gpujobs.runtime.image_build import push

        return push(reference, on_line=on_line)

    # -- gc ---------------------------------------------------------------------------------
    def gc_report(self) -> GcReport:
        """What gpujobs tagged that no live job owns, priced; nothing is deleted."""
        from gpujobs.placement.gc import sweep_plan

        return sweep_plan(self.providers, self.store, self.home, self.clock.now())

    def gc_doomed(self, report: GcReport, *, include_unknown: bool) -> list[GcItem]:
        """What of the report may be deleted: orphans of jobs known here (all with
        include_unknown); a job whose driver is lost is never swept."""
        from gpujobs.placement.gc import to_delete

        return to_delete(report, include_unknown=include_unknown)

    def gc_sweep(self, items: list[GcItem]) -> list[SweepResult]:
        """Delete what `gc_doomed` chose and record it."""
        from gpujobs.placement.gc import record_deleted, sweep

        results = sweep(items, self.providers) if items else []
        record_deleted(results, self.store, self.clock.now())
        return results

    def dataset_cache(self) -> list[CacheEntry]:
        """The datasets this machine's jobs fetched, kept for the next job (local provider)."""
        from gpujobs.remote.fetch.cache import cache_entries

        return cache_entries(self.home.root / "cache")

    def prune_dataset_cache(self, entries: list[CacheEntry], *, days: float) -> list[CacheEntry]:
        from gpujobs.remote.fetch.cache import prune

        return prune(entries, older_than_s=days * 86400, now=self.clock.now())

    # -- read -------------------------------------------------------------------------------
    def detail(self, job_ref: str) -> JobDetail:
        view = self.view(self.find(job_ref))
        job_id = view.record.id
        return JobDetail(
            view,
            self.store.events(job_id),
            self.store.nodes(job_id),
            self.store.ledger(job_id),
            self.clock.now(),
        )

    def driver_lost(self, job_id: str) -> bool:
        return self.view(self.store.job(job_id)).driver_lost

    def find(self, job_ref: str) -> JobRecord:
        record = self.store.find_job(job_ref)
        if record is None:
            raise UnknownJobError(job_ref)
        return record

    def view(self, record: JobRecord) -> JobView:
        if record.state.is_terminal:
            return JobView(record, driver_alive=False)
        if record.driver_lost:
            # Already found gone; an attach clears the flag as it takes over. No lock to open:
            # thousands of such jobs must not slow `status` down.
            return JobView(record, driver_alive=False)
        alive = driver_alive(self.home.lock_file(record.id))
        if not alive:
            # Reconcile: record that the driver is gone, once, so the history says when.
            self.store.mark_driver_lost(record.id, now=self.clock.now())
        return JobView(record, driver_alive=alive)

    def overview(self, *, show_all: bool, page: int = 1) -> tuple[list[JobView], int]:
        """Active jobs (the newest ACTIVE_SHOWN) and the most recent others, or with show_all
        one page of every job, newest first; and the total count. Only the rows shown are read,
        so it stays fast with 100,000 jobs stored."""
        if show_all:
            records = self.store.jobs(limit=PAGE_SIZE, offset=(max(page, 1) - 1) * PAGE_SIZE)
        else:
            recent = self.store.jobs(limit=RECENT_JOBS)
            seen = {record.id for record in recent}
            active = self.store.active_jobs(limit=ACTIVE_SHOWN)
            records = [r for r in active if r.id not in seen] + recent
            records.sort(key=lambda record: record.created_at, reverse=True)
        return [self.view(record) for record in records], self.store.count_jobs()

    def follow_log(
        self, job_id: str, *, follow: bool, node: int = 0, poll_s: float = 0.2
    ) -> Iterator[bytes]:
        """The job's log (node `node`'s) as this machine has it, then (with follow) what
        arrives until it ends."""
        if node and all(_rank(row) != node for row in self.store.nodes(job_id)):
            raise BadInputError(
                f"{job_id} has no node {node}: `gpujobs status {job_id}` lists its nodes"
            )
        path = self.home.node_log_file(job_id, node)
        offset = 0
        while True:
            try:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
            except FileNotFoundError:
                chunk = b""
            if chunk:
                offset += len(chunk)
                yield chunk
            if not follow:
                return
            record = self.store.job(job_id)
            if record.state.is_terminal or not driver_alive(self.home.lock_file(job_id)):
                # One last read: the driver may have written its final lines just before.
                follow = False
                continue
            self.clock.sleep(poll_s)

    # -- down -------------------------------------------------------------------------------
    def down(self, job_ref: str, *, wait_s: float = 300.0) -> tuple[JobRecord, str]:
        """Cancel a running job through its driver, or tear down one whose driver is gone."""
        record = self.find(job_ref)
        lock = DriverLock(self.home.lock_file(record.id))
        if not lock.acquire():
            return self._ask_driver_to_stop(record, wait_s)
        try:
            return self._tear_down_orphan(record)
        finally:
            lock.release()

    def _ask_driver_to_stop(self, record: JobRecord, wait_s: float) -> tuple[JobRecord, str]:
        if record.driver_pid is None:
            raise GpuJobsError(f"{record.id}: its driver holds the job but recorded no pid")
        # It may end between our look and the signal; waiting below then sees the lock free.
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.driver_pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        while driver_alive(self.home.lock_file(record.id)):
            if time.monotonic() > deadline:
                raise GpuJobsError(
                    f"{record.id}: the driver (pid {record.driver_pid}) did not stop within "
                    f"{wait_s:g}s; run `gpujobs down {record.id}` again"
                )
            time.sleep(0.2)
        return self.store.job(record.id), "the driver cancelled the job and tore it down"

    def _tear_down_orphan(self, record: JobRecord) -> tuple[JobRecord, str]:
        spec = self._stored_spec(record)
        nodes = self._live_nodes(record, spec, self.providers_for(spec))
        if not nodes and record.state.is_terminal:
            return record, "nothing to tear down"
        lifecycle = self.lifecycle(spec=spec)
        finished: int | None = None
        if not record.state.is_terminal:
            finished = self._save_what_runs(record, nodes, lifecycle)
            lifecycle.transition(record.id, JobState.TEARING_DOWN, "gpujobs down (driver lost)")
        error = lifecycle.tear_down(nodes, spec)
        if error:
            self.store.note(record.id, f"teardown incomplete: {error}", now=self.clock.now())
            raise GpuJobsError(f"{record.id}: teardown incomplete: {error}; run down again")
        lifecycle.forget_job_key(record.id, nodes)
        if not record.state.is_terminal:
            self._record_orphan_end(record, lifecycle, finished)
        return self.store.job(record.id), f"tore down {len(nodes)} node(s)"

    def _record_orphan_end(
        self, record: JobRecord, lifecycle: Lifecycle, finished: int | None
    ) -> None:
        """A workload that ended on its own ends the job as it did (SUCCEEDED or FAILED with
        its code); one that was still running was cancelled by this `down`."""
        if finished == 0:
            self.store.set_outcome(record.id, exit_code=0, error=None)
            lifecycle.transition(
                record.id, JobState.SUCCEEDED, "the workload finished while its driver was gone"
            )
        elif finished is not None:
            message = f"the workload exited with code {finished} while its driver was gone"
            self.store.set_outcome(record.id, exit_code=finished, error=message)
            lifecycle.transition(record.id, JobState.FAILED, message)
        else:
            message = "torn down by `gpujobs down` after its driver was lost"
            self.store.set_outcome(record.id, exit_code=None, error=message)
            lifecycle.transition(record.id, JobState.CANCELLED, message)

    def _stored_spec(self, record: JobRecord) -> JobSpec | None:
        """The job's spec as stored (env redacted): enough to reach its hosts again."""
        from pydantic import ValidationError

        from gpujobs.spec import JobSpec

        try:
            return JobSpec.model_validate_json(record.spec_json)
        except ValidationError:
            return None  # stored by another version of gpujobs; the node rows still suffice

    def _live_nodes(
        self, record: JobRecord, spec: JobSpec | None, providers: Mapping[str, Provider]
    ) -> list[Node]:
        """Nodes the store knows and has not seen terminated, plus any the providers still
        carry for this job (created just before a crash, so never recorded)."""
        from gpujobs.providers.base import Node

        rows = self.store.nodes(record.id)
        nodes = {
            row.node_id: Node.model_validate_json(row.node_json)
            for row in rows
            if row.terminated_at is None
        }
        known_terminated = {row.node_id for row in rows if row.terminated_at is not None}
        for name in spec.providers if spec else providers:
            provider = providers.get(name)
            # Only the job's own providers, and only where there are credentials to ask with.
            if provider is None or not provider.check().ok:
                continue
            try:
                owned = provider.owned()
            except GpuJobsError as exc:
                self.store.note(record.id, f"{name}: could not list its nodes: {exc}",
                                now=self.clock.now())  # fmt: skip
                continue
            for node in owned:
                if node.job_id == record.id and node.node_id not in known_terminated:
                    nodes.setdefault(node.node_id, node)
        return list(nodes.values())

    def _save_what_runs(
        self, record: JobRecord, nodes: list[Node], lifecycle: Lifecycle
    ) -> int | None:
        """Before tearing down an orphan: stop its workload gracefully and bring its log and
        checkpoints home. Best effort: a node that cannot be reached must not block the
        teardown. Returns the workload's exit code when it had already ended on its own (its
        driver died before seeing that), so the job ends as it really did."""
        from gpujobs.lifecycle.batch_job import BatchJob
        from gpujobs.lifecycle.node_session import NodeSession
        from gpujobs.providers.base import SupportsBatchJobs
        from gpujobs.runtime.node_layout import NodeLayout

        rows = {row.node_id: row for row in self.store.nodes(record.id)}
        finished: int | None = None
        for node in nodes[:1]:  # rank 0 holds the checkpoints
            row = rows.get(node.node_id)
            local_log = self.home.log_file(record.id)
            # A scheduler's job (Slurm) is stopped through the scheduler: its recorded "pid"
            # is the scheduler's job id, not a process on the node.
            provider = lifecycle.providers.get(node.provider)
            batch = None
            if isinstance(provider, SupportsBatchJobs):
                batch = BatchJob(
                    provider,
                    node,
                    lambda message: self.store.note(record.id, message, now=self.clock.now()),
                    self.clock,
                )
            session = NodeSession(
                lifecycle.connect(node),
                NodeLayout(node.workdir),
                local_log,
                pid=row.pid if row else None,
                batch=batch,
            )
            try:
                finished = session.exit_code()
                if finished is None and session.pid is not None:
                    session.stop_gracefully(
                        self.clock,
                        grace_s=lifecycle.config.stop_grace_s,
                        poll_s=0.2,
                        on_log=lambda _chunk: None,
                        forced=lambda: False,
                    )
                session.follow()  # the log's end, written while no driver was reading
                report = session.pull_checkpoints(Path(record.runs_dir))
                self.store.note(
                    record.id,
                    f"down: pulled {report.files_sent} file(s) home",
                    now=self.clock.now(),
                )
                if local_log.exists():
                    shutil.copyfile(local_log, Path(record.runs_dir) / "job.log")
            except (GpuJobsError, OSError) as exc:
                self.store.note(record.id, f"down: could not save the checkpoints: {exc}")
            finally:
                session.transport.close()
        return finished


def _check_budget_provider(provider: str | None) -> None:
    from typing import get_args

    from gpujobs.spec import ProviderName

    known = get_args(ProviderName)
    if provider is not None and provider not in known:
        raise BadInputError(
            f"--provider {provider}: not a provider; give one of {', '.join(known)}, or leave "
            "it out for a budget over all of them"
        )


def _link_or_copy(files: list[Path], source: Path, target: Path) -> int:
    """`files` (under source) into target, as hard links where one filesystem holds both (a
    2 GB checkpoint costs no space), else as copies."""
    import shutil

    for path in files:
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, destination)
        except OSError:
            shutil.copy2(path, destination)
    return len(files)


def _rank(row: NodeRecord) -> int:
    from gpujobs.providers.base import Node  # not at the top: `status` does not need pydantic

    return Node.model_validate_json(row.node_json).rank
