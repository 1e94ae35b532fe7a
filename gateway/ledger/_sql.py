"""The ledger's SQL, shared by SQLite and PostgreSQL: writing batches, budgets and report sums.

Everything here is synchronous and runs in a worker thread; the writer task in ``_writer`` is the
only caller of ``write``, so batches never race each other within one process. Across processes
the spend counter is an upsert inside the batch's transaction, so it always equals the sum of the
committed requests, and counters are locked in (tenant, month) order to avoid deadlocks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from decimal import Decimal
from typing import TYPE_CHECKING

from gateway.ledger._base import (
    Exits,
    GpuUsage,
    Group,
    LedgerSummary,
    Totals,
    month_key,
)
from gateway.ledger._schema import migrate

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from contextlib import AbstractContextManager

    from gateway.ledger._base import GroupBy, Window
    from gateway.ledger._schema import Dialect, Session
    from gateway.outcome import RequestOutcome

Row = tuple[object, ...]

_INSERT_REQUEST = (
    "INSERT INTO coe_requests (request_id, tenant, route, tier, decision, agreement, threshold, "
    "policy, status, answer, cost_usd, counterfactual_usd, tokens_in, tokens_out, gpu_seconds, "
    "latency_ms, tags, created_at) VALUES (" + ", ".join(["%s"] * 18) + ")"
)
_INSERT_CALL = (
    "INSERT INTO coe_calls (request_id, call_index, tenant, route, tier, endpoint, status, "
    "tokens_in, tokens_out, latency_ms, gpu_seconds, cost_usd, estimated, attempts, created_at) "
    "VALUES (" + ", ".join(["%s"] * 15) + ")"
)
_INSERT_TAG = (
    "INSERT INTO coe_request_tags (request_id, tag, tenant, created_at) VALUES (%s, %s, %s, %s)"
)
_ADD_SPEND = (
    "INSERT INTO coe_tenant_spend (tenant, month, cost_usd, requests) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (tenant, month) DO UPDATE SET "
    "cost_usd = coe_tenant_spend.cost_usd + excluded.cost_usd, "
    "requests = coe_tenant_spend.requests + excluded.requests"
)


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

    def write(self, outcomes: Sequence[RequestOutcome]) -> None:
        """Commit the outcomes' rows and spend, all in one transaction."""
        requests: list[Row] = []
        calls: list[Row] = []
        tags: list[Row] = []
        spend: defaultdict[tuple[str, str], float] = defaultdict(float)
        counts: defaultdict[tuple[str, str], int] = defaultdict(int)
        for outcome in outcomes:
            requests.append(self._request_row(outcome))
            calls.extend(self._call_rows(outcome))
            created = self.dialect.time(outcome.created_at)
            for tag in dict.fromkeys(outcome.tags):
                tags.append((outcome.request_id, tag, outcome.tenant, created))
            counter = (outcome.tenant, month_key(outcome.created_at))
            spend[counter] += outcome.cost_usd
            counts[counter] += 1
        with self.transaction(write=True) as session:
            session.executemany(_INSERT_REQUEST, requests)
            if calls:
                session.executemany(_INSERT_CALL, calls)
            if tags:
                session.executemany(_INSERT_TAG, tags)
            for tenant, month in sorted(spend):
                session.execute(
                    _ADD_SPEND, (tenant, month, spend[tenant, month], counts[tenant, month])
                )

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
            )

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
            )

    def _where(
        self, window: Window, alias: str = "", extra: str | None = None
    ) -> tuple[str, list[object]]:
        prefix = f"{alias}." if alias else ""
        clauses: list[str] = []
        params: list[object] = []
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
        where, params = self._where(window, alias="t")
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


def _merge(requests: Sequence[Row], calls: Sequence[Row]) -> tuple[Group, ...]:
    call_counts = {str(r[0]): _int(r[1]) for r in calls}
    return tuple(
        Group(str(r[0]), _int(r[1]), call_counts.get(str(r[0]), 0), _float(r[2])) for r in requests
    )


def _int(value: object) -> int:
    # PostgreSQL sums BIGINT columns into NUMERIC, which psycopg returns as Decimal.
    if isinstance(value, int | float | Decimal):
        return int(value)
    raise TypeError(f"expected a number from the ledger, got {value!r}")


def _float(value: object) -> float:
    if value is None:
        return 0.0
    if isinstance(value, int | float | Decimal):
        return float(value)
    raise TypeError(f"expected a number from the ledger, got {value!r}")
