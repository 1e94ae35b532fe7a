"""Hard budgets: the worst-case arithmetic, the ledger's conditional reservation (also raced from
two ledgers on one PostgreSQL), settlement in the rows' transaction, release and expiry."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from gateway.billing import Biller
from gateway.budgets import RESERVATION_MARGIN_S, BudgetGuard
from gateway.config import LedgerConfig, parse_settings
from gateway.errors import QuotaExceeded
from gateway.ledger import open_ledger
from gateway.reports import cost_report
from policies.pricing import Price, worst_case_usd
from tests.ledger_fixtures import BACKENDS, MOMENT, fresh_query, ledger_url_for, outcome


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from ledger_url_for(request.param, tmp_path)


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    yield from ledger_url_for("postgresql", tmp_path)


def test_worst_case_prices_every_endpoint_on_prompt_and_max_tokens() -> None:
    hosted = Price(usd_per_mtok_in=3.0, usd_per_mtok_out=15.0)
    cheap = Price(usd_per_mtok_in=0.1, usd_per_mtok_out=0.2)
    # 100 prompt tokens, 50 out: 100 × 3 + 50 × 15 = 1050 and 100 × 0.1 + 50 × 0.2 = 20 per Mtok.
    assert worst_case_usd([hosted, cheap, cheap], 100, 50, 60.0) == pytest.approx(1090e-6)


def test_worst_case_holds_a_gpu_endpoint_for_the_whole_deadline() -> None:
    gpu = Price(gpu_hour_usd=1.29, gpus=2)
    # 60 s × 2 GPUs × $1.29 / 3600 = $0.043, whatever the tokens.
    assert worst_case_usd([gpu], 10_000, 4096, 60.0) == pytest.approx(0.043)
    assert worst_case_usd([], 100, 50, 60.0) == 0.0


def test_biller_worst_case_covers_every_tier_the_plan_may_reach() -> None:
    settings = parse_settings(
        {
            "endpoints": [
                {"name": "small", "base_url": "http://x", "model": "s",
                 "usd_per_mtok_in": 0.1, "usd_per_mtok_out": 0.2},
                {"name": "big", "base_url": "http://x", "model": "b",
                 "usd_per_mtok_in": 3.0, "usd_per_mtok_out": 15.0},
                {"name": "local", "base_url": "http://x", "model": "l", "gpu": "A100", "gpus": 2},
            ],
            "routes": {"r": {"labels": ["a"], "tiers": [["small"], ["big", "local"]]}},
        }
    )
    biller = Biller(settings)
    tiers = settings.routes["r"].tiers
    # 400 characters ≈ 100 tokens; 16 out; the A100 pair for 30 s.
    small = (100 * 0.1 + 16 * 0.2) / 1e6
    big = (100 * 3.0 + 16 * 15.0) / 1e6
    local = 30 * 2 * 1.29 / 3600
    assert biller.worst_case(tiers, 400, 16, 30.0) == pytest.approx(small + big + local)
    # Capped at tier 0 (coe.max_tier = 0): only what that tier may call.
    assert biller.worst_case(tiers[:1], 400, 16, 30.0) == pytest.approx(small)


SETTINGS = parse_settings({"tenants": [{"name": "acme", "budget_usd": 1.0}, {"name": "free"}]})


@pytest.mark.anyio
async def test_a_reservation_fits_only_under_spent_plus_reserved(ledger_url: str) -> None:
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        guard = BudgetGuard(SETTINGS, ledger)
        await ledger.record(outcome(tenant="acme", cost_usd=0.5))
        first = await guard.reserve("acme", 0.3, request_id="r1", deadline_s=60, now=MOMENT)
        assert first is not None
        # 0.5 spent + 0.3 reserved + 0.3 > 1.0: refused, and nothing is held for it.
        with pytest.raises(QuotaExceeded) as caught:
            await guard.reserve("acme", 0.3, request_id="r2", deadline_s=60, now=MOMENT)
        assert caught.value.status_code == 429
        assert caught.value.code == "insufficient_quota"
        # Exactly the rest fits (≤ budget).
        rest = await guard.reserve("acme", 0.2, request_id="r3", deadline_s=60, now=MOMENT)
        assert rest is not None
        assert await ledger.reserved_this_month("acme", now=MOMENT) == pytest.approx(0.5)
        assert await guard.reserve("free", 99.0, request_id="r4", deadline_s=60) is None


@pytest.mark.anyio
async def test_settlement_replaces_the_reservation_with_the_cost_in_one_commit(
    ledger_url: str,
) -> None:
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        guard = BudgetGuard(SETTINGS, ledger)
        held = await guard.reserve("acme", 0.4, request_id="r1", deadline_s=60, now=MOMENT)
        report = await cost_report(ledger, tenant="acme", since=None, until=None, group_by="route")
        assert report["reserved"] == {"requests": 1, "cost_usd": 0.4}
        await ledger.record(outcome(tenant="acme", cost_usd=0.1), reservation=held)
        assert await ledger.spent_this_month("acme", now=MOMENT) == pytest.approx(0.1)
        assert await ledger.reserved_this_month("acme", now=MOMENT) == pytest.approx(0.0)
        report = await cost_report(ledger, tenant="acme", since=None, until=None, group_by="route")
        assert report["reserved"] == {"requests": 0, "cost_usd": 0.0}
        # Released unsettled (the request never ran): the amount is free again.
        again = await guard.reserve("acme", 0.9, request_id="r2", deadline_s=60, now=MOMENT)
        assert again is not None
        await ledger.release(again)
        await ledger.release(again)  # twice is harmless
        assert await ledger.reserved_this_month("acme", now=MOMENT) == pytest.approx(0.0)
    assert fresh_query(ledger_url, "SELECT COUNT(*) FROM coe_reservations") == [(0,)]


@pytest.mark.anyio
async def test_expired_reservations_are_released_by_any_process(ledger_url: str) -> None:
    config = LedgerConfig(url=ledger_url)
    async with open_ledger(config) as ledger:
        guard = BudgetGuard(SETTINGS, ledger)
        await guard.reserve("acme", 0.9, request_id="lost", deadline_s=1, now=MOMENT)
        later = MOMENT + timedelta(seconds=1 + RESERVATION_MARGIN_S + 1)
        # Before expiry it blocks the budget; after, the tenant's next reservation releases it.
        with pytest.raises(QuotaExceeded):
            await guard.reserve("acme", 0.5, request_id="r1", deadline_s=1, now=MOMENT)
        assert await guard.reserve("acme", 0.5, request_id="r2", deadline_s=1, now=later)
        assert await ledger.reserved_this_month("acme", now=MOMENT) == pytest.approx(0.5)
        # A process starting later releases every expired one (here: r2's).
        released, amount = await ledger.release_expired(later + timedelta(hours=1))
        assert (released, amount) == (1, pytest.approx(0.5))
        assert await ledger.reserved_this_month("acme", now=MOMENT) == pytest.approx(0.0)


@pytest.mark.anyio
@pytest.mark.postgres
async def test_racing_reservations_from_two_processes_never_overbook(postgres_url: str) -> None:
    config = LedgerConfig(url=postgres_url)
    granted: list[str] = []
    refused: list[str] = []
    # Two ledgers on one database are what two gateway processes see; 1.0 holds ten of 0.1.
    async with open_ledger(config) as first, open_ledger(config) as second:
        guards = [BudgetGuard(SETTINGS, first), BudgetGuard(SETTINGS, second)]

        async def one(index: int) -> None:
            try:
                await guards[index % 2].reserve(
                    "acme", 0.1 - 1e-9, request_id=f"r{index}", deadline_s=60, now=MOMENT
                )
                granted.append(f"r{index}")
            except QuotaExceeded:
                refused.append(f"r{index}")

        async with anyio.create_task_group() as tasks:
            for index in range(60):
                tasks.start_soon(one, index)
        assert len(granted) == 10
        assert len(refused) == 50
        reserved = await first.reserved_this_month("acme", now=MOMENT)
        assert reserved == pytest.approx(10 * (0.1 - 1e-9))
    rows = fresh_query(postgres_url, "SELECT COUNT(*), SUM(amount_usd) FROM coe_reservations")
    assert rows[0][0] == 10
