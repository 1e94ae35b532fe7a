"""Fair shares over real HTTP: the real app under uvicorn, scripted upstreams on loopback, the
official openai SDK. Requests are held in flight on upstream gates, so who holds what is set by
events, not timing.

``server.fair_share_loop_lag_ms = 0.001`` makes the gateway contended from its first probe: no
timer fires within a microsecond of its time, so every probe is late past it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from gateway.config import parse_settings
from gateway.tenants import new_key
from tests.conftest import cascade_config
from tests.gateway_server import GatewayServer
from tests.upstream import Gate, Reply, UpstreamServer

ACME_KEY, ACME_DIGEST = new_key()
BETA_KEY, BETA_DIGEST = new_key()
REVIEW = [{"role": "user", "content": "A fine film."}]
ALWAYS_LATE_MS = 0.001


class ContentionSeen(logging.Handler):
    """Set once the gateway logs that its loop is contended (``gateway.contention``)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.set()


@pytest.fixture
def contention_seen() -> Iterator[threading.Event]:
    handler = ContentionSeen()
    logger = logging.getLogger("coe.contention")
    logger.addHandler(handler)
    yield handler.seen
    logger.removeHandler(handler)


@pytest.fixture
def serve(
    upstreams: dict[str, UpstreamServer], tmp_path: Path
) -> Iterator[Callable[[float], GatewayServer]]:
    servers: list[GatewayServer] = []

    def start(fair_share_loop_lag_ms: float) -> GatewayServer:
        # θ = 1: a request waits for all three tier-0 votes, so one gated upstream holds it.
        raw = cascade_config(upstreams, tmp_path / "ledger.db", threshold=1)
        raw["server"] = {"fair_share_loop_lag_ms": fair_share_loop_lag_ms}
        raw["tenants"] = [
            {"name": "acme", "api_key_sha256": [ACME_DIGEST]},
            {"name": "beta", "api_key_sha256": [BETA_DIGEST]},
        ]
        server = GatewayServer(parse_settings(raw)).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def ask(gateway: GatewayServer, key: str) -> str | None:
    with openai.OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0) as client:
        answer = client.chat.completions.create(model="sentiment", messages=REVIEW)  # type: ignore[arg-type]
    return answer.choices[0].message.content


def hold_in_flight(
    pool: ThreadPoolExecutor, gateway: GatewayServer, holders: list[tuple[str, Gate]]
) -> list[Future[str | None]]:
    """Send one request per (key, gate), each once the previous one is held at its gate."""
    held = []
    for key, gate in holders:
        held.append(pool.submit(ask, gateway, key))
        assert gate.entered.wait(10)
    return held


def test_contended_the_tenant_over_its_share_gets_429_and_the_other_is_served(
    serve: Callable[[float], GatewayServer],
    upstreams: dict[str, UpstreamServer],
    contention_seen: threading.Event,
) -> None:
    gates = [Gate() for _ in range(3)]
    upstreams["small-a"].script(*(Reply(gate=gate) for gate in gates))
    gateway = serve(ALWAYS_LATE_MS)
    assert contention_seen.wait(10)

    with ThreadPoolExecutor(max_workers=4) as pool:
        # acme holds 2 of the 3 requests in flight, beta 1: acme is over an equal share of 1.5.
        held = hold_in_flight(
            pool, gateway, [(ACME_KEY, gates[0]), (ACME_KEY, gates[1]), (BETA_KEY, gates[2])]
        )
        with pytest.raises(openai.RateLimitError) as refused:
            ask(gateway, ACME_KEY)
        beta_answer = ask(gateway, BETA_KEY)
        for gate in gates:
            gate.open()
        held_answers = [future.result() for future in held]

    assert refused.value.status_code == 429
    assert refused.value.code == "rate_limit_exceeded"
    assert refused.value.response.headers["retry-after"] == "1"
    assert "fair share" in refused.value.message
    assert beta_answer == "positive"
    assert held_answers == ["positive"] * 3


def test_with_fair_share_lag_0_a_tenant_over_its_share_is_served(
    serve: Callable[[float], GatewayServer], upstreams: dict[str, UpstreamServer]
) -> None:
    gates = [Gate() for _ in range(3)]
    upstreams["small-a"].script(*(Reply(gate=gate) for gate in gates))
    gateway = serve(0)

    with ThreadPoolExecutor(max_workers=4) as pool:
        held = hold_in_flight(
            pool, gateway, [(ACME_KEY, gates[0]), (ACME_KEY, gates[1]), (BETA_KEY, gates[2])]
        )
        acme_answer = ask(gateway, ACME_KEY)
        for gate in gates:
            gate.open()
        held_answers = [future.result() for future in held]

    assert acme_answer == "positive"
    assert held_answers == ["positive"] * 3
