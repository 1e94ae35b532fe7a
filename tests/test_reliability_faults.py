"""Upstream faults at 20 % of tier-0 calls, over real HTTP, against a healthy top tier.

Three misbehaving upstreams (``tests/fault_server.py``) form tier 0: every fifth call of each gets
the next fault of the list (HTTP 500/502/503, 429 with Retry-After, reset mid-body, close without a
response, a hang past the timeout, a truncated body, a non-JSON body, JSON without choices, an
empty choice list, a slow trickle that completes and one that does not). Clients must see no 5xx
and only correct answers, and the SQLite ledger must hold every call made with the status it had.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from gateway.config import Settings, parse_settings
from tests.fault_server import (
    EXPECTED_STATUS,
    FAULTS,
    RETRYABLE,
    FaultServer,
    closed_port,
    every,
    first,
    first_tries,
)
from tests.gateway_server import GatewayServer

pytestmark = pytest.mark.anyio

TIER0 = ("small-a", "small-b", "small-c")
REQUESTS = 66  # 66 calls per tier-0 upstream: 13 faults each, every kind at least once
CONCURRENCY = 8


def truth(index: int) -> str:
    return "positive" if index % 2 == 0 else "negative"


def prompt(index: int) -> str:
    return f"Review {index} ({'#pos' if truth(index) == 'positive' else '#neg'}). Sentiment?"


def answer(request: dict[str, Any]) -> str:
    """Every upstream knows the truth: the prompt's tag."""
    return "positive" if "#pos" in request["messages"][-1]["content"] else "negative"


@pytest.fixture
def servers() -> Iterator[dict[str, FaultServer]]:
    started = {name: FaultServer(name, answer).start() for name in (*TIER0, "large")}
    yield started
    for server in started.values():
        server.stop()


def settings_for(
    urls: dict[str, str], ledger: Path, *, endpoint: dict[str, Any] | None = None, **route: Any
) -> Settings:
    return parse_settings(
        {
            "ledger": {"url": f"sqlite:///{ledger}"},
            "endpoints": [
                {
                    "name": name,
                    "base_url": url,
                    "model": name,
                    "timeout_s": 1.0,
                    "max_retries": 0,
                    "usd_per_mtok_in": 0.1 if name != "large" else 2.0,
                    "usd_per_mtok_out": 0.2 if name != "large" else 8.0,
                    **(endpoint or {}),
                }
                for name, url in urls.items()
            ],
            "routes": {
                "sentiment": {
                    "labels": ["positive", "negative"],
                    "threshold": 1,
                    "tiers": [list(TIER0), ["large"]],
                    "deadline_s": 30,
                    **route,
                }
            },
        }
    )


def urls_of(servers: dict[str, FaultServer]) -> dict[str, str]:
    return {name: server.base_url for name, server in servers.items()}


async def send(gateway: GatewayServer, count: int, start: int = 0) -> list[httpx.Response]:
    """Requests ``start`` … ``start + count - 1``, at most CONCURRENCY at a time, in that order."""
    responses: list[httpx.Response] = [None] * count  # type: ignore[list-item]
    limiter = anyio.CapacityLimiter(CONCURRENCY)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:

        async def one(index: int) -> None:
            content = prompt(start + index)
            body = {"model": "sentiment", "messages": [{"role": "user", "content": content}]}
            async with limiter:
                responses[index] = await client.post("/v1/chat/completions", json=body)

        async with anyio.create_task_group() as group:
            for index in range(count):
                group.start_soon(one, index)
    return responses


def ledger_rows(ledger: Path, sql: str) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(ledger)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


def assert_correct(responses: list[httpx.Response]) -> None:
    """Every response is a 200 with the truth of its request (request i is the i-th)."""
    assert Counter(r.status_code for r in responses) == {200: len(responses)}, [
        r.text for r in responses if r.status_code != 200
    ]
    answers = [r.json()["choices"][0]["message"]["content"] for r in responses]
    assert answers == [truth(i) for i in range(len(responses))]


async def test_twenty_percent_faults_give_no_5xx_correct_answers_and_a_true_ledger(
    servers: dict[str, FaultServer], tmp_path: Path
) -> None:
    for offset, name in enumerate(TIER0):
        servers[name].set_schedule(every(5, FAULTS, offset=offset * 4))
    ledger = tmp_path / "ledger.db"

    with GatewayServer(settings_for(urls_of(servers), ledger, wait_for_all=True)) as gateway:
        responses = await send(gateway, REQUESTS)

    assert_correct(responses)
    for response in responses:
        coe = response.json()["coe"]
        tier0 = [c["status"] for c in coe["calls"] if c["tier"] == 0]
        # θ = 1: any failed member is a vote for nothing, so the request must climb.
        assert coe["tier"] == (0 if tier0 == ["ok"] * 3 else 1), coe
    for name in TIER0:
        served = servers[name].served
        assert len(served) == REQUESTS
        assert set(FAULTS) <= set(served)
        rows = ledger_rows(
            ledger, f"SELECT status, attempts FROM coe_calls WHERE endpoint = '{name}'"
        )
        assert Counter(status for status, _ in rows) == Counter(
            EXPECTED_STATUS[fault] for fault in served
        )
        assert {attempts for _, attempts in rows} == {1}  # the breaker never opened at 20 %
    climbed = sum(r.json()["coe"]["tier"] == 1 for r in responses)
    assert len(servers["large"].served) == climbed
    requests = ledger_rows(ledger, "SELECT count(*), sum(cost_usd) FROM coe_requests")
    assert requests[0][0] == REQUESTS
    assert requests[0][1] == pytest.approx(sum(r.json()["coe"]["cost_usd"] for r in responses))


async def test_with_early_decisions_every_call_a_client_saw_is_in_the_ledger(
    servers: dict[str, FaultServer], tmp_path: Path
) -> None:
    for offset, name in enumerate(TIER0):
        servers[name].set_schedule(every(5, FAULTS, offset=offset * 4))
    ledger = tmp_path / "ledger.db"

    with GatewayServer(settings_for(urls_of(servers), ledger, threshold="2/3")) as gateway:
        responses = await send(gateway, REQUESTS)

    assert_correct(responses)
    seen = Counter(
        (r.headers["x-request-id"], c["endpoint"], c["tier"], c["status"])
        for r in responses
        for c in r.json()["coe"]["calls"]
    )
    rows = ledger_rows(ledger, "SELECT request_id, endpoint, tier, status FROM coe_calls")
    # The ledger says "timeout" where the client's coe object says "error".
    recorded = Counter(
        (rid, ep, tier, "error" if status == "timeout" else status)
        for rid, ep, tier, status in rows
    )
    assert recorded == seen


async def test_retryable_faults_are_cured_by_a_retry_and_recorded_as_two_attempts(
    servers: dict[str, FaultServer], tmp_path: Path
) -> None:
    for offset, name in enumerate(TIER0):
        servers[name].set_schedule(first_tries(every(5, RETRYABLE, offset=offset)))
    ledger = tmp_path / "ledger.db"
    settings = settings_for(
        urls_of(servers), ledger, endpoint={"max_retries": 2, "timeout_s": 5}, wait_for_all=True
    )

    with GatewayServer(settings) as gateway:
        responses = await send(gateway, 30)

    assert_correct(responses)
    assert [r.json()["coe"] for r in responses if r.json()["coe"]["tier"] != 0] == []
    assert servers["large"].served == []
    for name in TIER0:
        rows = ledger_rows(
            ledger, f"SELECT status, attempts FROM coe_calls WHERE endpoint = '{name}'"
        )
        faults = sum(fault is not None for fault in servers[name].served)
        assert Counter(rows) == {("ok", 1): 30 - faults, ("ok", 2): faults}


async def test_a_refused_endpoint_opens_its_breaker_and_still_counts_against_unanimity(
    servers: dict[str, FaultServer], tmp_path: Path
) -> None:
    urls = urls_of(servers)
    urls["small-c"] = f"http://127.0.0.1:{closed_port()}/v1"
    ledger = tmp_path / "ledger.db"
    breaker = {"breaker_failures": 3, "breaker_cooldown_s": 60}
    settings = settings_for(urls, ledger, endpoint=breaker)

    with GatewayServer(settings) as gateway:
        # One at a time, so the breaker sees each failure before the next call starts.
        responses = [(await send(gateway, 1, start=i))[0] for i in range(8)]

    assert_correct(responses)
    assert all(r.json()["coe"]["tier"] == 1 for r in responses)
    rows = ledger_rows(
        ledger,
        "SELECT c.status, c.attempts FROM coe_calls c JOIN coe_requests r USING (request_id) "
        "WHERE c.endpoint = 'small-c' ORDER BY r.created_at",
    )
    assert rows == [("error", 1)] * 3 + [("error", 0)] * 5
    last = responses[-1].json()["coe"]["calls"]
    assert {c["endpoint"]: c["status"] for c in last if c["tier"] == 0}["small-c"] == "error"


async def test_the_breaker_probes_after_its_cool_down_and_closes_when_the_endpoint_is_back(
    servers: dict[str, FaultServer], tmp_path: Path
) -> None:
    servers["small-c"].set_schedule(first(3, "http_503"))
    ledger = tmp_path / "ledger.db"
    cooldown_s = 0.3
    settings = settings_for(
        urls_of(servers),
        ledger,
        endpoint={"breaker_failures": 3, "breaker_cooldown_s": cooldown_s},
        threshold="2/3",
        wait_for_all=True,
    )

    with GatewayServer(settings) as gateway:
        for index in range(4):
            await send(gateway, 1, start=index)
        assert len(servers["small-c"].served) == 3  # the fourth call was refused by the breaker
        # The cool-down is a timer: waiting it out is the behaviour under test.
        await anyio.sleep(cooldown_s)
        probe = (await send(gateway, 1, start=4))[0]
        after = (await send(gateway, 1, start=5))[0]

    assert servers["small-c"].served == ["http_503"] * 3 + [None, None]
    for response in (probe, after):
        calls = {c["endpoint"]: c for c in response.json()["coe"]["calls"]}
        assert calls["small-c"]["status"] == "ok"
    statuses = ledger_rows(ledger, "SELECT attempts FROM coe_calls WHERE endpoint = 'small-c'")
    # The refused call made no attempt; the probe and the call after it reached the upstream.
    assert sorted(a for (a,) in statuses) == [0, 1, 1, 1, 1, 1]
