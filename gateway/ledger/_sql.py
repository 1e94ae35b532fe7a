"""The ledger's SQL, shared by SQLite and PostgreSQL: writing batches, budgets and report sums.

Everything here is synchronous and runs in a worker thread; the writer task in ``_writer`` is the
only caller of ``write``, so batches never race each other within one process. Across processes
the spend counter is an upsert inside the batch's transaction, so it always equals the sum of the
committed requests, and counters are locked in (tenant, month) order to avoid deadlocks.

Budget reservations (``reserve``) are one conditional UPDATE of the tenant-month's counter,
``reserved_usd = reserved_usd + r WHERE cost_usd + reserved_usd + r <= budget``: PostgreSQL
re-checks the condition on the row it locked, SQLite runs it under ``BEGIN IMMEDIATE``, so it is
atomic across processes without a read-then-write. Every transaction that removes reservation rows
(settling in ``write``, ``release``, expiry) deletes them first and then updates counters, so the
lock order is the same everywhere.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from datetime import timedelta
from typing import TYPE_CHECKING

from gateway.ledger._audits import (
    AuditCounts,
    AuditRecord,
    counts,
    insert_audits,
    recent_rows,
    route_spend,
)
from gateway.ledger._base import (
    AuditSpend,
    Exits,
    GpuUsage,
    Group,
    Hold,
    LedgerSummary,
    Reservation,
    Reserved,
    Totals,
    month_key,
)
from gateway.ledger._base import ledger_float as _float
from gateway.ledger._base import ledger_int as _int
from gateway.ledger._schema import migrate

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from contextlib import AbstractContextManager
    from datetime import datetime

    from gateway.ledger._base import GroupBy, Window
    from gateway.ledger._schema import Dialect, Session
    from gateway.outcome import Purpose, RequestOutcome
    from policies.target import AuditRow

Row = tuple[object, ...]

_INSERT_REQUEST = (
    "INSERT INTO coe_requests (request_id, tenant, route, tier, decision, agreement, threshold, "
    "policy, status, answer, cost_usd, counterfactual_usd, tokens_in, tokens_out, gpu_seconds, "
    "latency_ms, tags, created_at, config_version, purpose, parent_request_id, votes, tier_size) "
    "VALUES (" + ", ".join(["%s"] * 23) + ")"
)
_INSERT_CALL = (
    "INSERT INTO coe_calls (request_id, call_index, tenant, route, tier, endpoint, status, "
    "tokens_in, tokens_out, latency_ms, gpu_seconds, cost_usd, estimated, attempts, created_at, "
    "purpose) VALUES (" + ", ".join(["%s"] * 16) + ")"
)
_INSERT_TAG = (
    "INSERT INTO coe_request_tags (request_id, tag, tenant, created_at) VALUES (%s, %s, %s, %s)"
)
# The last parameter is the reserved amount the batch settles (removes) from the counter.
_ADD_SPEND = (
    "INSERT INTO coe_tenant_spend (tenant, month, cost_usd, requests, reserved_usd) "
    "VALUES (%s, %s, %s, %s, 0) "
    "ON CONFLICT (tenant, month) DO UPDATE SET "
    "cost_usd = coe_tenant_spend.cost_usd + excluded.cost_usd, "
    "requests = coe_tenant_spend.requests + excluded.requests, "
    "reserved_usd = coe_tenant_spend.reserved_usd - %s"
)
_OPEN_COUNTER = (
    "INSERT INTO coe_tenant_spend (tenant, month, cost_usd, requests, reserved_usd) "
    "VALUES (%s, %s, 0, 0, 0) ON CONFLICT (tenant, month) DO NOTHING"
)
_RESERVE = (
    "UPDATE coe_tenant_spend SET reserved_usd = reserved_usd + %s "
    "WHERE tenant = %s AND month = %s AND cost_usd < %s AND cost_usd + reserved_usd + %s <= %s "
    "RETURNING cost_usd, reserved_usd"
)
_INSERT_RESERVATION = (
    "INSERT INTO coe_reservations (reservation_id, request_id, tenant, month, amount_usd, "
    "created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
# What an unanswered request's row says: its client got 503 (ledger unavailable), its calls were
# made, and they are billed once the spool that held them is written.
UNANSWERED_STATUS = "ledger_unavailable"


class SqlStore(ABC):
    """A ledger database; subclasses open connections and transactions."""

    dialect: Dialect

    @abstractmethod
    def transaction(self, *, write: bool) -> AbstractContextManager[Session]:
        """A transaction that commits on normal exit; read ones see one snapshot."""

    @abstractmethod
    def close(self) -> None: ...

    def apply_migrations(self) -> list[int]:
        with self.transaction(write=True) as session:
            return migrate(session, self.dialect)

    def write(
        self,
        outcomes: Sequence[RequestOutcome],
        *,
        settle: Sequence[Reservation] = (),
        unanswered: bool = False,
        audits: Sequence[AuditRecord] = (),
    ) -> None:
        """Commit the outcomes' rows and spend, and settle their reservations (remove them and
        their amounts from the reserved sums; one released meanwhile is gone already), all in one
        transaction. ``unanswered``: the rows of requests whose client got 503. ``audits``: rows
        of ``coe_audits`` (gateway.audit), committed with the audit's own request."""
        requests: list[Row] = []
        calls: list[Row] = []
        tags: list[Row] = []
        spend: defaultdict[tuple[str, str], float] = defaultdict(float)
        counts: defaultdict[tuple[str, str], int] = defaultdict(int)
        for outcome in outcomes:
            row = self._request_row(outcome)
            # An audit has no client: only a served request's client got the 503.
            answered = not unanswered or outcome.purpose != "serve"
            requests.append(row if answered else (*row[:8], UNANSWERED_STATUS, *row[9:]))
            calls.extend(self._call_rows(outcome))
            created = self.dialect.time(outcome.created_at)
            for tag in dict.fromkeys(outcome.tags):
                tags.append((outcome.request_id, tag, outcome.tenant, created))
            counter = (outcome.tenant, month_key(outcome.created_at))
            spend[counter] += outcome.cost_usd
            counts[counter] += 1
        with self.transaction(write=True) as session:
            if requests:
                session.executemany(_INSERT_REQUEST, requests)
            if audits:
                insert_audits(session, self.dialect, audits)
            if calls:
                session.executemany(_INSERT_CALL, calls)
            if tags:
                session.executemany(_INSERT_TAG, tags)
            released = _delete_reservations(
                session, "reservation_id", sorted(r.reservation_id for r in settle)
            )
            for tenant, month in sorted(spend.keys() | released.keys()):
                session.execute(
                    _ADD_SPEND,
                    (
                        tenant,
                        month,
                        spend.get((tenant, month), 0.0),
                        counts.get((tenant, month), 0),
                        released.get((tenant, month), 0.0),
                    ),
                )

    def reserve(
        self,
        tenant: str,
        amount_usd: float,
        budget_usd: float,
        *,
        request_id: str,
        reservation_id: str,
        now: datetime,
        expires_in_s: float,
    ) -> Hold:
        """One transaction: release the tenant-month's expired reservations, then add this one
        if it fits (the conditional UPDATE), and record its row."""
        month = month_key(now)
        created = self.dialect.time(now)
        with self.transaction(write=True) as session:
            expired = session.execute(
                "DELETE FROM coe_reservations WHERE tenant = %s AND month = %s AND expires_at < %s "
                "RETURNING amount_usd",
                (tenant, month, created),
            )
            session.execute(_OPEN_COUNTER, (tenant, month))
            if expired:
                session.execute(
                    "UPDATE coe_tenant_spend SET reserved_usd = reserved_usd - %s "
                    "WHERE tenant = %s AND month = %s",
                    (sum(_float(r[0]) for r in expired), tenant, month),
                )
            rows = session.execute(
                _RESERVE, (amount_usd, tenant, month, budget_usd, amount_usd, budget_usd)
            )
            if not rows:
                ((spent, reserved),) = session.execute(
                    "SELECT cost_usd, reserved_usd FROM coe_tenant_spend "
                    "WHERE tenant = %s AND month = %s",
                    (tenant, month),
                )
                return Hold(None, _float(spent), _float(reserved))
            reservation = Reservation(reservation_id, request_id, tenant, month, amount_usd)
            session.execute(
                _INSERT_RESERVATION,
                (
                    reservation_id,
                    request_id,
                    tenant,
                    month,
                    amount_usd,
                    created,
                    self.dialect.time(now + timedelta(seconds=expires_in_s)),
                ),
            )
            ((spent, reserved),) = rows
            return Hold(reservation, _float(spent), _float(reserved))

    def release(self, reservation_ids: Sequence[str]) -> None:
        """Give reservations back unsettled (one released already is skipped)."""
        with self.transaction(write=True) as session:
            released = _delete_reservations(session, "reservation_id", sorted(reservation_ids))
            _subtract_reserved(session, released)

    def release_expired(self, now: datetime) -> tuple[int, float]:
        """Release every reservation past its expiry, whichever process made it: how many and
        their sum. Run at start; the reservation path also releases its tenant's own."""
        with self.transaction(write=True) as session:
            rows = session.execute(
                "DELETE FROM coe_reservations WHERE expires_at < %s "
                "RETURNING tenant, month, amount_usd",
                (self.dialect.time(now),),
            )
            released: defaultdict[tuple[str, str], float] = defaultdict(float)
            for tenant, month, amount in rows:
                released[str(tenant), str(month)] += _float(amount)
            _subtract_reserved(session, released)
        return len(rows), sum(released.values())

    def reserved(self, tenant: str, month: str) -> float:
        with self.transaction(write=False) as session:
            rows = session.execute(
                "SELECT reserved_usd FROM coe_tenant_spend WHERE tenant = %s AND month = %s",
                (tenant, month),
            )
        return _float(rows[0][0]) if rows else 0.0

    def ping(self) -> None:
        """A round trip to the database; raises when it cannot be reached."""
        with self.transaction(write=False) as session:
            session.execute("SELECT 1")

    def spent(self, tenant: str, month: str) -> float:
        with self.transaction(write=False) as session:
            rows = session.execute(
                "SELECT cost_usd FROM coe_tenant_spend WHERE tenant = %s AND month = %s",
                (tenant, month),
            )
        return _float(rows[0][0]) if rows else 0.0

    def summarize(self, window: Window, group_by: GroupBy) -> LedgerSummary:
        with self.transaction(write=False) as session:
            return LedgerSummary(
                totals=self._totals(session, window),
                exits=self._exits(session, window),
                groups=self._groups(session, window, group_by),
                gpu_usage=self._gpu_usage(session, window),
                reserved=self._reserved(session, window),
                audit=self._audit_totals(session, window),
            )

    def audit_counts(self, route: str, window: Window) -> AuditCounts:
        with self.transaction(write=False) as session:
            return counts(session, self.dialect, route, window)

    def route_spend(self) -> dict[str, tuple[float, float]]:
        with self.transaction(write=False) as session:
            return route_spend(session)

    def recent_audits(self, route: str, until: datetime, per_stratum: int) -> list[AuditRow]:
        with self.transaction(write=False) as session:
            return recent_rows(session, self.dialect, route, until, per_stratum)

    def _request_row(self, outcome: RequestOutcome) -> Row:
        return (
            outcome.request_id,
            outcome.tenant,
            outcome.route,
            outcome.tier,
            outcome.decision,
            outcome.agreement,
            outcome.threshold,
            outcome.policy,
            outcome.status,
            outcome.answer,
            outcome.cost_usd,
            outcome.counterfactual_usd,
            outcome.tokens_in,
            outcome.tokens_out,
            outcome.gpu_seconds,
            outcome.latency_ms,
            ",".join(dict.fromkeys(outcome.tags)),
            self.dialect.time(outcome.created_at),
            outcome.config_version,
            outcome.purpose,
            outcome.parent_request_id,
            max(outcome.votes.values()) if outcome.votes else None,
            outcome.tier_size(outcome.tier) or None,
        )

    def _call_rows(self, outcome: RequestOutcome) -> Iterator[Row]:
        # A call carries its request's time, so windows and days never split a request.
        created = self.dialect.time(outcome.created_at)
        for index, call in enumerate(outcome.calls):
            yield (
                outcome.request_id,
                index,
                outcome.tenant,
                outcome.route,
                call.tier,
                call.endpoint,
                call.status,
                call.tokens_in,
                call.tokens_out,
                call.latency_ms,
                call.gpu_seconds,
                call.cost_usd,
                call.cost_estimated,
                call.attempts,
                created,
                outcome.purpose,
            )

    def _where(
        self,
        window: Window,
        alias: str = "",
        extra: str | None = None,
        purpose: Purpose | None = "serve",
    ) -> tuple[str, list[object]]:
        """The window's WHERE clause; ``purpose``: only rows of requests served for clients
        (the default: serving reports leave audits out) or of audits; None for tables without
        the column."""
        prefix = f"{alias}." if alias else ""
        clauses: list[str] = []
        params: list[object] = []
        if purpose is not None:
            clauses.append(f"{prefix}purpose = %s")
            params.append(purpose)
        if window.tenant is not None:
            clauses.append(f"{prefix}tenant = %s")
            params.append(window.tenant)
        if window.since is not None:
            clauses.append(f"{prefix}created_at >= %s")
            params.append(self.dialect.time(window.since))
        if window.until is not None:
            clauses.append(f"{prefix}created_at < %s")
            params.append(self.dialect.time(window.until))
        if extra is not None:
            clauses.append(extra)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def _totals(self, session: Session, window: Window) -> Totals:
        where, params = self._where(window)
        (row,) = session.execute(
            "SELECT COUNT(*), COALESCE(SUM(cost_usd), 0), COALESCE(SUM(counterfactual_usd), 0), "
            "COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), 0), "
            f"COALESCE(SUM(gpu_seconds), 0) FROM coe_requests{where}",
            params,
        )
        ((calls,),) = session.execute(f"SELECT COUNT(*) FROM coe_calls{where}", params)
        return Totals(
            requests=_int(row[0]),
            calls=_int(calls),
            cost_usd=_float(row[1]),
            counterfactual_usd=_float(row[2]),
            tokens_in=_int(row[3]),
            tokens_out=_int(row[4]),
            gpu_seconds=_float(row[5]),
        )

    def _audit_totals(self, session: Session, window: Window) -> AuditSpend:
        """The audits' own requests in the window, billed to the window's tenant (or any)."""
        where, params = self._where(window, purpose="audit")
        ((requests, cost),) = session.execute(
            f"SELECT COUNT(*), COALESCE(SUM(cost_usd), 0) FROM coe_requests{where}", params
        )
        ((calls,),) = session.execute(f"SELECT COUNT(*) FROM coe_calls{where}", params)
        return AuditSpend(_int(requests), _int(calls), _float(cost))

    def _reserved(self, session: Session, window: Window) -> Reserved:
        where, params = self._where(window, purpose=None)
        ((count, amount),) = session.execute(
            f"SELECT COUNT(*), COALESCE(SUM(amount_usd), 0) FROM coe_reservations{where}", params
        )
        return Reserved(_int(count), _float(amount))

    def _exits(self, session: Session, window: Window) -> tuple[Exits, ...]:
        where, params = self._where(window)
        rows = session.execute(
            f"SELECT route, tier, COUNT(*) FROM coe_requests{where} GROUP BY route, tier", params
        )
        return tuple(Exits(str(r[0]), _int(r[1]), _int(r[2])) for r in rows)

    def _gpu_usage(self, session: Session, window: Window) -> tuple[GpuUsage, ...]:
        # The engine meters GPU time only on GPU-priced endpoints, so time > 0 marks them.
        where, params = self._where(window, extra="gpu_seconds > 0")
        rows = session.execute(
            "SELECT route, tier, endpoint, SUM(cost_usd), SUM(gpu_seconds) "
            f"FROM coe_calls{where} GROUP BY route, tier, endpoint",
            params,
        )
        return tuple(
            GpuUsage(str(r[0]), _int(r[1]), str(r[2]), _float(r[3]), _float(r[4])) for r in rows
        )

    def _groups(self, session: Session, window: Window, group_by: GroupBy) -> tuple[Group, ...]:
        if group_by in ("tier", "endpoint"):
            # Calls are attributed to the tier or endpoint that made them; a request counts in
            # every tier it reached and with every endpoint it called.
            where, params = self._where(window)
            rows = session.execute(
                f"SELECT {group_by}, COUNT(DISTINCT request_id), COUNT(*), SUM(cost_usd) "
                f"FROM coe_calls{where} GROUP BY {group_by}",
                params,
            )
            return tuple(Group(str(r[0]), _int(r[1]), _int(r[2]), _float(r[3])) for r in rows)
        if group_by == "tag":
            return self._tag_groups(session, window)
        key = "route" if group_by == "route" else self.dialect.day.format(column="created_at")
        where, params = self._where(window)
        requests = session.execute(
            f"SELECT {key}, COUNT(*), SUM(cost_usd) FROM coe_requests{where} GROUP BY {key}",
            params,
        )
        calls = session.execute(
            f"SELECT {key}, COUNT(*) FROM coe_calls{where} GROUP BY {key}", params
        )
        return _merge(requests, calls)

    def _tag_groups(self, session: Session, window: Window) -> tuple[Group, ...]:
        """One group per tag (a request in each of its tags); untagged requests under ""."""
        # Audit requests have no tags, so joins through the tags table hold served requests only.
        where, params = self._where(window, alias="t", purpose=None)
        requests = session.execute(
            "SELECT t.tag, COUNT(*), SUM(r.cost_usd) FROM coe_request_tags t "
            f"JOIN coe_requests r ON r.request_id = t.request_id{where} GROUP BY t.tag",
            params,
        )
        calls = session.execute(
            "SELECT t.tag, COUNT(*) FROM coe_request_tags t "
            f"JOIN coe_calls c ON c.request_id = t.request_id{where} GROUP BY t.tag",
            params,
        )
        where, params = self._where(window, alias="r", extra="r.tags = ''")
        untagged = session.execute(
            f"SELECT r.tags, COUNT(*), SUM(r.cost_usd) FROM coe_requests r{where} GROUP BY r.tags",
            params,
        )
        untagged_calls = session.execute(
            "SELECT r.tags, COUNT(*) FROM coe_requests r "
            f"JOIN coe_calls c ON c.request_id = r.request_id{where} GROUP BY r.tags",
            params,
        )
        return _merge([*requests, *untagged], [*calls, *untagged_calls])


def _delete_reservations(
    session: Session, column: str, values: Sequence[str]
) -> dict[tuple[str, str], float]:
    """Delete the reservations whose ``column`` is one of ``values``; their sums per counter."""
    released: defaultdict[tuple[str, str], float] = defaultdict(float)
    for start in range(0, len(values), 500):
        chunk = values[start : start + 500]
        rows = session.execute(
            f"DELETE FROM coe_reservations WHERE {column} IN ({', '.join(['%s'] * len(chunk))}) "
            "RETURNING tenant, month, amount_usd",
            chunk,
        )
        for tenant, month, amount in rows:
            released[str(tenant), str(month)] += _float(amount)
    return dict(released)


def _subtract_reserved(session: Session, released: dict[tuple[str, str], float]) -> None:
    for tenant, month in sorted(released):
        session.execute(
            "UPDATE coe_tenant_spend SET reserved_usd = reserved_usd - %s "
            "WHERE tenant = %s AND month = %s",
            (released[tenant, month], tenant, month),
        )


def _merge(requests: Sequence[Row], calls: Sequence[Row]) -> tuple[Group, ...]:
    call_counts = {str(r[0]): _int(r[1]) for r in calls}
    return tuple(
        Group(str(r[0]), _int(r[1]), call_counts.get(str(r[0]), 0), _float(r[2])) for r in requests
    )
