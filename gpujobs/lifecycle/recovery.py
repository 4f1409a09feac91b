"""A lost node, and carrying on without it.

Two questions the launch state machine (lifecycle.py) asks while a job runs: is one of its nodes
gone (its provider says so), and, when one is, may the job restart, on what is left of its budget,
and where (not on the placement that just lost a node). The answers are policy with tests of their
own (test_recovery.py, the fault matrix); the machine keeps the transitions and the side effects
(teardown, provisioning), so every state change is still recorded in one place before what it does.

Also here: what a job has used by a time, which a restart and an adopted job (a driver that took
over a dead one) both resume from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from gpujobs.clock import Clock
from gpujobs.errors import GpuJobsError, JobFailedError
from gpujobs.lifecycle.events import CancelToken
from gpujobs.money.budget import JobCap
from gpujobs.providers.base import Node, NodeLoss, Offer, Provider, SupportsLossCheck
from gpujobs.spec import JobSpec
from gpujobs.state import JobRecord, LedgerEntry, Store


class NodeLost(JobFailedError):
    """A node of the running job is gone (its provider says so) or stopped answering."""

    def __init__(self, reason: str, *, preempted: bool = False) -> None:
        super().__init__(reason)
        self.preempted = preempted


def by_provider(nodes: list[Node]) -> dict[str, list[Node]]:
    grouped: dict[str, list[Node]] = {}
    for node in nodes:
        grouped.setdefault(node.provider, []).append(node)
    return grouped


def usage(ledger: list[LedgerEntry], at: float) -> tuple[float, float]:
    """What a job's nodes had cost at `at`, and the hours from its first node to then."""
    first = min((entry.started_at for entry in ledger), default=at)
    return sum(entry.cost(at) for entry in ledger), (at - first) / 3600


def cap_left(record: JobRecord, ledger: list[LedgerEntry], since: float, by: str) -> JobCap | None:
    """What is left at `since` of the cap the job was launched under: its money less what its
    nodes had cost by then, its hours less the time since its first node."""
    if record.cap_usd is None and record.cap_hours is None:
        return None
    spent, hours_used = usage(ledger, since)
    usd = None if record.cap_usd is None else record.cap_usd - spent
    hours = None if record.cap_hours is None else record.cap_hours - hours_used
    return JobCap(hours, usd, by)


class LossCheck:
    """Asks the providers of a job's nodes whether any of them is gone: every `every_s` while
    the job runs, and at once whenever a node stops answering."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        clock: Clock,
        note: Callable[[str], None],
        *,
        every_s: float,
    ) -> None:
        self.providers = providers
        self.clock = clock
        self.note = note
        self.every_s = every_s
        self.next_at = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def postpone(self) -> None:
        """The next regular check is a whole interval from now."""
        self.next_at = self.clock.monotonic() + self.every_s

    def losses(self, nodes: list[Node]) -> list[NodeLoss]:
        """What the nodes' providers say is gone; a provider that cannot answer now says
        nothing (the next check asks again)."""
        self.postpone()
        found: list[NodeLoss] = []
        for name, group in by_provider(nodes).items():
            provider = self.providers.get(name)
            if not isinstance(provider, SupportsLossCheck):
                continue
            try:
                found += provider.losses(group)
            except GpuJobsError as exc:
                self.note(f"could not ask {name} whether the job's nodes still exist: {exc}")
        return found

    def confirmed(self, nodes: list[Node]) -> NodeLost | None:
        losses = self.losses(nodes)
        if not losses:
            return None
        reason = "; ".join(loss.reason for loss in losses)
        return NodeLost(reason, preempted=any(loss.preempted for loss in losses))


class Restarts:
    """Whether a job that lost a node may restart, on what budget, and on which placements."""

    def __init__(
        self,
        job_id: str,
        spec: JobSpec,
        store: Store,
        clock: Clock,
        cancel: CancelToken,
        note: Callable[[str], None],
        *,
        cooldown_s: float,
        poll_s: float,
    ) -> None:
        self.job_id = job_id
        self.spec = spec
        self.store = store
        self.clock = clock
        self.cancel = cancel
        self.note = note
        self.cooldown_s = cooldown_s
        self.poll_s = poll_s
        self.cooling: dict[str, float] = {}  # placement label -> monotonic time it is free again

    def allow(self, lost: NodeLost) -> None:
        """Raise when the job may not restart: its restarts are used up, or a new node could
        not be given its env values."""
        allowed = self.spec.recovery.max_restarts
        made = self.store.job(self.job_id).restarts
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

    def cool_down(self, offer: Offer | None) -> None:
        """The placement that lost a node is not chosen again for a while (the spot market
        there is short)."""
        if offer is not None:
            self.cooling[offer.label] = self.clock.monotonic() + self.cooldown_s

    def used(self) -> tuple[float, float]:
        """What the job's nodes have cost so far, and the hours since its first one."""
        return usage(self.store.ledger(self.job_id), self.clock.now())

    def spec_left(self) -> JobSpec | None:
        """The spec with the budget the job has left: a restart spends what the lost nodes
        did not (the user's budgets count them already), and its node's own timer is set from
        that. None: too little is left for a restart."""
        used_usd, used_hours = self.used()
        budget = self.spec.budget
        usd = None if budget.max_usd is None else budget.max_usd - used_usd
        hours = None if budget.max_hours is None else budget.max_hours - used_hours
        if (usd is not None and usd < 0.01) or (hours is not None and hours < 1 / 60):
            return None
        left = budget.model_copy(update={"max_usd": usd, "max_hours": hours})
        return self.spec.model_copy(update={"budget": left})

    def cooled(self, placements: list[Offer]) -> list[Offer]:
        """The placements not cooling down after a loss; when every one is, wait for the first
        to be free again (the job resumes there rather than not at all)."""
        clock = self.clock
        ready = [o for o in placements if self.cooling.get(o.label, 0.0) <= clock.monotonic()]
        if ready:
            return ready
        until = min(self.cooling.get(o.label, 0.0) for o in placements)
        self.note(
            f"every placement lost a node in the last {self.cooldown_s:g} s; "
            f"trying again in {until - clock.monotonic():.0f} s"
        )
        while clock.monotonic() < until:
            self.cancel.raise_if_cancelled()
            clock.sleep(min(self.poll_s, until - clock.monotonic()))
        return placements
