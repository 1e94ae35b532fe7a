"""Headers on answers that are not a 200, over real HTTP.

Every answer the app gives carries ``x-request-id`` (a well-formed incoming one is echoed), errors
included. A 502 or 504 of a cascade that ran carries what it decided and spent, as a 200 does:
``x-coe-tier``, ``x-coe-agreement``, ``x-coe-cost-usd``. A request whose head is too large to read
gets its 431 from the HTTP protocol, before the app, and so without a request id.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from gateway.api import cascade_call
from gateway.config import Settings
from gateway.serve import MAX_HEAD_BYTES
from tests.gateway_server import GatewayServer
from tests.upstream import Gate, Reply, UpstreamServer

GOOD = {"model": "sentiment", "messages": [{"role": "user", "content": "Great film."}]}
DECISION_HEADERS = ("x-coe-tier", "x-coe-agreement", "x-coe-cost-usd")


@pytest.fixture
def serve(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., httpx.Client]]:
    servers: list[GatewayServer] = []
    clients: list[httpx.Client] = []

    def start(**route: Any) -> httpx.Client:
        server = GatewayServer(make_settings(**route)).__enter__()
        servers.append(server)
        clients.append(httpx.Client(base_url=server.url, timeout=30))
        return clients[-1]

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.__exit__(None, None, None)


def boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("a bug")


ERRORS: dict[str, Callable[[httpx.Client, dict[str, str]], httpx.Response]] = {
    "400 bad field": lambda c, h: c.post(
        "/v1/chat/completions", json={**GOOD, "temperature": "hot"}, headers=h
    ),
    "400 bad json": lambda c, h: c.post("/v1/chat/completions", content=b"{", headers=h),
    "404 unknown route": lambda c, h: c.post(
        "/v1/chat/completions", json={**GOOD, "model": "gpt-17"}, headers=h
    ),
    "404 unknown path": lambda c, h: c.get("/v1/nothing-here", headers=h),
    "405 wrong method": lambda c, h: c.get("/v1/chat/completions", headers=h),
    "413 body too large": lambda c, h: c.post(
        "/v1/chat/completions", content=b"x" * 2_000_000, headers=h
    ),
}


@pytest.mark.parametrize("make_error", ERRORS.values(), ids=ERRORS.keys())
def test_an_error_carries_a_request_id(
    serve: Callable[..., httpx.Client],
    upstreams: dict[str, UpstreamServer],
    make_error: Callable[[httpx.Client, dict[str, str]], httpx.Response],
) -> None:
    response = make_error(serve(), {})

    assert response.status_code >= 400
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


@pytest.mark.parametrize("make_error", ERRORS.values(), ids=ERRORS.keys())
def test_an_error_echoes_a_well_formed_incoming_request_id(
    serve: Callable[..., httpx.Client],
    upstreams: dict[str, UpstreamServer],
    make_error: Callable[[httpx.Client, dict[str, str]], httpx.Response],
) -> None:
    response = make_error(serve(), {"x-request-id": "trace-4xx.1"})

    assert response.status_code >= 400
    assert response.headers.get_list("x-request-id") == ["trace-4xx.1"]


def test_a_500_echoes_the_request_id(
    serve: Callable[..., httpx.Client],
    upstreams: dict[str, UpstreamServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = serve()
    monkeypatch.setattr(cascade_call, "make_plan", boom)

    response = client.post("/v1/chat/completions", json=GOOD, headers={"x-request-id": "t-500"})

    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert response.headers.get_list("x-request-id") == ["t-500"]


def test_a_request_error_carries_no_decision_headers(
    serve: Callable[..., httpx.Client], upstreams: dict[str, UpstreamServer]
) -> None:
    response = serve().post("/v1/chat/completions", json={**GOOD, "temperature": "hot"})

    assert response.status_code == 400
    assert not any(name in response.headers for name in DECISION_HEADERS)


def test_a_502_carries_the_tier_reached_and_what_it_cost(
    serve: Callable[..., httpx.Client], upstreams: dict[str, UpstreamServer]
) -> None:
    upstreams["small-c"].answer("negative")  # 2 of 3 is not unanimity: climb to tier 1 ...
    upstreams["large"].answer(None, status=500)  # ... where every endpoint fails

    response = serve(threshold=1).post("/v1/chat/completions", json=GOOD)

    assert response.status_code == 502
    assert response.headers["x-coe-tier"] == "1"
    assert response.headers["x-coe-agreement"] == "0.0000"
    assert float(response.headers["x-coe-cost-usd"]) > 0  # tier 0's three calls were paid


def test_a_504_carries_the_tier_reached_and_what_it_cost(
    serve: Callable[..., httpx.Client], upstreams: dict[str, UpstreamServer]
) -> None:
    for name in ("small-a", "small-b", "small-c"):
        upstreams[name].script(Reply(gate=Gate()))

    response = serve(deadline_s=0.3).post("/v1/chat/completions", json=GOOD)

    assert response.status_code == 504
    assert response.headers["x-coe-tier"] == "0"
    assert float(response.headers["x-coe-cost-usd"]) >= 0
    assert "x-coe-agreement" in response.headers


def test_a_head_too_large_to_read_gets_a_431_without_a_request_id(
    serve: Callable[..., httpx.Client], upstreams: dict[str, UpstreamServer]
) -> None:
    port = serve().base_url.port
    assert port is not None
    head = (
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-request-id: t-431\r\n"
        b"x-big: " + b"a" * (MAX_HEAD_BYTES + 1) + b"\r\n\r\n"
    )

    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(head)
        answer = connection.recv(4096)

    assert answer.startswith(b"HTTP/1.1 431")
    assert b"x-request-id" not in answer.lower()
