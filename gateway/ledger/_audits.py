"""The live audit's SQL (gateway.audit): its rows in ``coe_audits`` and the sums reports and the
θ controller read. Synchronous, run in worker threads inside the store's transactions, like
``_sql``.

Evidence counts every audited row but ``top_failed`` ones (the top tier gave no answer to compare
with); traffic counts the served requests of the route (``purpose = 'serve'``) by exit pattern,
and census patterns by their census rows (every escalated request of an audited route has them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime  # noqa: TC003 - a dataclass field's type
from typing import TYPE_CHECKING, Any, Literal

from gateway.ledger._base import ledger_float as _float
from gateway.ledger._base import ledger_int as _int
from policies.audit import EvidenceKind, PatternEvidence, VotePattern
from policies.target import AuditRow

if TYPE_CHECKING:
    from collections.abc import Sequence

    from gateway.ledger._base import Window
    from gateway.ledger._schema import Dialect, Session

AuditOutcome = Literal["agree", "disagree", "top_failed"]

_INSERT_AUDIT = (
    "INSERT INTO coe_audits (request_id, kind, tier, route, tenant, created_at, config_version, "
    "votes, size, threshold, served_answer, top_answer, outcome, cost_usd, billed_to, "
    "audit_request_id) VALUES (" + ", ".join(["%s"] * 16) + ")"
)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audited vote pattern of one served request (a row of ``coe_audits``)."""

    request_id: str  # the served request's
    kind: EvidenceKind
    tier: int
    route: str
    tenant: str  # the served request's tenant (whose traffic it is), not who paid
    created_at: datetime  # the served request's time, so windows match its traffic
    votes: int
    size: int
    threshold: float  # θ in force when the tier decided
    served_answer: str | None
    top_answer: str | None
    outcome: AuditOutcome
    config_version: str | None = None
    cost_usd: float = 0.0  # the audit's own calls (census: 0, the top tier served anyway)
    billed_to: str | None = None  # the tenant the audit's calls were billed to (samples)
    audit_request_id: str | None = None  # the audit's own request row (samples)

    @property
    def pattern(self) -> VotePattern:
        return VotePattern(self.tier, self.votes, self.size)


@dataclass(frozen=True, slots=True)
class AuditCounts:
    """What a route's audit report is computed from, over one window."""

    evidence: tuple[PatternEvidence, ...]
    # Served requests in the window, and how many showed each pattern (exit or census).
    requests: int = 0
    traffic: dict[tuple[VotePattern, EvidenceKind], int] = field(default_factory=dict)
    cost_usd: float = 0.0


def insert_audits(session: Session, dialect: Dialect, rows: Sequence[AuditRecord]) -> None:
    session.executemany(
        _INSERT_AUDIT,
        [
            (
                r.request_id, r.kind, r.tier, r.route, r.tenant, dialect.time(r.created_at),
                r.config_version, r.votes, r.size, r.threshold, r.served_answer, r.top_answer,
                r.outcome, r.cost_usd, r.billed_to, r.audit_request_id,
            )
            for r in rows
        ],
    )


def _where(
    dialect: Dialect, route: str, window: Window, extra: str = ""
) -> tuple[str, list[object]]:
    clauses: list[str] = ["route = %s"]
    params: list[object] = [route]
    if window.tenant is not None:
        clauses.append("tenant = %s")
        params.append(window.tenant)
    if window.since is not None:
        clauses.append("created_at >= %s")
        params.append(dialect.time(window.since))
    if window.until is not None:
        clauses.append("created_at < %s")
        params.append(dialect.time(window.until))
    if extra:
        clauses.append(extra)
    return " WHERE " + " AND ".join(clauses), params


def evidence(
    session: Session, dialect: Dialect, route: str, window: Window
) -> tuple[PatternEvidence, ...]:
    """One entry per (pattern, kind) audited in the window, top-tier failures left out."""
    where, params = _where(dialect, route, window, "outcome <> 'top_failed'")
    rows = session.execute(
        "SELECT tier, votes, size, kind, COUNT(*), "
        "SUM(CASE WHEN outcome = 'agree' THEN 1 ELSE 0 END) "
        f"FROM coe_audits{where} GROUP BY tier, votes, size, kind",
        params,
    )
    found = [
        PatternEvidence(
            VotePattern(_int(r[0]), _int(r[1]), _int(r[2])), _kind(r[3]), _int(r[4]), _int(r[5])
        )
        for r in rows
    ]
    return tuple(sorted(found, key=lambda e: (e.pattern, e.kind)))


def counts(session: Session, dialect: Dialect, route: str, window: Window) -> AuditCounts:
    where, params = _where(dialect, route, window, "purpose = 'serve'")
    ((requests,),) = session.execute(f"SELECT COUNT(*) FROM coe_requests{where}", params)
    traffic: dict[tuple[VotePattern, EvidenceKind], int] = {}
    exits = session.execute(
        "SELECT tier, votes, tier_size, COUNT(*) FROM coe_requests"
        f"{where} AND votes IS NOT NULL AND tier_size IS NOT NULL GROUP BY tier, votes, tier_size",
        params,
    )
    for tier, votes, size, n in exits:
        traffic[VotePattern(_int(tier), _int(votes), _int(size)), "sample"] = _int(n)
    where, params = _where(dialect, route, window, "kind = 'census'")
    census = session.execute(
        f"SELECT tier, votes, size, COUNT(*) FROM coe_audits{where} GROUP BY tier, votes, size",
        params,
    )
    for tier, votes, size, n in census:
        traffic[VotePattern(_int(tier), _int(votes), _int(size)), "census"] = _int(n)
    where, params = _where(dialect, route, window)
    ((cost,),) = session.execute(
        f"SELECT COALESCE(SUM(cost_usd), 0) FROM coe_audits{where}", params
    )
    return AuditCounts(
        evidence=evidence(session, dialect, route, window),
        requests=_int(requests),
        traffic=traffic,
        cost_usd=_float(cost),
    )


def recent_rows(
    session: Session, dialect: Dialect, route: str, until: datetime, per_stratum: int
) -> list[AuditRow]:
    """The θ controller's evidence (gateway.audit, policies.target): the latest ``per_stratum``
    audited rows of each (tier, size, kind, votes, θ in force) served before ``until``, oldest
    first; ``top_failed`` rows left out. Ties in time go by request id, so every replica reading
    the same rows gets them in the same order.

    Read a stratum at a time along ``coe_audits_stratum``: the strata by skipping from one to the
    next, then each stratum's latest rows, newest first with a limit. So a tick costs about
    strata × ``per_stratum`` rows however long the route's audit history grows (ranking all of it
    each tick would not)."""
    found: list[tuple[tuple[Any, str, int], AuditRow]] = []
    for stratum in _strata(session, route):
        rows = session.execute(
            "SELECT created_at, request_id, outcome FROM coe_audits "
            f"WHERE route = %s AND {_STRATUM_EQUALS} AND created_at < %s "
            "AND outcome <> 'top_failed' ORDER BY created_at DESC, request_id DESC LIMIT %s",
            [route, *stratum, dialect.time(until), per_stratum],
        )
        tier, size, kind, votes, threshold = stratum
        pattern = VotePattern(_int(tier), _int(votes), _int(size))
        for created_at, request_id, outcome in rows:
            row = AuditRow(pattern, _kind(kind), outcome == "agree", _float(threshold))
            # Timestamps of one backend are all str (SQLite) or all datetime (PostgreSQL).
            found.append(((created_at, str(request_id), pattern.tier), row))
    found.sort(key=lambda f: f[0])
    return [row for _, row in found]


_STRATUM = "tier, size, kind, votes, threshold"
_STRATUM_EQUALS = "tier = %s AND size = %s AND kind = %s AND votes = %s AND threshold = %s"


def _strata(session: Session, route: str) -> list[tuple[object, ...]]:
    """The route's distinct strata, each found by one index seek past the one before."""
    strata: list[tuple[object, ...]] = []
    while True:
        after = f" AND ({_STRATUM}) > (%s, %s, %s, %s, %s)" if strata else ""
        rows = session.execute(
            f"SELECT {_STRATUM} FROM coe_audits WHERE route = %s{after} "
            f"ORDER BY {_STRATUM} LIMIT 1",
            [route, *(strata[-1] if strata else ())],
        )
        if not rows:
            return strata
        strata.append(rows[0])


def route_spend(session: Session) -> dict[str, tuple[float, float]]:
    """Every route's (serving, audit) spend in the whole ledger."""
    rows = session.execute(
        "SELECT route, purpose, COALESCE(SUM(cost_usd), 0) FROM coe_requests "
        "GROUP BY route, purpose"
    )
    spend: dict[str, tuple[float, float]] = {}
    for route, purpose, cost in rows:
        serving, audit = spend.get(str(route), (0.0, 0.0))
        if purpose == "audit":
            audit += _float(cost)
        else:
            serving += _float(cost)
        spend[str(route)] = (serving, audit)
    return spend


def _kind(value: object) -> EvidenceKind:
    if value == "sample":
        return "sample"
    if value == "census":
        return "census"
    raise TypeError(f"unknown audit kind {value!r} in the ledger")
