"""The GPU catalog: instance types per provider and region, with GPU model and count, vCPUs,
memory, and on-demand and spot $/h. Data files in `catalog/data/<provider>.json`, each with the
date its prices were taken and their source.

File shape (one per provider)::

    {"provider": "aws", "as_of": "2026-11-01", "source": "...", "currency": "USD",
     "instance_types": [
        {"name": "g4dn.xlarge", "gpu": "T4", "gpus": 1, "gpu_memory_gb": 16,
         "cpus": 4, "memory_gb": 16, "disk_gb": 125,
         "prices": {"us-east-1": [0.526, 0.2104]},        # region: [on-demand, spot or null]
         "zones": {"us-east-1": ["us-east-1a"]}}]}        # optional: zones that have it

A row with zones becomes one offer per zone (GCP places by zone and runs out by zone); without,
one per region. Loading is plain `json` and `Offer.model_construct` (the files are ours and
checked by tests), so planning across the whole catalog stays within milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from gpujobs.errors import BadInputError, GpuJobsError
from gpujobs.providers.base import Availability, Offer
from gpujobs.spec import Resources

CATALOG_PROVIDERS = ("aws", "gcp", "paperspace")


@dataclass(frozen=True)
class CatalogInfo:
    provider: str
    as_of: str
    source: str
    currency: str


@dataclass(frozen=True)
class Catalog:
    info: CatalogInfo
    offers: tuple[Offer, ...]  # every region or zone, on-demand and spot

    def matching(self, resources: Resources) -> list[Offer]:
        """Offers with the GPU model asked for (any GPU when none is named). The other
        resources are the planner's to check, so it can say why an offer does not fit."""
        wanted = resources.gpu
        if wanted is None:
            return list(self.offers)
        return [offer for offer in self.offers if offer.gpu == wanted]

    def regions(self) -> list[str]:
        return sorted({offer.region for offer in self.offers})

    def price(
        self, instance_type: str, region: str, *, spot: bool, gpus: int | None = None
    ) -> float | None:
        """$/h of a type in a region (GCP's n1 types repeat with different GPU counts: pass
        `gpus` to pick one)."""
        for offer in self.offers:
            same = (offer.instance_type, offer.region, offer.spot) == (instance_type, region, spot)
            if same and gpus in (None, offer.gpus):
                return offer.price_per_hour
        return None


@cache
def load_catalog(provider: str) -> Catalog:
    """The catalog of one provider (read once per process)."""
    if provider not in CATALOG_PROVIDERS:
        raise GpuJobsError(f"no catalog for provider {provider!r}")
    text = resources.files(__name__).joinpath(f"data/{provider}.json").read_text()
    return parse_catalog(json.loads(text))


def parse_catalog(data: dict[str, Any]) -> Catalog:
    provider = data["provider"]
    info = CatalogInfo(provider, data["as_of"], data["source"], data.get("currency", "USD"))
    offers: list[Offer] = []
    for row in data["instance_types"]:
        gpu = row.get("gpu")
        zones: dict[str, list[str]] = row.get("zones", {})
        for region, (on_demand, spot) in row["prices"].items():
            for zone in zones.get(region) or [None]:
                for price, is_spot in ((on_demand, False), (spot, True)):
                    if price is None:
                        continue
                    offers.append(
                        Offer.model_construct(
                            provider=provider,
                            instance_type=row["name"],
                            region=region,
                            zone=zone,
                            gpu=gpu.upper() if gpu else None,
                            gpus=row.get("gpus", 0),
                            cpus=row["cpus"],
                            memory_gb=float(row["memory_gb"]),
                            disk_gb=row.get("disk_gb"),
                            price_per_hour=float(price),
                            spot=is_spot,
                            availability=Availability.UNKNOWN,
                            max_nodes=None,
                            unavailable_reason="",
                        )
                    )
    return Catalog(info, tuple(offers))


def catalog_offers(
    *,
    providers: list[str] | None = None,
    gpu: str | None = None,
    region: str | None = None,
    spot: bool | None = None,
) -> tuple[list[Offer], list[CatalogInfo]]:
    """`gpujobs gpus`: every catalog offer that matches, and the catalogs they came from."""
    names = providers or list(CATALOG_PROVIDERS)
    for name in names:
        if name not in CATALOG_PROVIDERS:
            raise BadInputError(
                f"--provider {name}: no catalog; catalogs: {', '.join(CATALOG_PROVIDERS)}"
            )
    catalogs = [load_catalog(name) for name in names]
    wanted = gpu.strip().upper() if gpu else None
    if wanted and not any(o.gpu == wanted for c in catalogs for o in c.offers):
        known = ", ".join(known_gpus(names))
        raise BadInputError(f"--gpu {gpu}: no such GPU in the catalog; known: {known}")
    offers = [
        offer
        for catalog in catalogs
        for offer in catalog.offers
        if (wanted is None or offer.gpu == wanted)
        and (region is None or offer.region == region)
        and (spot is None or offer.spot == spot)
    ]
    return offers, [catalog.info for catalog in catalogs]


def known_gpus(providers: list[str] | None = None) -> list[str]:
    names = providers or list(CATALOG_PROVIDERS)
    return sorted({o.gpu for name in names for o in load_catalog(name).offers if o.gpu})
