"""`gpujobs gc`: what gpujobs tagged on the providers that no live job owns, and its deletion.

A resource carries its job's id (`gpujobs-job=<id>`: an AWS tag, a GCP label or rule
description, a Paperspace name, a local work directory's name). Judged against the store:
- the job is not finished and its driver holds the job's lock: live, left alone;
- the job is not finished and no driver holds it: driver lost, listed and left alone, since
  `gpujobs down JOB` brings its checkpoint home before tearing it down;
- the job is finished, or the store has never heard of it: an orphan. One of a finished job is
  deleted; one of an unknown job only when asked (`--include-unknown`): a job launched from
  another machine or GPUJOBS_HOME on the same account is unknown here, and may well be running.

Providers that implement SupportsSweep are asked, concurrently: aws, gcp, paperspace and local.
The ssh provider is not: it knows its hosts only from a job's spec, so `gpujobs down JOB` is the
way to clean up an ssh job. A provider without credentials is skipped, with the reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gpujobs.driver_lock import driver_alive
from gpujobs.errors import GpuJobsError
from gpujobs.paths import HomeLayout
from gpujobs.providers.base import Provider, SupportsSweep, TaggedResource
from gpujobs.state import JobState, LedgerEntry, Store

UNKNOWN_JOB = "unknown"  # the job state of a job id the store has never heard of
NOT_SWEPT = (
    "not swept: gpujobs cannot list what it made there (an ssh provider's hosts come from a job "
    "spec); `gpujobs down JOB` tears a job down"
)
_MAX_PARALLEL_DELETES = 8


@dataclass(frozen=True)
class GcItem:
    resource: TaggedResource
    job_state: str  # the job's state in the store, or UNKNOWN_JOB
    age_s: float | None  # None: the provider does not say when it was made
    cost_usd: float  # so far: the ledger's figure when the store has one, else price x age


@dataclass(frozen=True)
class GcReport:
    now: float
    orphans: list[GcItem]  # to delete
    driver_lost: list[GcItem]  # for `gpujobs down JOB`, never deleted here
    live: list[GcItem]  # running jobs' own, left alone
    problems: dict[str, str]  # provider -> why it was not (fully) looked at


@dataclass(frozen=True)
class SweepResult:
    item: GcItem
    error: str | None = None  # None: deleted

    @property
    def deleted(self) -> bool:
        return self.error is None


def sweep_plan(
    providers: Mapping[str, Provider], store: Store, home: HomeLayout, now: float
) -> GcReport:
    """Ask every provider what it carries with gpujobs' tag and sort it by its job's fate."""
    names = list(providers)
    with ThreadPoolExecutor(max_workers=max(len(names), 1)) as pool:
        answers = list(pool.map(lambda name: _tagged(providers[name]), names))
    problems = {name: why for name, (_, why) in zip(names, answers, strict=True) if why}
    resources = [resource for found, _ in answers for resource in found]
    # The store is read here, on the caller's thread (a SQLite connection stays on its own).
    states: dict[str, JobState | None] = {}
    for job_id in {resource.job_id for resource in resources}:
        try:
            states[job_id] = store.job(job_id).state
        except KeyError:
            states[job_id] = None
    # One verdict per job, so a driver dying meanwhile cannot split a job's resources.
    verdicts = {job_id: _verdict(job_id, state, home) for job_id, state in states.items()}
    known = [job_id for job_id, state in states.items() if state is not None]
    ledger = {(e.job_id, e.node_id): e for e in store.ledger(*known)} if known else {}
    sorted_out: dict[str, list[GcItem]] = {"orphan": [], "live": [], "driver_lost": []}
    for resource in resources:
        state = states[resource.job_id]
        entry = ledger.get((resource.job_id, resource.node_id)) if resource.node_id else None
        item = _priced(resource, state.value if state else UNKNOWN_JOB, entry, now)
        sorted_out[verdicts[resource.job_id]].append(item)
    orphans, live, driver_lost = (sorted_out[k] for k in ("orphan", "live", "driver_lost"))
    return GcReport(now, orphans, driver_lost, live, problems)


def to_delete(report: GcReport, *, include_unknown: bool) -> list[GcItem]:
    """The orphans gc deletes: those of finished jobs, and of unknown ones only if asked."""
    return [item for item in report.orphans if include_unknown or item.job_state != UNKNOWN_JOB]


def sweep(items: list[GcItem], providers: Mapping[str, Provider]) -> list[SweepResult]:
    """Delete these orphans; one failure does not stop the rest. Providers work in parallel;
    each deletes in the order it listed (instances before their security group), the
    resources of one kind in parallel."""
    by_provider: dict[str, list[GcItem]] = {}
    for item in items:
        by_provider.setdefault(item.resource.provider, []).append(item)
    names = list(by_provider)
    with ThreadPoolExecutor(max_workers=max(len(names), 1)) as pool:
        done = list(
            pool.map(lambda name: _sweep_provider(providers.get(name), by_provider[name]), names)
        )
    return [result for results in done for result in results]


def record_deleted(results: list[SweepResult], store: Store, now: float) -> None:
    """Tell the store that the nodes gc deleted are gone, so their ledger entries stop."""
    for result in results:
        resource = result.item.resource
        if result.deleted and resource.node_id and result.item.job_state != UNKNOWN_JOB:
            store.mark_node_terminated(resource.job_id, resource.node_id, now=now)


def _tagged(provider: Provider) -> tuple[list[TaggedResource], str]:
    """(what the provider carries with the tag, why it was not asked or did not answer)."""
    if not isinstance(provider, SupportsSweep):
        return [], NOT_SWEPT
    try:
        credentials = provider.check()
        if not credentials.ok:
            return [], f"skipped: no credentials: {credentials.missing}"
        return provider.tagged(), ""
    except GpuJobsError as exc:
        return [], f"could not list what gpujobs tagged: {exc}"


def _verdict(job_id: str, state: JobState | None, home: HomeLayout) -> str:
    """orphan (finished, or unknown to the store), live (its driver holds the lock) or
    driver_lost (not finished, and no driver holds it), as Controller.view judges drivers."""
    if state is None or state.is_terminal:
        return "orphan"
    return "live" if driver_alive(home.lock_file(job_id)) else "driver_lost"


def _priced(resource: TaggedResource, state: str, entry: LedgerEntry | None, now: float) -> GcItem:
    start = resource.created_at
    if start is None and entry is not None:
        start = entry.started_at
    age = max(now - start, 0.0) if start is not None else None
    # The ledger holds the price frozen at launch and the billed span: it wins where it has one.
    estimate = resource.price_per_hour * (age or 0.0) / 3600
    return GcItem(resource, state, age, entry.cost(now) if entry is not None else estimate)


def _sweep_provider(provider: Provider | None, items: list[GcItem]) -> list[SweepResult]:
    if not isinstance(provider, SupportsSweep):
        return [SweepResult(item, "its provider is not configured here") for item in items]
    results: list[SweepResult] = []
    for _kind, run in itertools.groupby(items, key=lambda item: item.resource.kind):
        batch = list(run)
        with ThreadPoolExecutor(max_workers=min(len(batch), _MAX_PARALLEL_DELETES)) as pool:
            results += pool.map(lambda item: _delete(provider, item), batch)
    return results


def _delete(provider: SupportsSweep, item: GcItem) -> SweepResult:
    try:
        provider.delete(item.resource)
    except GpuJobsError as exc:
        return SweepResult(item, str(exc))
    except Exception as exc:  # a bug in one provider must not stop the others' deletions
        return SweepResult(item, f"internal error: {exc.__class__.__name__}: {exc}")
    return SweepResult(item)
