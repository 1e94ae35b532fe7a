"""Helpers for the ledger, billing and report tests: real SQLite files and the real PostgreSQL.

PostgreSQL tests read ``COE_TEST_POSTGRES_DSN`` and skip only when it is unset; each test gets a
schema of its own (dropped afterwards), so parallel runs and reruns never share rows.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.outcome import RequestOutcome
from providers.base import CallRecord, CallStatus

POSTGRES_ENV = "COE_TEST_POSTGRES_DSN"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
MOMENT = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)


def postgres_dsn() -> str:
    dsn = os.environ.get(POSTGRES_ENV)
    if not dsn:
        pytest.skip(f"{POSTGRES_ENV} is not set")
    return dsn


def ledger_url_for(backend: str, tmp_path: Path) -> Iterator[str]:
    """A ledger URL of a fresh, empty database of the given backend."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    dsn = postgres_dsn()
    schema = f"coe_test_{uuid.uuid4().hex}"
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    try:
        separator = "&" if "?" in dsn else "?"
        yield f"{dsn}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


def fresh_query(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run a query on a new connection of its own: what another process would see."""
    if url.startswith("sqlite:///"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return connection.execute(sql.replace("%s", "?"), params).fetchall()
        finally:
            connection.close()
    with psycopg.connect(url) as pg:
        return pg.execute(sql, params).fetchall()


def call(
    endpoint: str,
    *,
    tier: int = 0,
    status: CallStatus = "ok",
    text: str | None = "positive",
    tokens_in: int | None = 100,
    tokens_out: int | None = 2,
    gpu_seconds: float = 0.0,
    cost_usd: float = 0.0,
    prompt_chars: int = 400,
) -> CallRecord:
    record = CallRecord(
        endpoint=endpoint,
        status=status,
        text=text,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        latency_ms=40.0,
        tier=tier,
        answer=text if status == "ok" else None,
        gpu_seconds=gpu_seconds,
        cost_usd=cost_usd,
    )
    record.prompt_chars = prompt_chars
    return record


def outcome(
    *,
    tenant: str = "acme",
    route: str = "sentiment",
    tier: int = 0,
    calls: Sequence[CallRecord] = (),
    cost_usd: float | None = None,
    counterfactual_usd: float = 0.0,
    tags: tuple[str, ...] = (),
    created_at: datetime = MOMENT,
    request_id: str | None = None,
) -> RequestOutcome:
    """A finished request; its cost is the sum of its calls' unless given."""
    records = list(calls)
    return RequestOutcome(
        request_id=request_id or f"req-{uuid.uuid4().hex}",
        route=route,
        tenant=tenant,
        created_at=created_at,
        threshold=0.66,
        policy="vote",
        tags=tags,
        answer="positive",
        tier=tier,
        decision="agreed" if tier == 0 else "last_tier",
        agreement=1.0,
        votes={"positive": len(records)},
        calls=records,
        latency_ms=55.0,
        cost_usd=sum(c.cost_usd for c in records) if cost_usd is None else cost_usd,
        counterfactual_usd=counterfactual_usd,
    )
