"""The quota report across providers and regions: `gpujobs quota`.

Each provider that can list its GPU quotas (SupportsQuotaReport) is asked concurrently; one
without credentials, or whose answer fails, is reported with the reason instead of stopping the
report. Rows keep the provider's own unit (AWS counts vCPUs, GCP GPUs) and quota code.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gpujobs.errors import BadInputError, GpuJobsError
from gpujobs.providers.base import Provider, Quota, SupportsQuotaReport


@dataclass(frozen=True)
class QuotaReport:
    quotas: list[Quota]
    problems: dict[str, str]  # provider -> why it has no rows


def quota_report(
    providers: Mapping[str, Provider], *, provider: str | None = None, gpu: str | None = None
) -> QuotaReport:
    reporting = {
        name: item for name, item in providers.items() if isinstance(item, SupportsQuotaReport)
    }
    if provider is not None:
        if provider not in reporting:
            known = ", ".join(sorted(reporting)) or "none"
            raise BadInputError(
                f"--provider {provider}: no quota report for it; providers with quotas: {known}"
            )
        reporting = {provider: reporting[provider]}
    wanted = gpu.strip().upper() if gpu else None

    def ask(name: str) -> tuple[list[Quota], str]:
        item = reporting[name]
        credentials = item.check()
        if not credentials.ok:
            return [], f"no credentials: {credentials.missing}"
        try:
            return item.quotas(wanted), ""  # type: ignore[attr-defined]
        except GpuJobsError as exc:
            return [], str(exc)

    names = sorted(reporting)
    with ThreadPoolExecutor(max_workers=max(len(names), 1)) as pool:
        answers = list(pool.map(ask, names))
    quotas: list[Quota] = []
    problems: dict[str, str] = {}
    for name, (rows, problem) in zip(names, answers, strict=True):
        quotas.extend(rows)
        if problem:
            problems[name] = problem
    quotas.sort(key=lambda q: (q.provider, q.region, q.code))
    return QuotaReport(quotas, problems)
