"""Offers x quotas x budget -> ranked placements, and why every other offer was dropped."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gpujobs.errors import NoPlacementError, ProviderAuthError, ProviderError
from gpujobs.providers.base import Availability, Offer, Provider
from gpujobs.spec import JobSpec


@dataclass(frozen=True)
class Rejection:
    what: str  # an offer's label, or a provider's name
    reason: str


@dataclass(frozen=True)
class Plan:
    placements: list[Offer]  # cheapest first; ties keep the spec's provider order
    rejected: list[Rejection]

    def explain(self) -> str:
        return "; ".join(f"{item.what}: {item.reason}" for item in self.rejected)


def plan(spec: JobSpec, providers: Mapping[str, Provider]) -> Plan:
    placements: list[tuple[float, int, Offer]] = []
    rejected: list[Rejection] = []
    for preference, name in enumerate(spec.providers):
        provider = providers.get(name)
        if provider is None:
            rejected.append(Rejection(name, "not configured in this gpujobs"))
            continue
        credentials = provider.check()
        if not credentials.ok:
            rejected.append(Rejection(name, f"no credentials: {credentials.missing}"))
            continue
        try:
            offers = provider.offers(spec.resources)
        except ProviderAuthError:
            raise
        except ProviderError as exc:
            rejected.append(Rejection(name, f"could not list offers: {exc}"))
            continue
        for offer in offers:
            reason = _misfit(spec, provider, offer)
            if reason:
                rejected.append(Rejection(offer.label, reason))
            else:
                placements.append((offer.price_per_hour, preference, offer))
    placements.sort(key=lambda item: (item[0], item[1]))
    return Plan([offer for _, _, offer in placements], rejected)


def require_placements(spec: JobSpec, providers: Mapping[str, Provider]) -> Plan:
    result = plan(spec, providers)
    if not result.placements:
        raise NoPlacementError(f"no placement fits the spec: {result.explain()}")
    return result


def _misfit(spec: JobSpec, provider: Provider, offer: Offer) -> str | None:
    if reason := offer.misfit(spec.resources):
        return reason
    if offer.max_nodes is not None and spec.nodes > offer.max_nodes:
        return f"runs at most {offer.max_nodes} node(s), the spec asks for {spec.nodes}"
    if spec.regions and offer.region not in spec.regions:
        return f"region {offer.region} is not in the spec's regions"
    if offer.spot and not spec.spot:
        return "spot, and the spec does not allow spot"
    if offer.availability is Availability.NOT_AVAILABLE:
        return f"not available: {offer.unavailable_reason or 'the provider says so'}"
    quota = provider.quota(offer)
    needed = offer.gpus * spec.nodes
    if quota.free is not None and quota.free < needed:
        return (
            f"quota {quota.code} allows {quota.free:g} more {quota.unit}, {needed:g} needed; "
            f"request more at {quota.request_at or 'the provider console'}"
        )
    if spec.budget.max_usd is not None and spec.budget.max_hours is not None:
        worst = offer.price_per_hour * spec.budget.max_hours * spec.nodes
        if worst > spec.budget.max_usd:
            return (
                f"${worst:.2f} worst case ({spec.budget.max_hours:g} h x {spec.nodes} node(s) "
                f"x ${offer.price_per_hour:.3f}/h) exceeds budget.max_usd ${spec.budget.max_usd:g}"
            )
    return None
