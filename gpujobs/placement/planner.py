"""Offers x quotas x budget -> ranked placements, and why every other offer was dropped.

For each provider the spec allows (concurrently): its credentials, then its offers. Each offer is
checked against the spec from the cheapest test to the dearest: resources, nodes, region, spot,
availability, the job's budget, and last the provider's quota, looked up once per
(provider, region, spot, GPU) concurrently and cached for the run. The survivors are ranked by
price per hour (ties keep the spec's provider order).

Refused credentials stop the plan at once (the error names the credential); missing ones only
drop that provider, with what to set. A quota that cannot be read does not drop an offer: the
placement says "quota unknown" and the launch finds out.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gpujobs.errors import BudgetRefusedError, NoPlacementError, ProviderAuthError, ProviderError
from gpujobs.money.budget import Allowance, JobCap, Shortfall, cap_for
from gpujobs.providers.base import Availability, Offer, Provider, Quota
from gpujobs.spec import JobSpec

_WORKERS = 16  # quota lookups are network-bound; 16 regions at once keeps a plan under a second


@dataclass(frozen=True)
class Rejection:
    what: str  # an offer's label, or a provider's name
    reason: str
    kind: str = "provider"  # resources, nodes, region, spot, availability, budget, quota
    offer: Offer | None = None


@dataclass(frozen=True)
class Placement:
    offer: Offer
    nodes: int
    quota: Quota | None  # None: it could not be read
    quota_note: str = ""
    cap: JobCap | None = None  # what the job may use there, budgets included

    @property
    def price_per_hour(self) -> float:
        """For the whole job: every node."""
        return self.offer.price_per_hour * self.nodes

    def worst_case_usd(self, max_hours: float | None) -> float | None:
        return None if max_hours is None else self.price_per_hour * max_hours


@dataclass(frozen=True)
class Plan:
    placements: list[Placement]  # cheapest first; ties keep the spec's provider order
    rejected: list[Rejection]
    allowance: Allowance | None = None  # what the user's budgets left when it was made

    @property
    def offers(self) -> list[Offer]:
        return [placement.offer for placement in self.placements]

    def explain(self, limit: int = 12) -> str:
        shown = "; ".join(f"{item.what}: {item.reason}" for item in self.rejected[:limit])
        more = len(self.rejected) - limit
        return shown + (f"; and {more} more (`gpujobs plan SPEC` lists all)" if more > 0 else "")


def plan(
    spec: JobSpec, providers: Mapping[str, Provider], allowance: Allowance | None = None
) -> Plan:
    """`allowance`: what the user's budgets leave per provider (None: no budget is set)."""
    rejected: list[Rejection] = []
    allowed: list[tuple[int, str, Provider]] = []
    for preference, name in enumerate(spec.providers):
        provider = providers.get(name)
        if provider is None:
            rejected.append(Rejection(name, "not configured in this gpujobs"))
        else:
            allowed.append((preference, name, provider))
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        listed = list(pool.map(lambda item: _offers_of(spec, item[2]), allowed))
        candidates: list[tuple[int, Provider, Offer, JobCap]] = []
        for (preference, name, provider), (offers, problem) in zip(allowed, listed, strict=True):
            if problem:
                rejected.append(Rejection(name, problem))
                continue
            for offer in offers:
                if misfit := _misfit(spec, offer):
                    rejected.append(Rejection(offer.label, misfit[1], misfit[0], offer))
                    continue
                cap = cap_for(spec, offer, allowance)
                if isinstance(cap, Shortfall):
                    rejected.append(Rejection(offer.label, cap.reason(), "budget", offer))
                else:
                    candidates.append((preference, provider, offer, cap))
        quotas = _QuotaBook(pool)
        quotas.look_up([(provider, offer) for _, provider, offer, _ in candidates])
    kept: list[tuple[float, int, Placement]] = []
    for preference, provider, offer, cap in candidates:
        quota, note = quotas.answer(provider, offer)
        if quota is not None and (reason := _over_quota(spec, quota)):
            rejected.append(Rejection(offer.label, reason, "quota", offer))
            continue
        placement = Placement(offer, spec.nodes, quota, note, cap)
        kept.append((placement.price_per_hour, preference, placement))
    kept.sort(key=lambda item: (item[0], item[1]))
    return Plan([placement for _, _, placement in kept], rejected, allowance)


def require_placements(
    spec: JobSpec, providers: Mapping[str, Provider], allowance: Allowance | None = None
) -> Plan:
    result = plan(spec, providers, allowance)
    if not result.placements:
        if any(item.kind == "budget" for item in result.rejected):
            from gpujobs.placement.advice import refusal

            raise BudgetRefusedError(refusal(spec, result.rejected, allowance))
        raise NoPlacementError(f"no placement fits the spec: {result.explain()}")
    return result


def _offers_of(spec: JobSpec, provider: Provider) -> tuple[list[Offer], str]:
    """The provider's offers, or why it has none (refused credentials raise)."""
    credentials = provider.check()
    if not credentials.ok:
        return [], f"no credentials: {credentials.missing}"
    try:
        return provider.offers(spec.resources), ""
    except ProviderAuthError:
        raise
    except ProviderError as exc:
        return [], f"could not list offers: {exc}"


def _misfit(spec: JobSpec, offer: Offer) -> tuple[str, str] | None:
    """(kind, why) the offer cannot serve the spec, from what the offer itself says (no calls);
    the budget is checked after this."""
    if reason := offer.misfit(spec.resources):
        return "resources", reason
    if offer.max_nodes is not None and spec.nodes > offer.max_nodes:
        return "nodes", f"runs at most {offer.max_nodes} node(s), the spec asks for {spec.nodes}"
    if spec.regions and offer.region not in spec.regions:
        return "region", "not in the spec's regions"
    if offer.spot and not spec.spot:
        return "spot", "spot, and the spec does not allow spot (set `spot: true`)"
    if offer.availability is Availability.NOT_AVAILABLE:
        why = offer.unavailable_reason or "the provider says so"
        return "availability", f"not available: {why}"
    return None


def _over_quota(spec: JobSpec, quota: Quota) -> str | None:
    needed = quota.per_node * spec.nodes
    free = quota.free
    if free is None or free >= needed:
        return None
    return (
        f"quota {quota.code} ({quota.name}) in {quota.region} has {free:g} of "
        f"{quota.limit:g} {quota.unit} free, {needed:g} needed; request at least "
        f"{quota.in_use + needed:g} at {quota.request_at or 'the provider console'}"
    )


class _QuotaBook:
    """Quota answers for one plan: one lookup per (provider, region, spot, GPU) in parallel,
    then every offer asks its provider again, which answers from the provider's own cache."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.pool = pool
        self.failures: dict[tuple[str, str, bool, str | None], str] = {}

    @staticmethod
    def _key(offer: Offer) -> tuple[str, str, bool, str | None]:
        return (offer.provider, offer.region, offer.spot, offer.gpu)

    def look_up(self, pairs: list[tuple[Provider, Offer]]) -> None:
        first: dict[tuple[str, str, bool, str | None], tuple[Provider, Offer]] = {}
        for provider, offer in pairs:
            first.setdefault(self._key(offer), (provider, offer))
        keys = list(first)
        answers = self.pool.map(lambda key: self._try(*first[key]), keys)
        for key, (_, problem) in zip(keys, answers, strict=True):
            if problem:
                self.failures[key] = problem

    def answer(self, provider: Provider, offer: Offer) -> tuple[Quota | None, str]:
        failed = self.failures.get(self._key(offer))
        if failed:
            return None, failed
        quota, problem = self._try(provider, offer)
        return quota, problem

    @staticmethod
    def _try(provider: Provider, offer: Offer) -> tuple[Quota | None, str]:
        try:
            return provider.quota(offer), ""
        except ProviderAuthError:
            raise
        except ProviderError as exc:
            return None, f"quota unknown ({exc})"
