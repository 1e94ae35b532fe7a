"""Cost reports in the shape of docs/api.md, "Cost report", for ``GET /v1/coe/costs`` and
``coe report``.

``since`` is inclusive, ``until`` exclusive; a request's calls carry its time. ``exits_by_tier``
counts requests by the tier that gave their answer (for a failed request, the last tier reached).
Groups by route and day count requests; groups by tier and endpoint count the calls made there
(a request counts in every tier it reached); groups by tag put a request in each of its tags and
untagged requests under the key "". ``tenant`` is null in a report of every tenant.

Besides totals, exits, counterfactual and groups, a report carries ``hourly_usd`` (docs/api.md,
"Cost report"): per route, each tier's hourly price as paid (cost of its GPU-priced calls per
hour of their GPU time, summed over the tier's endpoints), the cascade's blended hourly price
(Σ share of requests exiting at tier k × hourly price of tier k, the seed paper's Table 2
arithmetic) and the top tier's alone. A tier without GPU-priced calls in the window has no hourly
price; the blended price then is null. ``reserved`` counts the budget reservations made in the
window and not settled yet, with their worst-case sum. ``audit`` is the live audit's spend
(gateway.audit), which every other figure leaves out.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gateway.errors import BadRequest
from gateway.ledger import GROUP_BYS, Window
from gateway.ledger._base import as_utc
from policies.pricing import blended_hourly_usd

if TYPE_CHECKING:
    from gateway.ledger import GpuUsage, Group, GroupBy, Ledger, LedgerSummary

_COST_DIGITS = 10
_RATIO_DIGITS = 6


async def cost_report(
    ledger: Ledger,
    *,
    tenant: str | None,
    since: datetime | None,
    until: datetime | None,
    group_by: str,
) -> dict[str, Any]:
    """One tenant's costs (``tenant=None``: every tenant's) for ``since`` ≤ time < ``until``."""
    grouping = parse_group_by(group_by)
    summary = await ledger.summarize(report_window(tenant, since, until), grouping)
    return shape_report(summary, tenant=tenant, since=since, until=until, group_by=grouping)


def shape_report(
    summary: LedgerSummary,
    *,
    tenant: str | None,
    since: datetime | None,
    until: datetime | None,
    group_by: GroupBy,
) -> dict[str, Any]:
    totals = summary.totals
    top_only = totals.counterfactual_usd
    savings = 1.0 - totals.cost_usd / top_only if top_only > 0 else 0.0
    return {
        "tenant": tenant,
        "since": iso_time(since),
        "until": iso_time(until),
        "totals": {
            "requests": totals.requests,
            "calls": totals.calls,
            "cost_usd": _cost(totals.cost_usd),
            "tokens_in": totals.tokens_in,
            "tokens_out": totals.tokens_out,
            "gpu_seconds": round(totals.gpu_seconds, 6),
        },
        "exits_by_tier": _exits_by_tier(summary),
        "counterfactual": {
            "top_tier_only_cost_usd": _cost(top_only),
            "savings_ratio": round(savings, _RATIO_DIGITS),
        },
        "group_by": group_by,
        "groups": [
            {"key": g.key, "requests": g.requests, "calls": g.calls, "cost_usd": _cost(g.cost_usd)}
            for g in _sorted_groups(summary.groups, group_by)
        ],
        "hourly_usd": _hourly(summary),
        # Budget reservations not settled yet (requests in flight, or left by a stopped process
        # until they expire); not part of the totals.
        "reserved": {
            "requests": summary.reserved.requests,
            "cost_usd": _cost(summary.reserved.cost_usd),
        },
        # The live audit's own top-tier requests billed to this tenant (the operator's are under
        # tenant "admin"): apart from, and not in, the serving totals.
        "audit": {
            "requests": summary.audit.requests,
            "calls": summary.audit.calls,
            "cost_usd": _cost(summary.audit.cost_usd),
        },
    }


def parse_group_by(text: str) -> GroupBy:
    if text not in GROUP_BYS:
        raise BadRequest(
            f"group_by must be one of {', '.join(GROUP_BYS)}, not {text!r}", param="group_by"
        )
    return text


def report_window(tenant: str | None, since: datetime | None, until: datetime | None) -> Window:
    """The requests a report covers, ``since`` ≤ time < ``until`` (400 if since is later)."""
    if since is not None and until is not None and as_utc(since) > as_utc(until):
        raise BadRequest("since must not be later than until", param="since")
    return Window(tenant, since, until)


def parse_time(text: str | None, name: str) -> datetime | None:
    """An ISO 8601 date or time; without an offset it is taken as UTC."""
    if text is None or not text.strip():
        return None
    try:
        return as_utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise BadRequest(
            f"{name} must be an ISO 8601 date or time such as 2025-01-31 or "
            f"2025-01-31T12:00:00Z, not {text!r}",
            param=name,
        ) from None


def iso_time(moment: datetime | None) -> str | None:
    """A report's time: ISO 8601 in UTC with a Z, or None."""
    return None if moment is None else as_utc(moment).isoformat().replace("+00:00", "Z")


def _cost(usd: float) -> float:
    return round(usd, _COST_DIGITS)


def _exits_by_tier(summary: LedgerSummary) -> dict[str, int]:
    counts: defaultdict[int, int] = defaultdict(int)
    for exits in summary.exits:
        counts[exits.tier] += exits.requests
    top = max(counts, default=-1)
    return {str(tier): counts[tier] for tier in range(top + 1)}


def _sorted_groups(groups: tuple[Group, ...], group_by: GroupBy) -> list[Group]:
    if group_by == "tier":
        return sorted(groups, key=lambda g: int(g.key))
    return sorted(groups, key=lambda g: g.key)


def _hourly(summary: LedgerSummary) -> dict[str, dict[str, Any]]:
    rates = _tier_rates(summary.gpu_usage)
    exits: defaultdict[str, dict[int, int]] = defaultdict(dict)
    for row in summary.exits:
        exits[row.route][row.tier] = row.requests
    report: dict[str, dict[str, Any]] = {}
    for route in sorted(rates):
        by_tier = rates[route]
        top = max([*by_tier, *exits[route]])
        requests = sum(exits[route].values())
        blended: float | None = None
        if requests and all(tier in by_tier for tier in range(top + 1)):
            fractions = [exits[route].get(tier, 0) / requests for tier in range(top + 1)]
            blended = blended_hourly_usd(fractions, [by_tier[t] for t in range(top + 1)])
        report[route] = {
            "by_tier": {str(t): round(by_tier[t], _RATIO_DIGITS) for t in sorted(by_tier)},
            "blended": None if blended is None else round(blended, _RATIO_DIGITS),
            "top_tier_only": round(by_tier[top], _RATIO_DIGITS) if top in by_tier else None,
        }
    return report


def _tier_rates(usage: tuple[GpuUsage, ...]) -> dict[str, dict[int, float]]:
    """USD per hour of each route's tiers: an ensemble's endpoints all run, so their rates add."""
    rates: defaultdict[str, defaultdict[int, float]] = defaultdict(lambda: defaultdict(float))
    for row in usage:
        rates[row.route][row.tier] += row.cost_usd / (row.gpu_seconds / 3600.0)
    return {route: dict(tiers) for route, tiers in rates.items()}
