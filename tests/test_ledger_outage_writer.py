"""The writer through a database outage, on a real SQLite file whose writes are made to fail:
503s, the spool, recovery without a restart, settlement of spooled requests' reservations."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from gateway.budgets import BudgetGuard
from gateway.config import parse_settings
from gateway.errors import LedgerUnavailable
from gateway.ledger import AuditRecord, BatchingLedger
from gateway.ledger._sqlite import SqliteStore
from gateway.outcome import RequestOutcome
from tests.ledger_fixtures import MOMENT, call, fresh_query, outcome

pytestmark = pytest.mark.anyio


class FlakyStore(SqliteStore):
    """A SQLite store whose writes fail like a full disk while ``broken``."""

    broken = False

    def write(self, outcomes: Sequence[RequestOutcome], **kwargs: Any) -> None:
        if self.broken:
            raise sqlite3.OperationalError("database or disk is full")
        super().write(outcomes, **kwargs)

    def reserve(self, *args: Any, **kwargs: Any) -> Any:
        if self.broken:
            raise sqlite3.OperationalError("database or disk is full")
        return super().reserve(*args, **kwargs)

    def ping(self) -> None:
        if self.broken:
            raise sqlite3.OperationalError("database or disk is full")
        super().ping()


async def _wait_available(ledger: BatchingLedger, within_s: float) -> None:
    # The writer retries on its own clock; poll its state, bounded.
    for _ in range(int(within_s / 0.02)):
        if ledger.available:
            return
        await anyio.sleep(0.02)
    raise AssertionError(f"the ledger did not recover within {within_s} s")


async def test_an_outage_answers_503_spools_and_recovers_by_itself(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store = FlakyStore(tmp_path / "ledger.db")
    store.apply_migrations()
    ledger = BatchingLedger(store, batch_max_rows=500, retry_interval_s=0.05)
    guard = BudgetGuard(parse_settings({"tenants": [{"name": "acme", "budget_usd": 1.0}]}), ledger)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(ledger.run)
        await ledger.record(outcome(calls=[call("small-a", cost_usd=0.01)]))
        held = await guard.reserve("acme", 0.5, request_id="spooled", deadline_s=60, now=MOMENT)
        assert (await ledger.readiness())[0]

        store.broken = True
        lost = outcome(request_id="spooled", calls=[call("small-a", cost_usd=0.02)])
        with pytest.raises(LedgerUnavailable):
            await ledger.record(lost, reservation=held)
        assert not ledger.available
        with pytest.raises(LedgerUnavailable) as refused:
            ledger.ensure_available()
        assert refused.value.status_code == 503
        assert refused.value.code == "ledger_unavailable"
        assert (await ledger.readiness())[0] is False
        # Recorded while known out: spooled at once, not queued behind the database.
        with pytest.raises(LedgerUnavailable):
            await ledger.record(outcome(request_id="second", calls=[call("small-b")]))
        assert ledger.stats.spooled == 2

        store.broken = False
        await _wait_available(ledger, within_s=2)
        assert (await ledger.readiness())[0]
        assert ledger.stats.spooled == 0
        assert ledger.stats.spool_written == 2
        await ledger.record(outcome(request_id="after"))
        await ledger.aclose()
    rows = dict(fresh_query(url, "SELECT request_id, status FROM coe_requests"))
    assert rows["spooled"] == "ledger_unavailable"
    assert rows["second"] == "ledger_unavailable"
    assert rows["after"] == "ok"
    # The spooled request's reservation was settled with its rows: cost counted, nothing held.
    assert fresh_query(url, "SELECT cost_usd, requests, reserved_usd FROM coe_tenant_spend") == [
        (pytest.approx(0.03), 4, pytest.approx(0.0))
    ]
    assert fresh_query(url, "SELECT COUNT(*) FROM coe_reservations") == [(0,)]
    store.close()


async def test_what_cannot_be_written_is_counted_with_its_cost(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "ledger.db")
    store.apply_migrations()
    ledger = BatchingLedger(store, batch_max_rows=500, spool_max_requests=1)
    store.broken = True
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(ledger.run)
        for cost in (0.25, 0.5):
            with pytest.raises(LedgerUnavailable):
                await ledger.record(outcome(calls=[call("small-a", cost_usd=cost)]))
        # The spool holds one: the second is unrecorded at once, the first at shutdown.
        assert ledger.stats.unrecorded_requests == 1
        await ledger.aclose()
    assert ledger.stats.unrecorded_requests == 2
    assert ledger.stats.unrecorded_cost_usd == pytest.approx(0.75)
    store.close()


async def test_an_audit_recorded_during_an_outage_is_written_with_its_calls_once_back(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store = FlakyStore(tmp_path / "ledger.db")
    store.apply_migrations()
    ledger = BatchingLedger(store, batch_max_rows=500, retry_interval_s=0.05)
    served = outcome(request_id="served")
    audit = outcome(request_id="served.audit", calls=[call("large", cost_usd=0.04)])
    audit.purpose, audit.parent_request_id = "audit", "served"
    row = AuditRecord(
        request_id="served", kind="sample", tier=0, route=served.route, tenant=served.tenant,
        created_at=served.created_at, votes=3, size=3, threshold=1.0, served_answer="positive",
        top_answer="positive", outcome="agree", cost_usd=0.04, billed_to="admin",
        audit_request_id="served.audit",
    )
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(ledger.run)
        await ledger.record(served)
        store.broken = True
        with pytest.raises(LedgerUnavailable):
            await ledger.record_audit([row], outcome=audit)
        assert ledger.stats.spooled == 1

        store.broken = False
        await _wait_available(ledger, within_s=2)
        await ledger.aclose()
    # The audit has no client: its row keeps its own status, not the 503's.
    assert fresh_query(url, "SELECT status, purpose FROM coe_requests WHERE request_id = "
                       "'served.audit'") == [("ok", "audit")]
    assert fresh_query(url, "SELECT cost_usd FROM coe_calls WHERE request_id = 'served.audit'") == [
        (pytest.approx(0.04),)
    ]
    assert fresh_query(url, "SELECT outcome FROM coe_audits") == [("agree",)]
    store.close()


async def test_an_outage_found_by_a_reservation_recovers_without_a_request_to_write(
    tmp_path: Path,
) -> None:
    store = FlakyStore(tmp_path / "ledger.db")
    store.apply_migrations()
    ledger = BatchingLedger(store, batch_max_rows=500, retry_interval_s=0.05)
    guard = BudgetGuard(parse_settings({"tenants": [{"name": "acme", "budget_usd": 1.0}]}), ledger)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(ledger.run)
        await anyio.lowlevel.checkpoint()  # the writer is waiting for its first request
        store.broken = True
        with pytest.raises(LedgerUnavailable):
            await guard.reserve("acme", 0.5, request_id="r", deadline_s=60, now=MOMENT)
        assert not ledger.available

        store.broken = False
        # Every request is refused meanwhile, so only the writer's own retry can bring it back.
        await _wait_available(ledger, within_s=2)
        await ledger.aclose()
    store.close()
