"""Tables and --json shapes of the cloud read commands: gpus, plan, check, quota.

Money and quota tables share one style (render_limits): right-aligned figures, the provider's own
unit named, and a caption saying where the figures come from.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from rich.markup import escape
from rich.table import Table

from gpujobs.cli.tables import LimitLine, limits_json, limits_table
from gpujobs.cli.tables import figure as _figure
from gpujobs.cli.tables import table as _table
from gpujobs.placement.planner import Placement, Plan, Rejection
from gpujobs.placement.quota import QuotaReport
from gpujobs.providers.base import Credentials, Offer
from gpujobs.providers.catalog import CatalogInfo


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.3f}" if value < 10 else f"${value:,.2f}"


# -- gpus -------------------------------------------------------------------------------------
def gpu_rows(offers: Sequence[Offer]) -> list[dict[str, Any]]:
    """One row per provider and instance type: its cheapest region, on demand and spot."""
    rows: dict[tuple[str, str, int], dict[str, Any]] = {}
    for offer in offers:
        key = (offer.provider, offer.instance_type, offer.gpus)
        row = rows.setdefault(
            key,
            {
                "provider": offer.provider,
                "instance_type": offer.instance_type,
                "gpu": offer.gpu,
                "gpus": offer.gpus,
                "cpus": offer.cpus,
                "memory_gb": offer.memory_gb,
                "on_demand_per_hour": None,
                "on_demand_region": None,
                "spot_per_hour": None,
                "spot_region": None,
                "regions": set(),
            },
        )
        row["regions"].add(offer.region)
        field = "spot" if offer.spot else "on_demand"
        best = row[f"{field}_per_hour"]
        if best is None or offer.price_per_hour < best:
            row[f"{field}_per_hour"] = offer.price_per_hour
            row[f"{field}_region"] = offer.zone or offer.region
    listed = [{**row, "regions": sorted(row["regions"])} for row in rows.values()]
    listed.sort(
        key=lambda r: (
            r["on_demand_per_hour"] if r["on_demand_per_hour"] is not None else float("inf"),
            r["provider"],
            r["instance_type"],
        )
    )
    return listed


def offers_in_table_order(offers: Sequence[Offer]) -> list[Offer]:
    """The offers grouped as the table's rows and in their order (cheapest on-demand type
    first), on-demand before spot within a row, then cheapest region first: `--json` lists
    what the table shows, in the same order."""
    row_of = {
        (row["provider"], row["instance_type"], row["gpus"]): index
        for index, row in enumerate(gpu_rows(offers))
    }
    return sorted(
        offers,
        key=lambda o: (
            row_of[(o.provider, o.instance_type, o.gpus)],
            o.spot,
            o.price_per_hour,
            o.zone or o.region,
        ),
    )


def gpus_table(rows: list[dict[str, Any]], catalogs: Sequence[CatalogInfo]) -> Table:
    table = _table(
        "PROVIDER", "TYPE", "GPU", "VCPU", "MEM GB", "$/H", "SPOT $/H", "CHEAPEST IN",
        right=("VCPU", "MEM GB", "$/H", "SPOT $/H"),
    )  # fmt: skip
    for row in rows:
        table.add_row(
            row["provider"],
            row["instance_type"],
            f"{row['gpus']}x {row['gpu']}",
            str(row["cpus"]),
            f"{row['memory_gb']:g}",
            _usd(row["on_demand_per_hour"]),
            _usd(row["spot_per_hour"]),
            row["on_demand_region"] or row["spot_region"] or "-",
        )
    table.caption = "$ per hour per instance, in its cheapest region. " + "; ".join(
        f"{info.provider} prices as of {info.as_of} ({_first_clause(info.source)})"
        for info in catalogs
    )
    return table


def _first_clause(text: str) -> str:
    """The start of a catalog's source note (the whole note is in --json)."""
    for stop in (" (", ", ", ". "):
        text = text.split(stop, 1)[0]
    return text[:60]


# -- plan -------------------------------------------------------------------------------------
def plan_json(plan: Plan, max_hours: float | None) -> dict[str, Any]:
    return {
        "placements": [
            {
                "rank": rank,
                "label": placement.offer.label,
                **placement.offer.model_dump(mode="json"),
                "nodes": placement.nodes,
                "job_price_per_hour": placement.price_per_hour,
                "worst_case_usd": placement.worst_case_usd(max_hours),
                "cap": placement.cap.__dict__ if placement.cap else None,
                "quota": placement.quota.model_dump(mode="json") if placement.quota else None,
                "quota_note": placement.quota_note,
            }
            for rank, placement in enumerate(plan.placements, start=1)
        ],
        "rejected": [
            {"what": item.what, "kind": item.kind, "reason": item.reason} for item in plan.rejected
        ],
    }


def plan_tables(plan: Plan, max_hours: float | None, *, limit: int | None) -> list[Table]:
    shown = plan.placements if limit is None else plan.placements[:limit]
    placements = _table(
        "#", "PLACEMENT", "GPU", "$/H (JOB)", "CAP", "QUOTA FREE", "NEEDED", "UNIT",
        right=("#", "$/H (JOB)", "CAP", "QUOTA FREE", "NEEDED"),
    )  # fmt: skip
    for rank, placement in enumerate(shown, start=1):
        offer, quota = placement.offer, placement.quota
        placements.add_row(
            str(rank),
            offer.label,
            f"{offer.gpus}x {offer.gpu}" if offer.gpu else "-",
            _usd(placement.price_per_hour),
            _cap(placement),
            _figure(quota.free) if quota else "unknown",
            f"{quota.per_node * placement.nodes:g}" if quota else "-",
            quota.unit if quota else "-",
        )
    hidden = len(plan.placements) - len(shown)
    placements.caption = f"{len(plan.placements)} placement(s), tried in this order" + (
        f"; {hidden} more with --all" if hidden > 0 else ""
    )
    rejected = _table("DROPPED", "WHY")
    groups = (
        _grouped(plan.rejected)
        if limit is not None
        else [(item.what, item.reason) for item in plan.rejected]
    )
    for what, reason in groups:
        rejected.add_row(escape(what), escape(reason))
    rejected.caption = f"{len(plan.rejected)} offer(s) dropped" + (
        "; every one with --all" if limit is not None and len(groups) < len(plan.rejected) else ""
    )
    if not plan.placements:
        return [rejected]
    return [placements, rejected] if plan.rejected else [placements]


def _cap(placement: Placement) -> str:
    """What the job may spend there (its budget and yours), and for how long."""
    cap = placement.cap
    if cap is None or (cap.usd is None and cap.hours is None):
        return "none"
    hours = "" if cap.hours is None else f"{cap.hours:.3g} h"
    if cap.usd is None:
        return hours
    return f"{_usd(cap.usd)} ({hours})"


def _grouped(rejected: Sequence[Rejection]) -> list[tuple[str, str]]:
    """Offers dropped for the same kind of reason (figures aside), as one row: the first
    offer, its reason, and how many more."""
    groups: dict[tuple[str, str], list[Rejection]] = {}
    for item in rejected:
        provider = item.what.split("/", 1)[0]
        kind = re.sub(r"\$?\d[\d.,]*", "#", item.reason)
        groups.setdefault((provider, kind), []).append(item)
    return [
        (items[0].what + (f" and {len(items) - 1} more" if len(items) > 1 else ""), items[0].reason)
        for items in groups.values()
    ]


# -- check ------------------------------------------------------------------------------------
def check_table(found: Sequence[Credentials]) -> Table:
    table = _table("PROVIDER", "READY", "CREDENTIALS")
    for item in found:
        table.add_row(
            item.provider,
            "[green]yes[/]" if item.ok else "[red]no[/]",
            escape(item.found if item.ok else item.missing),
        )
    return table


# -- quota ------------------------------------------------------------------------------------
def quota_lines(report: QuotaReport) -> list[LimitLine]:
    return [
        LimitLine(
            provider=quota.provider,
            scope=quota.region,
            code=quota.code,
            name=quota.name,
            unit=quota.unit,
            limit=quota.limit,
            in_use=quota.in_use,
            free=quota.free,
            request_at=quota.request_at,
            extra={"region": quota.region, "per_node": quota.per_node},
        )
        for quota in report.quotas
    ]


def quota_json(report: QuotaReport) -> dict[str, Any]:
    return limits_json("quota", quota_lines(report), report.problems, time.time())


def quota_table(report: QuotaReport) -> Table:
    return limits_table(quota_lines(report), report.problems, scope="REGION")


def dataset_json(size: Any, egress: tuple[float, str] | None) -> dict[str, Any]:
    """The dataset's size by source (placement.dataset_size.DatasetSize) and the egress estimate
    for the first placement."""
    return {
        "bytes": size.known_bytes,
        "sources": [
            {"source": item.source, "bytes": item.bytes, "objects": item.objects, "note": item.note}
            for item in size.sources
        ],
        "egress_usd": round(egress[0], 2) if egress else 0.0,
        "egress_basis": egress[1] if egress else "",
    }


def dataset_lines(size: Any, egress: tuple[float, str] | None, disk_gb: float | None) -> list[str]:
    if size is None:
        return []
    lines = [f"dataset: {size.describe()}"]
    if disk_gb is not None:
        lines[0] += f"; resources.disk_gb: {disk_gb:g}"
    if egress is not None:
        lines.append(
            f"dataset egress for the first placement: about ${egress[0]:.2f} ({egress[1]})"
        )
    return lines
