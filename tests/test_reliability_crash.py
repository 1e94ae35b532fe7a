"""Crashes and shutdowns of a real ``coe serve`` process.

``kill -9`` under load: every request whose answer reached its client is in the ledger afterwards
(SQLite and PostgreSQL), because the answer is sent only once its rows are committed. SIGTERM
drains: the request in flight finishes, new connections are refused, the ledger is flushed, and
the process exits within the drain timeout.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from tests.gateway_process import GatewayProcess, one_tier_config
from tests.ledger_fixtures import BACKENDS, fresh_query, ledger_url_for
from tests.upstream import Gate, Reply, UpstreamServer

BODY = {"model": "sentiment", "messages": [{"role": "user", "content": "Lovely."}]}
ANSWERED_BEFORE_KILL = 40
WORKERS = 8




@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from ledger_url_for(request.param, tmp_path)


def start(gateways: list[GatewayProcess], gateway: GatewayProcess) -> GatewayProcess:
    gateways.append(gateway)
    return gateway.start()


def recorded(ledger_url: str, request_ids: list[str]) -> set[str]:
    rows = fresh_query(ledger_url, "SELECT request_id FROM coe_requests")
    return {str(row[0]) for row in rows} & set(request_ids)


@pytest.mark.anyio
async def test_kill_9_under_load_loses_no_answered_request(
    upstreams: dict[str, UpstreamServer],
    ledger_url: str,
    tmp_path: Path,
    gateways: list[GatewayProcess],
) -> None:
    gateway = start(gateways, GatewayProcess(one_tier_config(upstreams, ledger_url), tmp_path))
    answered: list[str] = []
    sent: list[str] = []
    killed = threading.Event()

    async def worker(number: int, client: httpx.AsyncClient) -> None:
        for sequence in range(10_000):
            request_id = f"w{number}-{sequence}"
            sent.append(request_id)
            try:
                response = await client.post(
                    "/v1/chat/completions", json=BODY, headers={"x-request-id": request_id}
                )
            except httpx.TransportError:
                return  # the gateway is gone
            assert response.status_code == 200, response.text
            answered.append(request_id)
            if len(answered) >= ANSWERED_BEFORE_KILL and not killed.is_set():
                killed.set()
                gateway.signal(signal.SIGKILL)

    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        async with anyio.create_task_group() as group:
            for number in range(WORKERS):
                group.start_soon(worker, number, client)

    assert gateway.wait(10) == -signal.SIGKILL
    assert len(answered) >= ANSWERED_BEFORE_KILL
    # Answered implies recorded; some requests may be recorded whose answers never left.
    assert recorded(ledger_url, answered) == set(answered)


def post_in_thread(url: str, results: list[httpx.Response | Exception]) -> threading.Thread:
    def run() -> None:
        try:
            results.append(httpx.post(f"{url}/v1/chat/completions", json=BODY, timeout=30))
        except httpx.TransportError as exc:
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_until_refusing(gateway: GatewayProcess, timeout_s: float = 10) -> None:
    """Poll until new connections are refused (the listening socket is closed), bounded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{gateway.url}/healthz", timeout=1)
        except httpx.ConnectError:
            return
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise AssertionError("the gateway still accepts connections after SIGTERM")


def test_sigterm_finishes_the_request_in_flight_refuses_new_ones_and_flushes(
    upstreams: dict[str, UpstreamServer], tmp_path: Path, gateways: list[GatewayProcess]
) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    held = Gate()
    upstreams["small-a"].script(Reply(), Reply(gate=held))
    gateway = start(
        gateways,
        GatewayProcess(
            one_tier_config(upstreams, ledger_url), tmp_path, args=("--drain-timeout", "20")
        ),
    )
    before = httpx.post(f"{gateway.url}/v1/chat/completions", json=BODY, timeout=30)
    results: list[httpx.Response | Exception] = []
    thread = post_in_thread(gateway.url, results)
    assert held.entered.wait(10)

    gateway.signal(signal.SIGTERM)
    wait_until_refusing(gateway)
    held.open()
    thread.join(30)
    started = time.monotonic()
    code = gateway.wait(20)

    assert before.status_code == 200
    [during] = results
    assert isinstance(during, httpx.Response)
    assert during.status_code == 200
    assert during.json()["choices"][0]["message"]["content"] == "positive"
    assert code in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 10
    ids = [before.headers["x-request-id"], during.headers["x-request-id"]]
    assert recorded(ledger_url, ids) == set(ids)


def test_sigterm_gives_up_on_a_stuck_request_after_the_drain_timeout(
    upstreams: dict[str, UpstreamServer], tmp_path: Path, gateways: list[GatewayProcess]
) -> None:
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    stuck = Gate()
    upstreams["small-a"].script(Reply(), Reply(gate=stuck))
    gateway = start(
        gateways,
        GatewayProcess(
            one_tier_config(upstreams, ledger_url), tmp_path, args=("--drain-timeout", "1")
        ),
    )
    before = httpx.post(f"{gateway.url}/v1/chat/completions", json=BODY, timeout=30)
    results: list[httpx.Response | Exception] = []
    thread = post_in_thread(gateway.url, results)
    assert stuck.entered.wait(10)

    sent = time.monotonic()
    gateway.signal(signal.SIGTERM)
    code = gateway.wait(15)
    took = time.monotonic() - sent
    thread.join(30)

    assert code in (0, -signal.SIGTERM)
    assert took < 5, f"exit took {took:.1f} s with a 1 s drain timeout"
    [during] = results
    assert not (isinstance(during, httpx.Response) and during.status_code == 200)
    assert recorded(ledger_url, [before.headers["x-request-id"]]) == {
        before.headers["x-request-id"]
    }
