"""Hard budgets through real ``coe serve`` processes: 200 concurrent requests of one tenant whose
budget holds about five, through two replicas on one PostgreSQL and through two processes on one
SQLite file. Settled spend stays within the budget, every request beyond is a 429 that called
nothing, and the ledger agrees with what the clients were told to the micro-dollar."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from gateway.tenants import key_digest
from tests.gateway_process import GatewayProcess, one_tier_config
from tests.ledger_fixtures import fresh_query, ledger_url_for
from tests.upstream import UpstreamServer

pytestmark = [pytest.mark.anyio, pytest.mark.reliability]

KEY = "sk-tenant-capped"
# θ = 1, three agreeing calls of 10 prompt + 2 answer tokens (the upstream's usage) at
# $0.10/$0.20 per Mtok.
REQUEST_COST = 3 * (10 * 0.10 + 2 * 0.20) / 1e6
# Reserved per request: "Lovely." is ~2 prompt tokens, the route's max_tokens 16 out, 3 calls.
WORST_CASE = 3 * (2 * 0.10 + 16 * 0.20) / 1e6
BUDGET = 5 * REQUEST_COST
REQUESTS = 200
BODY = {"model": "sentiment", "messages": [{"role": "user", "content": "Lovely."}]}


def config(upstreams: dict[str, UpstreamServer], ledger_url: str) -> dict[str, Any]:
    return {
        **one_tier_config(upstreams, ledger_url),
        "tenants": [{"name": "capped", "api_key_sha256": [key_digest(KEY)], "budget_usd": BUDGET}],
    }


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    yield from ledger_url_for("postgresql", tmp_path)


async def burst(urls: list[str]) -> list[httpx.Response]:
    """Every request at once, alternating between the gateways."""
    responses: list[httpx.Response] = []
    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(index: int) -> None:
            responses.append(
                await client.post(
                    f"{urls[index % len(urls)]}/v1/chat/completions",
                    json=BODY,
                    headers={"authorization": f"Bearer {KEY}"},
                )
            )

        async with anyio.create_task_group() as group:
            for index in range(REQUESTS):
                group.start_soon(one, index)
    return responses


def check_budget_held(responses: list[httpx.Response], ledger_url: str, label: str) -> None:
    served = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(served) + len(refused) == REQUESTS, sorted({r.status_code for r in responses})
    assert served, "the budget holds several requests; at least one must be served"
    assert {r.json()["error"]["code"] for r in refused} == {"insufficient_quota"}
    told = sum(r.json()["coe"]["cost_usd"] for r in served)
    ((spent, requests, reserved),) = fresh_query(
        ledger_url,
        "SELECT cost_usd, requests, reserved_usd FROM coe_tenant_spend WHERE tenant = 'capped'",
    )
    ((calls,),) = fresh_query(ledger_url, "SELECT COUNT(*) FROM coe_calls")
    ((rows_cost,),) = fresh_query(ledger_url, "SELECT SUM(cost_usd) FROM coe_requests")
    print(  # noqa: T201 - the figures bench/RELIABILITY.md quotes
        f"\n{label}: {REQUESTS} concurrent, budget ${BUDGET:.7f} (~5 requests of "
        f"${REQUEST_COST:.7f}, worst case ${WORST_CASE:.7f}): {len(served)} × 200, "
        f"{len(refused)} × 429; settled ${float(spent):.7f} = {float(spent) / BUDGET:.1%} of "
        f"budget; ledger {int(requests)} requests, {calls} calls; clients told ${told:.7f}"
    )
    assert float(spent) <= BUDGET
    assert int(requests) == len(served)
    # Refused requests called nothing: every call in the ledger belongs to a served request.
    assert calls == 3 * len(served)
    assert abs(float(spent) - told) < 1e-9
    assert abs(float(rows_cost) - told) < 1e-9
    assert abs(float(reserved)) < 1e-12
    assert fresh_query(ledger_url, "SELECT COUNT(*) FROM coe_reservations") == [(0,)]


@pytest.mark.postgres
async def test_200_concurrent_requests_through_two_replicas_keep_a_hard_budget(
    upstreams: dict[str, UpstreamServer],
    pg_url: str,
    tmp_path: Path,
    gateways: list[GatewayProcess],
) -> None:
    for index in range(2):
        gateway = GatewayProcess(config(upstreams, pg_url), tmp_path, name=f"replica-{index}")
        gateways.append(gateway)
        gateway.start()
    responses = await burst([g.url for g in gateways])
    check_budget_held(responses, pg_url, "2 replicas, PostgreSQL")


async def test_200_concurrent_requests_through_two_processes_on_one_sqlite_file(
    upstreams: dict[str, UpstreamServer], tmp_path: Path, gateways: list[GatewayProcess]
) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    for index in range(2):
        gateway = GatewayProcess(config(upstreams, ledger_url), tmp_path, name=f"proc-{index}")
        gateways.append(gateway)
        gateway.start()
    responses = await burst([g.url for g in gateways])
    check_budget_held(responses, ledger_url, "2 processes, SQLite")
