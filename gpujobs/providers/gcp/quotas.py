"""GCP GPU quotas: regional NVIDIA_<GPU>_GPUS (on-demand) and PREEMPTIBLE_NVIDIA_<GPU>_GPUS (spot)
from the region, and the project's GPUS_ALL_REGIONS. An offer is governed by the tighter of its
regional metric and the global one. Answers are cached per provider instance: one region call
per region, one project call.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from gpujobs.errors import ProviderError
from gpujobs.providers.base import Offer, Quota
from gpujobs.providers.gcp.client import ComputeClient
from gpujobs.providers.gcp.errors import quota_url
from gpujobs.providers.gcp.models import GLOBAL_GPU_METRIC, GPU_MODELS, QuotaValue, gpu_model

T = TypeVar("T")
Api = Callable[[Callable[[], T]], T]

_GPU_METRIC = re.compile(r"^(PREEMPTIBLE_)?NVIDIA_([A-Z0-9_]+?)_GPUS$")


def metric_for(offer: Offer, *, spot: bool | None = None) -> str | None:
    """The regional metric of an offer's GPU (None: no GPU, or one gpujobs does not know)."""
    model = gpu_model(offer.gpu, offer.instance_type)
    if model is None:
        return None
    prefix = "PREEMPTIBLE_" if (offer.spot if spot is None else spot) else ""
    return f"{prefix}NVIDIA_{GPU_MODELS[model][1]}_GPUS"


def _describe(metric: str) -> str:
    if metric == GLOBAL_GPU_METRIC:
        return "GPUs in all regions"
    if metric.endswith("CPUS"):
        return ("spot " if metric.startswith("PREEMPTIBLE_") else "") + "vCPUs"
    found = _GPU_METRIC.match(metric)
    if not found:
        return metric
    kind = "spot " if found.group(1) else ""
    return f"{kind}{found.group(2).replace('_', ' ')} GPUs"


class QuotaBook:
    def __init__(self, api: Api, client: Callable[[], ComputeClient]) -> None:
        self._api = api
        self._client = client
        self._regions: dict[str, dict[str, QuotaValue]] = {}
        self._project: dict[str, QuotaValue] | None = None

    def region(self, region: str) -> dict[str, QuotaValue]:
        if region not in self._regions:
            client = self._client()
            values = self._api(lambda: client.region_quotas(region))
            self._regions[region] = {value.metric: value for value in values}
        return self._regions[region]

    def project(self) -> dict[str, QuotaValue]:
        if self._project is None:
            client = self._client()
            self._project = {value.metric: value for value in self._api(client.project_quotas)}
        return self._project

    def for_offer(self, offer: Offer, project: str) -> Quota:
        """The quota that limits `offer` most: its free amount is the smallest."""
        if not offer.gpu:
            metric = "PREEMPTIBLE_CPUS" if offer.spot else "CPUS"
            found = self.region(offer.region).get(metric)
            if found is None:
                raise ProviderError(f"gcp: {offer.region} reports no {metric} quota")
            return self._quota(found, offer.region, project, "vCPUs", offer.cpus)
        metric = metric_for(offer)
        if metric is None:
            raise ProviderError(f"gcp: no quota metric known for GPU {offer.gpu}")
        regional = self.region(offer.region).get(metric)
        if offer.spot and (regional is None or regional.limit <= 0):
            # Without preemptible quota of their own, spot GPUs count against the regular one.
            on_demand = self.region(offer.region).get(metric_for(offer, spot=False) or "")
            regional = on_demand or regional
        candidates: list[Quota] = []
        if regional is not None:
            candidates.append(self._quota(regional, offer.region, project, "GPUs", offer.gpus))
        overall = self.project().get(GLOBAL_GPU_METRIC)
        if overall is not None:
            candidates.append(self._quota(overall, "global", project, "GPUs", offer.gpus))
        if not candidates:
            raise ProviderError(f"gcp: {offer.region} reports no {metric} quota")
        return min(candidates, key=lambda quota: quota.free or 0.0)

    def report(self, gpu: str | None, regions: list[str], project: str) -> list[Quota]:
        """Every GPU quota in the catalog's regions (for one GPU, or all), and the global one."""
        wanted = GPU_MODELS[model][1] if (model := gpu_model(gpu, "")) else None
        if gpu and wanted is None:
            return []
        if len(regions) > 1 and any(region not in self._regions for region in regions):
            client = self._client()
            every = self._api(client.all_region_quotas)
            for name in regions:  # a region the project cannot use has no quotas to show
                values = every.get(name, [])
                self._regions.setdefault(name, {value.metric: value for value in values})
        found: list[Quota] = []
        for region in regions:
            for metric, value in sorted(self.region(region).items()):
                match = _GPU_METRIC.match(metric)
                vws = metric.endswith("_VWS_GPUS")  # workstation licences, not training GPUs
                if match and not vws and (wanted is None or match.group(2) == wanted):
                    found.append(self._quota(value, region, project, "GPUs", 0))
        overall = self.project().get(GLOBAL_GPU_METRIC)
        if overall is not None:
            found.append(self._quota(overall, "global", project, "GPUs", 0))
        return found

    @staticmethod
    def _quota(value: QuotaValue, region: str, project: str, unit: str, per_node: int) -> Quota:
        return Quota(
            provider="gcp",
            region=region,
            code=value.metric,
            name=_describe(value.metric),
            unit=unit,
            limit=value.limit,
            in_use=value.usage,
            request_at=quota_url(project),
            per_node=float(per_node),
        )
