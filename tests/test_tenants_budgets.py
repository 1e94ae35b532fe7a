"""Monthly budgets, read from the ledger's committed spend, also across gateway processes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from gateway.budgets import BudgetGuard
from gateway.config import LedgerConfig, parse_settings
from gateway.errors import QuotaExceeded
from gateway.ledger import open_ledger
from tests.ledger_fixtures import BACKENDS, MOMENT, ledger_url_for, outcome

SETTINGS = parse_settings(
    {
        "tenants": [
            {"name": "acme", "budget_usd": 1.0},
            {"name": "free", "budget_usd": 0.0},
            {"name": "unlimited"},
        ]
    }
)


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from ledger_url_for(request.param, tmp_path)


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    yield from ledger_url_for("postgresql", tmp_path)


@pytest.mark.anyio
async def test_a_tenant_under_budget_may_start_requests(ledger_url: str) -> None:
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        await ledger.record(outcome(tenant="acme", cost_usd=0.99))
        await BudgetGuard(SETTINGS, ledger).check("acme", now=MOMENT)


@pytest.mark.anyio
async def test_a_spent_budget_refuses_with_insufficient_quota(ledger_url: str) -> None:
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        await ledger.record(outcome(tenant="acme", cost_usd=0.6))
        await ledger.record(outcome(tenant="acme", cost_usd=0.4))
        with pytest.raises(QuotaExceeded) as caught:
            await BudgetGuard(SETTINGS, ledger).check("acme", now=MOMENT)
    assert caught.value.status_code == 429
    assert caught.value.code == "insufficient_quota"
    assert "2025-03" in caught.value.message


@pytest.mark.anyio
async def test_last_months_spend_does_not_count(ledger_url: str) -> None:
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        await ledger.record(outcome(tenant="acme", cost_usd=5.0))
        await BudgetGuard(SETTINGS, ledger).check(
            "acme", now=datetime.fromisoformat("2025-04-01T00:00:00+00:00")
        )


@pytest.mark.anyio
async def test_a_zero_budget_refuses_at_once(ledger_url: str) -> None:
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        with pytest.raises(QuotaExceeded):
            await BudgetGuard(SETTINGS, ledger).check("free", now=MOMENT)


@pytest.mark.anyio
async def test_tenants_without_budget_are_never_refused(ledger_url: str) -> None:
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        await ledger.record(outcome(tenant="unlimited", cost_usd=1e6))
        await BudgetGuard(SETTINGS, ledger).check("unlimited", now=MOMENT)
        await BudgetGuard(SETTINGS, ledger).check("default", now=MOMENT)


@pytest.mark.anyio
@pytest.mark.postgres
async def test_budget_holds_across_two_processes_on_one_postgresql(postgres_url: str) -> None:
    config = LedgerConfig(url=postgres_url)
    # Two ledgers on one database are what two gateway processes see.
    async with open_ledger(config) as first, open_ledger(config) as second:
        guard_one, guard_two = BudgetGuard(SETTINGS, first), BudgetGuard(SETTINGS, second)
        await first.record(outcome(tenant="acme", cost_usd=0.6))
        await guard_two.check("acme", now=MOMENT)
        await second.record(outcome(tenant="acme", cost_usd=0.5))
        with pytest.raises(QuotaExceeded):
            await guard_one.check("acme", now=MOMENT)
        with pytest.raises(QuotaExceeded):
            await guard_two.check("acme", now=MOMENT)
        assert await first.spent_this_month("acme", now=MOMENT) == pytest.approx(1.1)
