"""The planner: filters in order, quota in the provider's unit looked up once per group and in
parallel, budget before quota, refused credentials stop at once, unknown quota kept."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from gpujobs.errors import NoPlacementError, ProviderAuthError, ProviderError
from gpujobs.placement.planner import plan, require_placements
from gpujobs.providers.base import Availability, Offer, Quota
from gpujobs.spec import JobSpec, parse_spec
from gpujobs.testing import ScriptedProvider


def spec(tmp_path: Path, extra: str) -> JobSpec:
    if "providers:" not in extra:
        extra += "\nproviders: [aws]"
    return parse_spec(f"name: p\ncommand: 'true'\n{extra}", label="s.yaml", base_dir=tmp_path)


def offer(provider: str, kind: str, price: float, **fields) -> Offer:
    values = {"region": "r1", "gpu": "T4", "gpus": 1, "cpus": 4, "memory_gb": 16}
    return Offer(
        provider=provider, instance_type=kind, price_per_hour=price, **{**values, **fields}
    )


class QuotaProvider(ScriptedProvider):
    """Quota in vCPUs per region, counted and slowed like a network call."""

    def __init__(self, name, work, offers, limits, *, fail=None, delay=0.05) -> None:
        super().__init__(name, work, offers)
        self.limits, self.fail, self.delay = limits, fail, delay
        self.asked: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.cache: dict[tuple[str, bool], float] = {}
        self.lock = threading.Lock()

    def quota(self, offer: Offer) -> Quota:
        key = (offer.region, offer.spot)
        if key not in self.cache:
            with self.lock:
                self.asked.append(offer.region)
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
            time.sleep(self.delay)
            with self.lock:
                self.in_flight -= 1
            if self.fail is not None:
                raise self.fail
            self.cache[key] = self.limits[offer.region]
        return Quota(provider=self.name, region=offer.region, code="L-X", name="vCPUs",
                     unit="vCPUs", limit=self.cache[key], per_node=offer.cpus,
                     request_at="https://quota.example")  # fmt: skip


def test_ranked_by_price_with_every_drop_explained(tmp_path: Path) -> None:
    offers = [
        offer("aws", "big", 3.0, cpus=48),
        offer("aws", "small", 0.5),
        offer("aws", "a100", 2.0, gpu="A100"),
        offer("aws", "elsewhere", 0.4, region="r9"),
        offer("aws", "spot", 0.2, spot=True),
        offer("aws", "gone", 0.3, availability=Availability.NOT_AVAILABLE, unavailable_reason="x"),
        offer("aws", "pricey", 11.0),
    ]
    provider = QuotaProvider("aws", tmp_path, offers, {"r1": 64})
    result = plan(
        spec(tmp_path, "resources: {gpu: T4}\nregions: [r1]\nbudget: {max_usd: 10, max_hours: 1}"),
        {"aws": provider},
    )
    assert [p.offer.instance_type for p in result.placements] == ["small", "big"]
    why = {r.what.split("/")[-1].split()[-1]: r.reason for r in result.rejected}
    assert "spec asks for T4" in why["a100"]
    assert "not in the spec's regions" in why["elsewhere"]
    assert "set `spot: true`" in why["spot"]
    assert "not available: x" in why["gone"]
    assert "exceeds budget.max_usd" in why["pricey"]


def test_quota_is_counted_in_the_providers_unit_for_every_node(tmp_path: Path) -> None:
    offers = [offer("aws", "four", 0.5, cpus=4), offer("aws", "sixteen", 0.6, cpus=16)]
    provider = QuotaProvider("aws", tmp_path, offers, {"r1": 16})
    result = plan(spec(tmp_path, "resources: {gpu: T4}\nnodes: 2"), {"aws": provider})
    assert [p.offer.instance_type for p in result.placements] == ["four"]
    [dropped] = result.rejected
    assert "16 of 16 vCPUs free, 32 needed; request at least 32" in dropped.reason
    assert "https://quota.example" in dropped.reason


def test_quota_is_asked_once_per_region_and_in_parallel(tmp_path: Path) -> None:
    regions = [f"r{i}" for i in range(8)]
    offers = [offer("aws", f"t{k}", 0.5 + k, region=r) for r in regions for k in range(3)]
    provider = QuotaProvider("aws", tmp_path, offers, dict.fromkeys(regions, 64), delay=0.2)
    started = time.monotonic()
    result = plan(spec(tmp_path, "resources: {gpu: T4}"), {"aws": provider})
    took = time.monotonic() - started
    assert len(result.placements) == 24
    assert sorted(provider.asked) == regions, "one lookup per region, not per offer"
    assert provider.most_in_flight > 1, "lookups overlap"
    assert took < 0.2 * len(regions), "not one after another"


def test_over_budget_offers_are_never_looked_up(tmp_path: Path) -> None:
    provider = QuotaProvider("aws", tmp_path, [offer("aws", "pricey", 50, region="r7")], {"r7": 64})
    with pytest.raises(NoPlacementError, match=r"more than budget\.max_usd allows"):
        require_placements(
            spec(tmp_path, "resources: {gpu: T4}\nbudget: {max_usd: 1, max_hours: 1}"),
            {"aws": provider},
        )
    assert provider.asked == []


def test_an_unreadable_quota_keeps_the_offer_and_says_so(tmp_path: Path) -> None:
    provider = QuotaProvider(
        "aws", tmp_path, [offer("aws", "t", 0.5)], {}, fail=ProviderError("quotas API down")
    )
    [placement] = plan(spec(tmp_path, "resources: {gpu: T4}"), {"aws": provider}).placements
    assert placement.quota is None and "quotas API down" in placement.quota_note


def test_refused_credentials_stop_the_plan(tmp_path: Path) -> None:
    provider = QuotaProvider(
        "aws", tmp_path, [offer("aws", "t", 0.5)], {}, fail=ProviderAuthError("key refused: KEY_X")
    )
    with pytest.raises(ProviderAuthError, match="KEY_X"):
        plan(spec(tmp_path, "resources: {gpu: T4}"), {"aws": provider})


def test_missing_credentials_drop_the_provider_with_what_to_set(tmp_path: Path) -> None:
    cloud = ScriptedProvider("aws", tmp_path, [offer("aws", "t", 0.5)], credentials_ok=False)
    with pytest.raises(NoPlacementError, match="aws: no credentials: SCRIPTED_API_KEY"):
        require_placements(spec(tmp_path, "resources: {gpu: T4}"), {"aws": cloud})


def test_ties_keep_the_specs_provider_order(tmp_path: Path) -> None:
    first = ScriptedProvider("b", tmp_path, [offer("b", "x", 0.5)])
    second = ScriptedProvider("a", tmp_path, [offer("a", "y", 0.5)])
    text = "resources: {gpu: T4}\nproviders: [paperspace, gcp]"
    result = plan(spec(tmp_path, text), {"paperspace": first, "gcp": second})
    assert [p.offer.provider for p in result.placements] == ["b", "a"]
