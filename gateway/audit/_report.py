"""The audit report (docs/api.md, "Audit"): per exit tier and vote pattern, audited n, agreement
with the top tier and its 95 % Clopper–Pearson interval, and the estimated accuracy gap against
top-tier-only service, for ``GET /v1/coe/audit`` and ``coe audit``. The arithmetic is
``policies.audit``'s; this module only counts.

A pattern's ``traffic_share`` is the share of the route's served requests in the window that
showed it: for samples, those that exited at its tier with it; for census, those whose lower tier
voted so and escalated (every such request of an audited route has a census row).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.reports import iso_time, report_window
from policies.audit import audit_report, pattern_report

if TYPE_CHECKING:
    from datetime import datetime

    from gateway.ledger import AuditCounts, Ledger

_COST_DIGITS = 10


async def route_audit_report(
    ledger: Ledger,
    route: str,
    *,
    tenant: str | None,
    since: datetime | None,
    until: datetime | None,
) -> dict[str, Any]:
    """The report of one route's audits (one tenant's traffic, or every tenant's: None)."""
    counts = await ledger.audit_counts(route, report_window(tenant, since, until))
    return shape_audit_report(counts, route, since=since, until=until)


def shape_audit_report(
    counts: AuditCounts, route: str, *, since: datetime | None, until: datetime | None
) -> dict[str, Any]:
    rows = [
        pattern_report(
            evidence,
            _share(counts.traffic.get((evidence.pattern, evidence.kind), 0), counts.requests),
        )
        for evidence in counts.evidence
    ]
    return audit_report(
        route, iso_time(since), iso_time(until), round(counts.cost_usd, _COST_DIGITS), rows
    )


def _share(requests: int, total: int) -> float:
    return requests / total if total else 0.0
