"""The ledger's tables, one schema for SQLite and PostgreSQL, and its versioned migrations.

Each migration is applied once, in order, inside one transaction, and recorded in
``coe_schema_migrations``; a ledger written by a newer gateway is refused rather than guessed at.
Tables hold no API keys and no prompt text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from gateway.errors import LedgerUnavailable
from gateway.ledger._base import as_utc

if TYPE_CHECKING:
    from collections.abc import Sequence


class Session(Protocol):
    """One open transaction; SQL uses ``%s`` placeholders on every backend."""

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    real: str
    timestamp: str
    boolean: str
    # SQL taking the UTC calendar day (YYYY-MM-DD) of the column named {column}.
    day: str
    # Serialises concurrent migrations from several processes; None where BEGIN already does.
    migration_lock: str | None

    def time(self, moment: datetime) -> object:
        """A timestamp as this backend stores it."""
        utc = as_utc(moment)
        if self.timestamp == "TEXT":
            # Fixed width, so text order is time order and the day is the first ten characters.
            return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return utc


SQLITE = Dialect(
    name="sqlite",
    real="REAL",
    timestamp="TEXT",
    boolean="INTEGER",
    day="substr({column}, 1, 10)",
    migration_lock=None,
)
POSTGRES = Dialect(
    name="postgresql",
    real="DOUBLE PRECISION",
    timestamp="TIMESTAMPTZ",
    boolean="BOOLEAN",
    day="to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    migration_lock="SELECT pg_advisory_xact_lock(4242700301)",
)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]

    def sql(self, dialect: Dialect) -> list[str]:
        return [
            s.format(real=dialect.real, ts=dialect.timestamp, bool=dialect.boolean)
            for s in self.statements
        ]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "requests, calls, request tags and the per-tenant monthly spend counter",
        (
            """CREATE TABLE coe_requests (
                request_id TEXT PRIMARY KEY,
                tenant TEXT NOT NULL,
                route TEXT NOT NULL,
                tier INTEGER NOT NULL,
                decision TEXT NOT NULL,
                agreement {real} NOT NULL,
                threshold {real} NOT NULL,
                policy TEXT NOT NULL,
                status TEXT NOT NULL,
                answer TEXT,
                cost_usd {real} NOT NULL,
                counterfactual_usd {real} NOT NULL,
                tokens_in BIGINT NOT NULL,
                tokens_out BIGINT NOT NULL,
                gpu_seconds {real} NOT NULL,
                latency_ms {real} NOT NULL,
                tags TEXT NOT NULL,
                created_at {ts} NOT NULL
            )""",
            "CREATE INDEX coe_requests_tenant_time ON coe_requests (tenant, created_at)",
            "CREATE INDEX coe_requests_time ON coe_requests (created_at)",
            """CREATE TABLE coe_calls (
                request_id TEXT NOT NULL,
                call_index INTEGER NOT NULL,
                tenant TEXT NOT NULL,
                route TEXT NOT NULL,
                tier INTEGER NOT NULL,
                endpoint TEXT NOT NULL,
                status TEXT NOT NULL,
                tokens_in BIGINT,
                tokens_out BIGINT,
                latency_ms {real} NOT NULL,
                gpu_seconds {real} NOT NULL,
                cost_usd {real} NOT NULL,
                estimated {bool} NOT NULL,
                attempts INTEGER NOT NULL,
                created_at {ts} NOT NULL,
                PRIMARY KEY (request_id, call_index)
            )""",
            "CREATE INDEX coe_calls_tenant_time ON coe_calls (tenant, created_at)",
            "CREATE INDEX coe_calls_time ON coe_calls (created_at)",
            """CREATE TABLE coe_request_tags (
                request_id TEXT NOT NULL,
                tag TEXT NOT NULL,
                tenant TEXT NOT NULL,
                created_at {ts} NOT NULL,
                PRIMARY KEY (request_id, tag)
            )""",
            "CREATE INDEX coe_request_tags_tenant_time ON coe_request_tags (tenant, created_at)",
            """CREATE TABLE coe_tenant_spend (
                tenant TEXT NOT NULL,
                month TEXT NOT NULL,
                cost_usd {real} NOT NULL,
                requests BIGINT NOT NULL,
                PRIMARY KEY (tenant, month)
            )""",
        ),
    ),
    Migration(
        2,
        "the config version (gateway.reload) that served each request",
        ("ALTER TABLE coe_requests ADD COLUMN config_version TEXT",),
    ),
    Migration(
        3,
        "budget reservations: a row per request in flight and the counter's reserved sum",
        (
            "ALTER TABLE coe_tenant_spend ADD COLUMN reserved_usd {real} NOT NULL DEFAULT 0",
            # reservation_id is the gateway's own (clients choose request ids, and may reuse one);
            # month is the counter the amount was added to; expires_at = created_at + the route's
            # deadline + a margin, after which any process may release it.
            """CREATE TABLE coe_reservations (
                reservation_id TEXT PRIMARY KEY,
                request_id TEXT NOT NULL,
                tenant TEXT NOT NULL,
                month TEXT NOT NULL,
                amount_usd {real} NOT NULL,
                created_at {ts} NOT NULL,
                expires_at {ts} NOT NULL
            )""",
            "CREATE INDEX coe_reservations_tenant ON coe_reservations (tenant, month, expires_at)",
            "CREATE INDEX coe_reservations_expiry ON coe_reservations (expires_at)",
        ),
    ),
    Migration(
        4,
        "the live audit (gateway.audit): audit requests apart from serving, vote patterns, audits",
        (
            # purpose 'audit': a top-tier call the audit made, on a request row of its own whose
            # parent_request_id is the served request; serving reports leave these rows out.
            "ALTER TABLE coe_requests ADD COLUMN purpose TEXT NOT NULL DEFAULT 'serve'",
            "ALTER TABLE coe_requests ADD COLUMN parent_request_id TEXT",
            # The exit tier's vote pattern: its winning label's votes and the tier's size.
            "ALTER TABLE coe_requests ADD COLUMN votes INTEGER",
            "ALTER TABLE coe_requests ADD COLUMN tier_size INTEGER",
            "ALTER TABLE coe_calls ADD COLUMN purpose TEXT NOT NULL DEFAULT 'serve'",
            "CREATE INDEX coe_requests_route_time ON coe_requests (route, created_at)",
            # One row per audited vote pattern: kind 'sample' (the exit tier, re-asked of the top
            # tier) or 'census' (a lower tier of a request that escalated); request_id is the
            # served request's, audit_request_id the audit's own request row (samples only).
            """CREATE TABLE coe_audits (
                request_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                tier INTEGER NOT NULL,
                route TEXT NOT NULL,
                tenant TEXT NOT NULL,
                created_at {ts} NOT NULL,
                config_version TEXT,
                votes INTEGER NOT NULL,
                size INTEGER NOT NULL,
                threshold {real} NOT NULL,
                served_answer TEXT,
                top_answer TEXT,
                outcome TEXT NOT NULL,
                cost_usd {real} NOT NULL,
                billed_to TEXT,
                audit_request_id TEXT,
                PRIMARY KEY (request_id, kind, tier)
            )""",
            "CREATE INDEX coe_audits_route_time ON coe_audits (route, created_at)",
            # The θ controller reads each stratum's latest rows along this (gateway.ledger._audits
            # recent_rows), not the route's whole history.
            "CREATE INDEX coe_audits_stratum ON coe_audits "
            "(route, tier, size, kind, votes, threshold, created_at, request_id)",
        ),
    ),
)


def migrate(session: Session, dialect: Dialect) -> list[int]:
    """Apply the migrations this ledger lacks; returns the versions applied."""
    if dialect.migration_lock is not None:
        session.execute(dialect.migration_lock)
    session.execute(
        "CREATE TABLE IF NOT EXISTS coe_schema_migrations ("
        "version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
        f"applied_at {dialect.timestamp} NOT NULL)"
    )
    applied = {
        int(str(row[0])) for row in session.execute("SELECT version FROM coe_schema_migrations")
    }
    known = MIGRATIONS[-1].version
    if applied and max(applied) > known:
        raise LedgerUnavailable(
            f"the ledger's schema is at version {max(applied)}, newer than this gateway's "
            f"({known}); upgrade the gateway"
        )
    done: list[int] = []
    for migration in MIGRATIONS:
        if migration.version in applied:
            continue
        for statement in migration.sql(dialect):
            session.execute(statement)
        session.execute(
            "INSERT INTO coe_schema_migrations (version, description, applied_at) "
            "VALUES (%s, %s, %s)",
            (migration.version, migration.description, dialect.time(datetime.now(UTC))),
        )
        done.append(migration.version)
    return done
