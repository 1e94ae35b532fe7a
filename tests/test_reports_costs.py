"""Cost reports over real ledgers: the docs/api.md shape, sums, groups, windows and tenants."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import pytest

from gateway.billing import Biller
from gateway.config import LedgerConfig, parse_settings
from gateway.errors import BadRequest
from gateway.ledger import Ledger, open_ledger
from gateway.outcome import RequestOutcome
from gateway.reports import cost_report
from tests.ledger_fixtures import BACKENDS, MOMENT, call, ledger_url_for, outcome

SETTINGS = parse_settings(
    {
        "endpoints": [
            {
                "name": n,
                "kind": "python",
                "function": "m:f",
                "usd_per_mtok_in": p_in,
                "usd_per_mtok_out": p_out,
            }
            for n, p_in, p_out in (
                ("small-a", 0.1, 0.2),
                ("small-b", 0.1, 0.2),
                ("large", 2.0, 8.0),
            )
        ],
        "routes": {
            name: {"labels": ["positive", "negative"], "tiers": [["small-a", "small-b"], ["large"]]}
            for name in ("sentiment", "topics")
        },
    }
)
DAY_ONE = datetime.fromisoformat("2025-03-14T10:00:00+00:00")
DAY_TWO = datetime.fromisoformat("2025-03-15T23:59:00+00:00")


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from ledger_url_for(request.param, tmp_path)


def _agreed(
    tenant: str,
    route: str = "sentiment",
    *,
    tags: tuple[str, ...] = (),
    created_at: datetime = MOMENT,
) -> RequestOutcome:
    calls = [
        call("small-a", tokens_in=100, tokens_out=2),
        call("small-b", tokens_in=100, tokens_out=2),
    ]
    return outcome(tenant=tenant, route=route, calls=calls, tags=tags, created_at=created_at)


def _escalated(
    tenant: str, route: str = "sentiment", *, created_at: datetime = MOMENT
) -> RequestOutcome:
    calls = [
        call("small-a", tokens_in=100, tokens_out=2),
        call("small-b", tokens_in=100, tokens_out=2, text="negative"),
        call("large", tier=1, tokens_in=100, tokens_out=2),
    ]
    return outcome(tenant=tenant, route=route, tier=1, calls=calls, created_at=created_at)


async def _record_billed(ledger: Ledger, requests: Sequence[RequestOutcome]) -> list[float]:
    """Bill and record like the gateway does; returns the costs the clients were told."""
    biller = Biller(SETTINGS)
    told = []
    for request in requests:
        biller.bill(request, SETTINGS.routes[request.route])
        await ledger.record(request)
        told.append(request.cost_usd)
    return told


@pytest.mark.anyio
async def test_report_has_the_contract_shape(ledger_url: str) -> None:
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        await _record_billed(ledger, [_agreed("acme")])
        report = await cost_report(ledger, tenant="acme", since=None, until=None, group_by="route")
    assert {"tenant", "since", "until", "totals", "exits_by_tier", "counterfactual", "groups"} <= (
        report.keys()
    )
    assert set(report["totals"]) == {
        "requests",
        "calls",
        "cost_usd",
        "tokens_in",
        "tokens_out",
        "gpu_seconds",
    }
    assert set(report["counterfactual"]) == {"top_tier_only_cost_usd", "savings_ratio"}
    assert set(report["groups"][0]) == {"key", "requests", "calls", "cost_usd"}
    assert report["tenant"] == "acme"


@pytest.mark.anyio
async def test_totals_equal_the_costs_clients_were_told(ledger_url: str) -> None:
    requests = [_agreed("acme") for _ in range(7)] + [_escalated("acme") for _ in range(3)]
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        told = await _record_billed(ledger, requests)
        report = await cost_report(ledger, tenant="acme", since=None, until=None, group_by="route")
    totals = report["totals"]
    assert totals["cost_usd"] == pytest.approx(sum(told), rel=1e-9)
    assert (totals["requests"], totals["calls"]) == (10, 7 * 2 + 3 * 3)
    assert (totals["tokens_in"], totals["tokens_out"]) == (2300, 46)
    assert report["exits_by_tier"] == {"0": 7, "1": 3}
    # Every request on "large" alone: 100 tokens in at $2/M and 2 out at $8/M.
    top_only = 10 * (100 * 2.0 + 2 * 8.0) / 1e6
    assert report["counterfactual"]["top_tier_only_cost_usd"] == pytest.approx(top_only)
    assert report["counterfactual"]["savings_ratio"] == pytest.approx(
        1 - sum(told) / top_only, abs=1e-6
    )


@pytest.mark.anyio
async def test_an_empty_ledger_reports_zeros(ledger_url: str) -> None:
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        report = await cost_report(ledger, tenant=None, since=None, until=None, group_by="tier")
    assert report["totals"] == {
        "requests": 0,
        "calls": 0,
        "cost_usd": 0.0,
        "tokens_in": 0,
        "tokens_out": 0,
        "gpu_seconds": 0.0,
    }
    assert report["counterfactual"] == {"top_tier_only_cost_usd": 0.0, "savings_ratio": 0.0}
    assert (report["groups"], report["exits_by_tier"], report["tenant"]) == ([], {}, None)


@pytest.mark.anyio
async def test_a_tenant_never_sees_another_tenants_numbers(ledger_url: str) -> None:
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        await _record_billed(
            ledger, [_agreed("acme"), _escalated("beta"), _escalated("beta", route="topics")]
        )
        reports = {
            tenant: await cost_report(
                ledger, tenant=tenant, since=None, until=None, group_by=group_by
            )
            for tenant in ("acme", "beta", None)
            for group_by in ("route",)
        }
    assert reports["acme"]["totals"]["requests"] == 1
    assert [g["key"] for g in reports["acme"]["groups"]] == ["sentiment"]
    assert reports["beta"]["totals"]["requests"] == 2
    assert reports[None]["totals"]["requests"] == 3
    assert reports[None]["totals"]["cost_usd"] == pytest.approx(
        reports["acme"]["totals"]["cost_usd"] + reports["beta"]["totals"]["cost_usd"]
    )


@pytest.mark.anyio
async def test_groups_by_route_tier_and_endpoint(ledger_url: str) -> None:
    requests = [_agreed("acme"), _escalated("acme"), _escalated("acme", route="topics")]
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        await _record_billed(ledger, requests)
        by = {
            g: (await cost_report(ledger, tenant="acme", since=None, until=None, group_by=g))[
                "groups"
            ]
            for g in ("route", "tier", "endpoint")
        }
    small = (100 * 0.1 + 2 * 0.2) / 1e6
    large = (100 * 2.0 + 2 * 8.0) / 1e6
    assert by["route"] == [
        {
            "key": "sentiment",
            "requests": 2,
            "calls": 5,
            "cost_usd": pytest.approx(4 * small + large),
        },
        {"key": "topics", "requests": 1, "calls": 3, "cost_usd": pytest.approx(2 * small + large)},
    ]
    assert by["tier"] == [
        {"key": "0", "requests": 3, "calls": 6, "cost_usd": pytest.approx(6 * small)},
        {"key": "1", "requests": 2, "calls": 2, "cost_usd": pytest.approx(2 * large)},
    ]
    assert [(g["key"], g["requests"], g["calls"]) for g in by["endpoint"]] == [
        ("large", 2, 2),
        ("small-a", 3, 3),
        ("small-b", 3, 3),
    ]


@pytest.mark.anyio
async def test_groups_by_utc_day(ledger_url: str) -> None:
    requests = [
        _agreed("acme", created_at=DAY_ONE),
        _agreed("acme", created_at=DAY_TWO),
        _escalated("acme", created_at=DAY_TWO),
    ]
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        await _record_billed(ledger, requests)
        report = await cost_report(ledger, tenant="acme", since=None, until=None, group_by="day")
    assert [(g["key"], g["requests"], g["calls"]) for g in report["groups"]] == [
        ("2025-03-14", 1, 2),
        ("2025-03-15", 2, 5),
    ]


@pytest.mark.anyio
async def test_a_request_with_two_tags_counts_in_both_groups(ledger_url: str) -> None:
    requests = [_agreed("acme", tags=("a", "b")), _agreed("acme", tags=("b",)), _agreed("acme")]
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        await _record_billed(ledger, requests)
        report = await cost_report(ledger, tenant="acme", since=None, until=None, group_by="tag")
    each = 2 * (100 * 0.1 + 2 * 0.2) / 1e6
    assert report["groups"] == [
        {"key": "", "requests": 1, "calls": 2, "cost_usd": pytest.approx(each)},
        {"key": "a", "requests": 1, "calls": 2, "cost_usd": pytest.approx(each)},
        {"key": "b", "requests": 2, "calls": 4, "cost_usd": pytest.approx(2 * each)},
    ]


@pytest.mark.anyio
async def test_since_is_inclusive_and_until_exclusive(ledger_url: str) -> None:
    requests = [_agreed("acme", created_at=DAY_ONE), _agreed("acme", created_at=DAY_TWO)]
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        await _record_billed(ledger, requests)
        first = await cost_report(
            ledger, tenant="acme", since=DAY_ONE, until=DAY_TWO, group_by="route"
        )
        second = await cost_report(ledger, tenant="acme", since=DAY_TWO, until=None, group_by="day")
    assert first["totals"]["requests"] == 1
    assert first["since"] == "2025-03-14T10:00:00Z"
    assert first["until"] == "2025-03-15T23:59:00Z"
    assert [g["key"] for g in second["groups"]] == ["2025-03-15"]


@pytest.mark.anyio
async def test_unknown_grouping_and_reversed_window_are_bad_requests(ledger_url: str) -> None:
    async with open_ledger(LedgerConfig(url=ledger_url)) as ledger:
        with pytest.raises(BadRequest, match="group_by"):
            await cost_report(ledger, tenant=None, since=None, until=None, group_by="model")
        with pytest.raises(BadRequest, match="since"):
            await cost_report(ledger, tenant=None, since=DAY_TWO, until=DAY_ONE, group_by="day")
