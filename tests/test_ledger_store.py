"""The ledger on real SQLite files and the real PostgreSQL: schema, durability, batching."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import anyio
import pytest

from gateway.config import LedgerConfig
from gateway.ledger import BatchingLedger, LedgerUnavailable, open_ledger
from gateway.ledger._schema import MIGRATIONS
from gateway.outcome import RequestOutcome
from tests.ledger_fixtures import BACKENDS, call, fresh_query, ledger_url_for, outcome


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from ledger_url_for(request.param, tmp_path)


def _columns(url: str, table: str) -> set[str]:
    if url.startswith("sqlite:///"):
        return {str(r[1]) for r in fresh_query(url, f"PRAGMA table_info({table})")}
    rows = fresh_query(
        url,
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = %s AND table_schema = current_schema()",
        (table,),
    )
    return {str(r[0]) for r in rows}


@pytest.mark.anyio
async def test_migrations_are_applied_once(ledger_url: str) -> None:
    config = LedgerConfig(url=ledger_url)
    async with open_ledger(config):
        pass
    async with open_ledger(config):
        pass
    versions = fresh_query(ledger_url, "SELECT version FROM coe_schema_migrations")
    assert sorted(int(v) for (v,) in versions) == [m.version for m in MIGRATIONS]


@pytest.mark.anyio
async def test_a_newer_schema_is_refused(ledger_url: str) -> None:
    config = LedgerConfig(url=ledger_url)
    async with open_ledger(config):
        pass
    if ledger_url.startswith("sqlite:///"):
        import sqlite3

        connection = sqlite3.connect(ledger_url.removeprefix("sqlite:///"))
        with connection:
            connection.execute(
                "INSERT INTO coe_schema_migrations VALUES (99, 'future', '2099-01-01')"
            )
        connection.close()
    else:
        import psycopg

        with psycopg.connect(ledger_url) as pg:
            pg.execute("INSERT INTO coe_schema_migrations VALUES (99, 'future', now())")
    with pytest.raises(LedgerUnavailable, match="version 99"):
        async with open_ledger(config):
            pass


@pytest.mark.anyio
async def test_rows_are_visible_to_a_fresh_connection_once_record_returns(
    ledger_url: str,
) -> None:
    request = outcome(
        calls=[call("small-a", cost_usd=0.001), call("small-b", status="cancelled", cost_usd=2e-6)],
        tags=("team-a", "batch"),
    )
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        await ledger.record(request)
        requests = fresh_query(
            ledger_url,
            "SELECT tenant, route, tier, status, cost_usd, tags FROM coe_requests "
            "WHERE request_id = %s",
            (request.request_id,),
        )
        calls = fresh_query(
            ledger_url,
            "SELECT endpoint, status, cost_usd FROM coe_calls WHERE request_id = %s "
            "ORDER BY call_index",
            (request.request_id,),
        )
    assert requests == [("acme", "sentiment", 0, "ok", pytest.approx(0.001002), "team-a,batch")]
    assert calls == [
        ("small-a", "ok", pytest.approx(0.001)),
        ("small-b", "cancelled", pytest.approx(2e-6)),
    ]


@pytest.mark.anyio
async def test_missing_usage_is_stored_as_null(ledger_url: str) -> None:
    request = outcome(calls=[call("small-a", tokens_in=None, tokens_out=None)])
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        await ledger.record(request)
    rows = fresh_query(ledger_url, "SELECT tokens_in, tokens_out FROM coe_calls")
    assert rows == [(None, None)]


@pytest.mark.anyio
async def test_no_column_could_hold_a_prompt_or_a_key(ledger_url: str) -> None:
    async with open_ledger(LedgerConfig(url=ledger_url)):
        pass
    columns = set().union(
        *(_columns(ledger_url, t) for t in ("coe_requests", "coe_calls", "coe_request_tags"))
    )
    assert columns
    assert not {c for c in columns if any(w in c for w in ("prompt", "key", "message", "text"))}


@pytest.mark.anyio
async def test_concurrent_records_share_commits(ledger_url: str) -> None:
    requests = [outcome(calls=[call("small-a"), call("small-b")]) for _ in range(40)]
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        async with anyio.create_task_group() as tasks:
            for request in requests:
                tasks.start_soon(ledger.record, request)
        stats = ledger.stats
    assert stats.requests == 40
    assert stats.calls == 80
    assert stats.commits < 40
    assert fresh_query(ledger_url, "SELECT COUNT(*) FROM coe_requests") == [(40,)]
    assert fresh_query(ledger_url, "SELECT COUNT(*) FROM coe_calls") == [(80,)]


@pytest.mark.anyio
async def test_batches_respect_the_row_limit(ledger_url: str) -> None:
    # Each request is 1 request row + 2 call rows; a limit of 3 rows puts each in its own batch.
    requests = [outcome(calls=[call("small-a"), call("small-b")]) for _ in range(5)]
    async with open_ledger(LedgerConfig(url=ledger_url, batch_max_rows=3)) as ledger:
        async with anyio.create_task_group() as tasks:
            for request in requests:
                tasks.start_soon(ledger.record, request)
        assert ledger.stats.commits == 5


@pytest.mark.anyio
async def test_a_bad_row_fails_only_its_own_request(ledger_url: str) -> None:
    first = outcome()
    bad = outcome(request_id="req-bad")
    bad.route = None  # type: ignore[assignment]  # violates NOT NULL
    others = [outcome() for _ in range(5)]
    failures: list[str] = []

    async def record(ledger: BatchingLedger, request: RequestOutcome) -> None:
        try:
            await ledger.record(request)
        except LedgerUnavailable:
            failures.append(request.request_id)

    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        await ledger.record(first)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(record, ledger, bad)
            for request in others:
                tasks.start_soon(record, ledger, request)
        assert ledger.stats.failed_requests == 1
    assert failures == ["req-bad"]
    assert fresh_query(ledger_url, "SELECT COUNT(*) FROM coe_requests") == [(6,)]
    # The spend counter counts each committed request once, the rejected one not at all.
    assert fresh_query(ledger_url, "SELECT requests FROM coe_tenant_spend") == [(6,)]


@pytest.mark.anyio
async def test_a_reused_request_id_is_recorded_under_a_suffixed_id(ledger_url: str) -> None:
    # Clients choose x-request-id; a second request with the same one was still made and billed.
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        await ledger.record(outcome(request_id="req-twice"))
        again = outcome(request_id="req-twice")
        await ledger.record(again)
        assert ledger.stats.failed_requests == 0
    assert again.request_id.startswith("req-twice.")
    ids = fresh_query(ledger_url, "SELECT request_id FROM coe_requests ORDER BY request_id")
    assert ids == [("req-twice",), (again.request_id,)]
    assert fresh_query(ledger_url, "SELECT requests FROM coe_tenant_spend") == [(2,)]


@pytest.mark.anyio
async def test_closing_commits_what_is_queued(ledger_url: str) -> None:
    requests = [outcome() for _ in range(10)]
    async with (
        open_ledger(LedgerConfig(url=ledger_url)) as ledger,
        anyio.create_task_group() as tasks,
    ):
        for request in requests:
            tasks.start_soon(ledger.record, request)
        # Let every record enqueue, then close while they wait for their commit.
        await anyio.lowlevel.checkpoint()
        await ledger.aclose()
    assert fresh_query(ledger_url, "SELECT COUNT(*) FROM coe_requests") == [(10,)]


@pytest.mark.anyio
async def test_recording_after_close_is_refused(ledger_url: str) -> None:
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        pass
    with pytest.raises(LedgerUnavailable, match="closed"):
        await ledger.record(outcome())


@pytest.mark.anyio
async def test_spend_is_counted_per_tenant_and_month(ledger_url: str) -> None:
    march = datetime.fromisoformat("2025-03-31T23:59:59+00:00")
    april = datetime.fromisoformat("2025-04-01T00:00:00+00:00")
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        await ledger.record(outcome(tenant="acme", cost_usd=1.25, created_at=march))
        await ledger.record(outcome(tenant="acme", cost_usd=0.5, created_at=march))
        await ledger.record(outcome(tenant="acme", cost_usd=4.0, created_at=april))
        await ledger.record(outcome(tenant="other", cost_usd=9.0, created_at=march))
        assert await ledger.spent_this_month("acme", now=march) == pytest.approx(1.75)
        assert await ledger.spent_this_month("acme", now=april) == pytest.approx(4.0)
        assert await ledger.spent_this_month("nobody", now=march) == 0.0


@pytest.mark.anyio
async def test_an_error_in_the_body_comes_out_unwrapped(ledger_url: str) -> None:
    with pytest.raises(KeyError):
        async with open_ledger(LedgerConfig(url=ledger_url)):
            raise KeyError("body")


def test_sqlite_ledger_is_in_wal_mode(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wal.db'}"

    async def open_and_close() -> None:
        async with open_ledger(LedgerConfig(url=url)):
            pass

    anyio.run(open_and_close)
    assert fresh_query(url, "PRAGMA journal_mode") == [("wal",)]


@pytest.mark.anyio
async def test_sqlite_ledger_in_a_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        async with open_ledger(LedgerConfig(url=f"sqlite:///{tmp_path / 'no' / 'coe.db'}")):
            pass


def test_the_package_exports_a_sorted_all() -> None:
    import gateway.ledger

    assert gateway.ledger.__all__ == sorted(gateway.ledger.__all__)
    assert all(hasattr(gateway.ledger, name) for name in gateway.ledger.__all__)
