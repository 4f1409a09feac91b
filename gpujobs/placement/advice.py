"""A budget refusal in one line: by how much the cheapest placement is over, and what would fit.

What fits is looked for where the plan already looked: fewer hours on the cheapest placement,
spot machines the spec did not allow, regions it left out, and last a higher budget (the command
that sets it). Every figure comes from the offers the planner dropped; nothing is called again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gpujobs.models import Availability
from gpujobs.money.budget import (
    Allowance,
    JobCap,
    Shortfall,
    cap_for,
    fitting_hours,
    raise_command,
)
from gpujobs.spec import JobSpec

if TYPE_CHECKING:
    from gpujobs.placement.planner import Rejection


def refusal(spec: JobSpec, rejected: Sequence[Rejection], allowance: Allowance | None) -> str:
    over = [
        (item, shortfall)
        for item in rejected
        if item.kind == "budget" and item.offer is not None
        for shortfall in [cap_for(spec, item.offer, allowance)]
        if isinstance(shortfall, Shortfall)
    ]
    item, short = min(over, key=lambda pair: pair[1].price_per_hour)
    assert item.offer is not None
    if short.worst_usd is None:
        head = f"budget: {short.reason()}: every placement costs money ({item.what} at "
        head += f"${short.price_per_hour:.3f}/h)"
    else:
        head = (
            f"budget: the cheapest placement, {item.what}, costs up to ${short.worst_usd:.2f} "
            f"({spec.budget.max_hours:g} h x {spec.nodes} node(s) x "
            f"${item.offer.price_per_hour:.3f}/h), ${short.over_by:.2f} more than {short.of} "
            f"allows (${short.left_usd:.2f})"
        )
    fixes = []
    hours = fitting_hours(short.left_usd, short.price_per_hour)
    if short.worst_usd is not None and hours > 0:
        fixes.append(f"budget.max_hours: {hours:g} on that placement")
    for kind, fix in (("spot", "spot: true"), ("region", "regions: add {region}")):
        if found := _cheapest_fitting(spec, rejected, kind, allowance):
            offer_label, region, cap = found
            fixes.append(f"{fix.format(region=region)} ({offer_label}, ${cap.usd or 0:.2f} cap)")
    if short.limit is not None and math.isfinite(short.over_by):
        raised = math.ceil(short.limit.limit_usd + max(short.over_by, 1.0))
        fixes.append(f"raise your budget: {raise_command(short.limit, f'{raised:g}')}")
    elif short.worst_usd is not None and math.isfinite(short.worst_usd):
        fixes.append(f"budget.max_usd: {math.ceil(short.worst_usd):g}")
    return f"{head}; what fits: " + "; or ".join(fixes) if fixes else head


def _cheapest_fitting(
    spec: JobSpec, rejected: Sequence[Rejection], kind: str, allowance: Allowance | None
) -> tuple[str, str, JobCap] | None:
    """The cheapest offer dropped only for `kind` (spot not allowed, region left out) whose
    worst case would fit, with its cap."""
    fitting = []
    for item in rejected:
        offer = item.offer
        if item.kind != kind or offer is None:
            continue
        # Dropped for `kind` means the checks before it passed; the ones after must pass too.
        if (offer.spot and not spec.spot and kind != "spot") or (
            offer.availability is Availability.NOT_AVAILABLE
        ):
            continue
        cap = cap_for(spec, offer, allowance)
        if isinstance(cap, JobCap):
            fitting.append((offer.price_per_hour, item.what, offer.region, cap))
    if not fitting:
        return None
    _, label, region, cap = min(fitting, key=lambda entry: entry[0])
    return label, region, cap
