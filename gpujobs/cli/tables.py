"""One family for the two reports of limits: `gpujobs quota` (GPUs and vCPUs a cloud allows) and
`gpujobs budget` (dollars the user allows). A budget is a quota in USD: both are rows of
provider, scope, code, limit, in use, free and unit, with where to ask for more, drawn as the same
table and given as the same --json shape:

    {"report": "quota" | "budget", "as_of": "2026-11-25T10:00:00Z",
     "limits": [{provider, scope, code, name, unit, limit, in_use, free, request_at, ...}],
     "problems": {provider: why it has no rows}, ...what else the report adds}
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

_WRAPPED = frozenset({"WHY", "CREDENTIALS", "QUOTA", "NOTE", "NAME"})  # prose wraps, figures don't


@dataclass(frozen=True)
class LimitLine:
    provider: str  # "all" for a budget over every provider
    scope: str  # a region (quota), or a period (budget: "2026-11", "all time")
    code: str  # the cloud's quota code, or budget / budget-monthly
    name: str
    unit: str  # vCPUs, GPUs, USD
    limit: float | None  # None: no limit applies
    in_use: float
    free: float | None
    request_at: str  # a console URL, or the gpujobs command that raises a budget
    note: str = ""  # for the table: what the figures do not say (burn rate, runs out)
    extra: dict[str, Any] = field(default_factory=dict)  # --json only


def table(*columns: str, right: Sequence[str] = (), folded: Sequence[str] = ()) -> Table:
    """The house table: no box, bold headers, figures right-aligned and never wrapped; prose
    columns wrap, and `folded` ones (long ids) fold on a narrow terminal."""
    drawn = Table(box=None, header_style="bold", pad_edge=False, caption_justify="left")
    for column in columns:
        drawn.add_column(
            column,
            justify="right" if column in right else "left",
            no_wrap=column not in _WRAPPED and column not in folded,
            overflow="fold",
        )
    return drawn


def figure(value: float | None, unit: str = "") -> str:
    if value is None:
        return "no limit"
    if unit == "USD":
        return f"${value:,.2f}"
    return f"{value:g}"


def limits_table(
    lines: Sequence[LimitLine], problems: Mapping[str, str], *, scope: str
) -> RenderableType:
    """The rows as a table, then one left-aligned line per note (where to ask for more, and why
    a provider has no rows). Notes are lines of their own, not the table's caption: a caption
    wraps, centred, to the width of the table, which is narrow when few rows fit."""
    columns = ["PROVIDER", scope, "CODE", "LIMIT", "IN USE", "FREE", "UNIT", "NAME", "NOTE"]
    rows = []
    for line in lines:
        free = figure(line.free, line.unit)
        rows.append(
            [
                line.provider,
                line.scope,
                line.code,
                figure(line.limit, line.unit),
                figure(line.in_use, line.unit),
                f"[red]{free}[/]" if line.free is not None and line.free <= 0 else free,
                line.unit,
                escape(line.name),
                escape(line.note),
            ]
        )
    # Prose columns no row fills (budgets have no name, quotas no note) are left out.
    keep = [i for i, name in enumerate(columns) if name not in _WRAPPED or any(r[i] for r in rows)]
    drawn = table(*(columns[i] for i in keep), right=("LIMIT", "IN USE", "FREE"))
    for row in rows:
        drawn.add_row(*(row[i] for i in keep))
    # Where to ask, once per provider: the URL with its scope and code as placeholders.
    where = {
        line.provider: line.request_at.replace(line.scope, scope).replace(line.code, "CODE")
        for line in lines
        if line.request_at.startswith("http")
    }
    notes = [f"{name}: request more at {url}" for name, url in sorted(where.items())]
    notes += [f"{name}: {why}" for name, why in problems.items()]
    parts: list[RenderableType] = [drawn] if rows or not notes else []
    parts += [Text(note, overflow="fold") for note in notes]
    return Group(*parts) if len(parts) > 1 else parts[0]


def limits_json(
    report: str,
    lines: Sequence[LimitLine],
    problems: Mapping[str, str],
    as_of: float,
    **more: Any,
) -> dict[str, Any]:
    rows = []
    for line in lines:
        row = asdict(line)
        row.pop("note")
        row.update(row.pop("extra"))
        if line.unit == "USD":  # cents and below are noise from per-second accrual
            row.update({k: round(v, 4) for k, v in row.items() if isinstance(v, float)})
        rows.append(row)
    return {
        "report": report,
        "as_of": iso_time(as_of),
        "limits": rows,
        "problems": dict(problems),
        **more,
    }


def iso_time(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
