"""The shipped GPU catalogs (gpujobs/catalog/data/*.json): each loads, says where its prices come
from and when, and holds rows the planner can trust: GPUs named the way specs name them, spot
never above on-demand, per-GPU prices in the order the hardware implies, GCP zones inside their
regions. The figures themselves come from the sources named in each file's "source" field."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date
from importlib import resources
from typing import Any

import pytest

from gpujobs.providers.base import Offer
from gpujobs.providers.catalog import CATALOG_PROVIDERS, Catalog, load_catalog
from gpujobs.spec import Resources

# The GPU model names the catalogs use: upper case, as a spec's `resources.gpu` is normalised.
GPU_NAMES = {
    "T4", "A10G", "L4", "L40S", "V100", "V100-32GB", "A100", "A100-80GB", "H100", "P100", "P4",
    "P4000", "P5000", "P6000", "RTX4000", "RTX5000", "A4000", "A5000", "A6000",
}  # fmt: skip
REGIONS = {
    "aws": {
        "us-east-1", "us-east-2", "us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1",
        "ap-southeast-1", "ap-south-1", "ca-central-1", "sa-east-1",
    },
    "gcp": {
        "us-central1", "us-east1", "us-east4", "us-west1", "us-west4", "europe-west1",
        "europe-west4", "asia-east1", "asia-southeast1", "asia-northeast1",
    },
    "paperspace": {"ny2", "ca1", "ams1"},
}  # fmt: skip


def raw(provider: str) -> dict[str, Any]:
    text = (
        resources.files("gpujobs.providers.catalog").joinpath(f"data/{provider}.json").read_text()
    )
    return json.loads(text)


def rows(provider: str) -> Iterator[dict[str, Any]]:
    yield from raw(provider)["instance_types"]


def per_gpu(offer: Offer) -> float:
    return offer.price_per_hour / offer.gpus


def cheapest_per_gpu(catalog: Catalog, gpu: str, *, region: str | None = None) -> float:
    found = [
        per_gpu(offer)
        for offer in catalog.matching(Resources(gpu=gpu))
        if not offer.spot and (region is None or offer.region == region)
    ]
    assert found, f"no on-demand {gpu} offer in {catalog.info.provider} {region or ''}"
    return min(found)


@pytest.mark.parametrize("provider", CATALOG_PROVIDERS)
def test_each_catalog_loads_and_says_where_its_prices_come_from(provider: str) -> None:
    catalog = load_catalog(provider)
    assert catalog.info.provider == provider
    assert date.fromisoformat(catalog.info.as_of) <= date.today()
    assert len(catalog.info.source) > 80  # a source, not a word
    assert catalog.info.currency == "USD"
    assert catalog.offers
    assert {offer.provider for offer in catalog.offers} == {provider}


@pytest.mark.parametrize("provider", CATALOG_PROVIDERS)
def test_every_row_is_complete_and_sane(provider: str) -> None:
    names = [row["name"] for row in rows(provider)]
    assert names
    for row in rows(provider):
        where = f"{provider}/{row['name']}"
        assert row["gpu"] in GPU_NAMES, where
        assert isinstance(row["gpus"], int) and row["gpus"] >= 1, where
        assert isinstance(row["cpus"], int) and row["cpus"] >= 1, where
        assert row["memory_gb"] > 0, where
        assert row["gpu_memory_gb"] > 0, where
        assert "disk_gb" not in row, f"{where}: clouds size the boot disk, the spec asks for one"
        assert row["prices"], f"{where} has no region"
        assert set(row["prices"]) <= REGIONS[provider], where
        for region, (on_demand, spot) in row["prices"].items():
            assert 0 < on_demand < 200, f"{where} {region}"
            # Per GPU-hour, every GPU sold here costs between a few cents and $20.
            assert 0.05 < on_demand / row["gpus"] < 20, f"{where} {region}"
            if spot is not None:
                assert 0 < spot <= on_demand, f"{where} {region}: spot above on-demand"


def test_paperspace_has_no_spot_and_gcp_always_has_it() -> None:
    assert all(spot is None for row in rows("paperspace") for _, spot in row["prices"].values())
    assert not any(offer.spot for offer in load_catalog("paperspace").offers)
    assert all(spot is not None for row in rows("gcp") for _, spot in row["prices"].values())


def test_gcp_zones_lie_in_their_regions() -> None:
    for row in rows("gcp"):
        zones: dict[str, list[str]] = row["zones"]
        assert set(zones) == set(row["prices"]), row["name"]
        for region, names in zones.items():
            assert names, f"{row['name']} {region}"
            assert len(set(names)) == len(names)
            for zone in names:
                assert zone.startswith(f"{region}-") and len(zone) == len(region) + 2, zone
    # So every GCP offer is a zone's, one per zone and kind of price.
    for offer in load_catalog("gcp").offers:
        assert offer.zone is not None and offer.zone.startswith(f"{offer.region}-")


@pytest.mark.parametrize("provider", CATALOG_PROVIDERS)
def test_offers_are_unique(provider: str) -> None:
    seen = set()
    for offer in load_catalog(provider).offers:
        key = (offer.instance_type, offer.gpu, offer.gpus, offer.region, offer.zone, offer.spot)
        assert key not in seen, key
        seen.add(key)


def test_gcp_n1_rows_are_one_per_gpu_count() -> None:
    t4_on_n1_8 = {
        offer.gpus
        for offer in load_catalog("gcp").offers
        if offer.instance_type == "n1-standard-8" and offer.gpu == "T4"
    }
    assert t4_on_n1_8 == {1, 2, 4}
    # N1 takes at most 12 vCPUs per V100 (GCP's limit): no n1-standard-16 with one V100.
    assert not any(
        row["name"] == "n1-standard-16" and row["gpu"] == "V100" and row["gpus"] == 1
        for row in rows("gcp")
    )


def test_t4_is_offered_in_the_home_regions() -> None:
    aws_t4 = load_catalog("aws").matching(Resources(gpu="T4"))
    assert any(o.region == "us-east-1" and not o.spot for o in aws_t4)
    assert any(o.region == "us-east-1" and o.spot for o in aws_t4)
    gcp_t4 = load_catalog("gcp").matching(Resources(gpu="T4"))
    assert {o.zone for o in gcp_t4 if o.region == "us-central1"} >= {"us-central1-a"}


@pytest.mark.parametrize("provider", CATALOG_PROVIDERS)
def test_matching_a_gpu_returns_only_that_gpu(provider: str) -> None:
    catalog = load_catalog(provider)
    for gpu in {offer.gpu for offer in catalog.offers}:
        assert gpu is not None
        found = catalog.matching(Resources(gpu=gpu.lower()))  # specs may spell it in lower case
        assert found and {offer.gpu for offer in found} == {gpu}
    assert catalog.matching(Resources(gpu="T4")) == [
        offer for offer in catalog.offers if offer.gpu == "T4"
    ]
    assert len(catalog.matching(Resources())) == len(catalog.offers)
    assert catalog.matching(Resources(gpu="NO-SUCH-GPU")) == []


@pytest.mark.parametrize(
    ("provider", "ladder"),
    [
        # Cheapest on-demand price per GPU-hour, in the order the hardware implies.
        ("aws", ["T4", "A10G", "L40S", "A100", "H100"]),
        ("aws", ["T4", "L4", "V100", "A100"]),
        ("gcp", ["T4", "L4", "V100", "A100", "A100-80GB", "H100"]),
        ("gcp", ["P4", "P100", "V100"]),
        ("paperspace", ["P4000", "P5000", "P6000"]),
        ("paperspace", ["A4000", "A5000", "A6000", "A100", "A100-80GB", "H100"]),
        ("paperspace", ["RTX4000", "RTX5000"]),
    ],
)
def test_per_gpu_prices_follow_the_hardware(provider: str, ladder: list[str]) -> None:
    catalog = load_catalog(provider)
    prices = [cheapest_per_gpu(catalog, gpu) for gpu in ladder]
    assert prices == sorted(prices), dict(zip(ladder, prices, strict=True))
    assert len(set(prices)) == len(prices), dict(zip(ladder, prices, strict=True))


@pytest.mark.parametrize(("provider", "region"), [("aws", "us-east-1"), ("gcp", "us-central1")])
def test_t4_is_cheaper_per_gpu_than_a100_in_the_same_region(provider: str, region: str) -> None:
    catalog = load_catalog(provider)
    assert cheapest_per_gpu(catalog, "T4", region=region) * 3 < cheapest_per_gpu(
        catalog, "A100", region=region
    )


def test_more_gpus_of_a_family_cost_more_in_one_region() -> None:
    aws = load_catalog("aws")
    for family in ("g4dn.xlarge", "g5.xlarge", "g6.xlarge", "g6e.xlarge", "p3.2xlarge"):
        one = aws.price(family, "us-east-1", spot=False)
        assert one is not None
        bigger = [
            o.price_per_hour
            for o in aws.offers
            if o.instance_type.split(".")[0] == family.split(".")[0]
            and o.region == "us-east-1" and not o.spot and o.gpus > 1
        ]  # fmt: skip
        assert bigger and min(bigger) > one, family


def test_well_known_list_prices() -> None:
    """Anchors from the providers' price pages, so a refresh that goes wrong (GCP's GPU and
    machine parts not added, a region's figure shifted) shows here."""
    aws = load_catalog("aws")
    assert aws.price("g4dn.xlarge", "us-east-1", spot=False) == pytest.approx(0.526)
    assert aws.price("p3.2xlarge", "us-east-1", spot=False) == pytest.approx(3.06)
    gcp = load_catalog("gcp")
    # GCP publishes A2 and G2 prices with their GPUs included: a2-highgpu-1g $3.67, g2-standard-4
    # $0.71 in us-central1. N1 with one T4: $0.19 machine + $0.35 GPU.
    assert gcp.price("a2-highgpu-1g", "us-central1", spot=False) == pytest.approx(3.673, rel=0.01)
    assert gcp.price("g2-standard-4", "us-central1", spot=False) == pytest.approx(0.7068, rel=0.01)
    n1_t4 = [
        o.price_per_hour
        for o in gcp.matching(Resources(gpu="T4"))
        if o.instance_type == "n1-standard-4" and o.gpus == 1 and o.region == "us-central1"
        and not o.spot
    ]  # fmt: skip
    assert n1_t4 and n1_t4[0] == pytest.approx(0.54, rel=0.01)
    paperspace = load_catalog("paperspace")
    assert paperspace.price("A4000", "ny2", spot=False) == pytest.approx(0.76)


def test_gcp_gpu_names_are_ones_the_gcp_provider_knows() -> None:
    from gpujobs.providers.gcp.models import gpu_model

    for row in rows("gcp"):
        assert gpu_model(row["gpu"], row["name"]) is not None, row


def test_loading_every_catalog_is_quick() -> None:
    """Measured and printed, not asserted (timings belong in benchmarks): the planner reads all
    three catalogs on every `gpujobs plan`, so this should stay within tens of milliseconds."""
    load_catalog.cache_clear()
    start = time.perf_counter()
    offers = sum(len(load_catalog(provider).offers) for provider in CATALOG_PROVIDERS)
    elapsed_ms = (time.perf_counter() - start) * 1000
    print(f"loaded {offers} offers from {len(CATALOG_PROVIDERS)} catalogs in {elapsed_ms:.1f} ms")
    assert offers > 0
