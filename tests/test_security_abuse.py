"""Abusive clients, on a real ``coe serve`` process: each ``[server]`` limit's mechanism.

A connection that sends its request head too slowly is closed (408 if it sent part of one), an idle
keep-alive connection is closed, a tenant past ``max_concurrent_requests_per_tenant`` or
``max_requests_per_second_per_tenant`` gets 429 ``rate_limit_exceeded`` with Retry-After while
another tenant is served, and past ``max_connections`` uvicorn answers 503. bench/abuse.py
measures them under attack.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from gateway.tenants import key_digest
from tests.gateway_process import GatewayProcess

KEY_A = "sk-coe-test-alice"
KEY_B = "sk-coe-test-bob"
BODY = {"model": "slow", "messages": [{"role": "user", "content": "hello"}]}
HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("abuse")
    config = {
        "server": {
            "header_timeout_s": 0.5,
            "keepalive_timeout_s": 0.5,
            "max_concurrent_requests_per_tenant": 2,
        },
        "ledger": {"url": f"sqlite:///{folder / 'ledger.db'}"},
        "endpoints": [
            {"name": "slow", "kind": "python", "function": "tests.slow_classifier:slow_positive"}
        ],
        "routes": {"slow": {"labels": ["positive", "negative"], "tiers": [["slow"]]}},
        "tenants": [
            {"name": "alice", "api_key_sha256": [key_digest(KEY_A)]},
            {"name": "bob", "api_key_sha256": [key_digest(KEY_B)]},
        ],
    }
    process = GatewayProcess(config, folder).start()
    yield process
    process.stop()


def read_until_closed(connection: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and when it closed (seconds from now)."""
    started = time.monotonic()
    connection.settimeout(limit_s)
    received = b""
    while chunk := connection.recv(4096):
        received += chunk
    return received, time.monotonic() - started


def test_a_head_too_slow_gets_408_and_the_connection_closes(gateway: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port)) as connection:
        connection.sendall(HEAD[:20])
        received, after = read_until_closed(connection, limit_s=5)

    assert received.startswith(b"HTTP/1.1 408 ")
    assert b'"code":"request_timeout"' in received
    assert after < 2


def test_a_connection_that_sends_nothing_is_closed(gateway: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port)) as connection:
        received, after = read_until_closed(connection, limit_s=5)

    assert received == b"" and after < 2


def test_a_slowloris_trickle_is_closed_at_the_head_timeout(gateway: GatewayProcess) -> None:
    trickle = b"GET /healthz HTTP/1.1\r\nx-a: " + b"a" * 50
    with socket.create_connection(("127.0.0.1", gateway.port)) as connection:
        started = time.monotonic()
        for byte in trickle:  # 8 s at 10 bytes a second, unless the server answers first
            if select.select([connection], [], [], 0.1)[0]:
                break
            connection.sendall(bytes([byte]))
        received, _ = read_until_closed(connection, limit_s=5)

    assert received.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 2


def test_an_idle_keep_alive_connection_is_closed(gateway: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port)) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        received, after = read_until_closed(connection, limit_s=5)

    # One answer, kept alive (HTTP/1.1), then closed once idle for keepalive_timeout_s.
    assert received.startswith(b"HTTP/1.1 200") and received.endswith(b'{"status":"ok"}')
    assert 0.4 < after < 2


def test_a_tenant_past_its_concurrency_gets_429_and_others_are_served(
    gateway: GatewayProcess,
) -> None:
    def ask(key: str) -> httpx.Response:
        return httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json=BODY,
            headers={"authorization": f"Bearer {key}"},
            timeout=20,
        )

    with ThreadPoolExecutor(max_workers=6) as pool:
        alice = [pool.submit(ask, KEY_A) for _ in range(4)]
        time.sleep(0.3)
        bob = pool.submit(ask, KEY_B)
        statuses = sorted(f.result().status_code for f in alice)
        refused = next(f.result() for f in alice if f.result().status_code == 429)

    assert statuses == [200, 200, 429, 429]
    assert bob.result().status_code == 200
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "alice" in refused.json()["error"]["message"]
    # The slots are given back: alice is served again.
    assert ask(KEY_A).status_code == 200


def test_a_tenant_past_its_rate_gets_429_and_others_are_served(tmp_path: Path) -> None:
    config = {
        "server": {"max_requests_per_second_per_tenant": 1},
        "ledger": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
        "endpoints": [
            {"name": "slow", "kind": "python", "function": "tests.slow_classifier:slow_positive"}
        ],
        "routes": {"slow": {"labels": ["positive", "negative"], "tiers": [["slow"]]}},
        "tenants": [
            {"name": "alice", "api_key_sha256": [key_digest(KEY_A)]},
            {"name": "bob", "api_key_sha256": [key_digest(KEY_B)]},
        ],
    }
    gateway = GatewayProcess(config, tmp_path).start()

    def ask(key: str) -> httpx.Response:
        return httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json=BODY,
            headers={"authorization": f"Bearer {key}"},
            timeout=20,
        )

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            alice = [pool.submit(ask, KEY_A) for _ in range(3)]
            bob = pool.submit(ask, KEY_B)
            answers = [f.result() for f in alice]
        refused = next(a for a in answers if a.status_code == 429)

        # One second's worth (one request) passes; the rest are refused, not queued.
        assert sorted(a.status_code for a in answers) == [200, 429, 429]
        assert bob.result().status_code == 200
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert "max_requests_per_second_per_tenant" in refused.json()["error"]["message"]
        time.sleep(1.0)  # a token has come back
        assert ask(KEY_A).status_code == 200
    finally:
        gateway.stop()


def test_past_max_connections_requests_get_503(tmp_path: Path) -> None:
    config = {
        "server": {"max_connections": 3, "header_timeout_s": 30},
        "ledger": {"url": f"sqlite:///{tmp_path / 'ledger.db'}"},
    }
    gateway = GatewayProcess(config, tmp_path).start()
    try:
        idle = [socket.create_connection(("127.0.0.1", gateway.port)) for _ in range(3)]
        time.sleep(0.2)
        assert httpx.get(f"{gateway.url}/healthz", timeout=5).status_code == 503
        for connection in idle:
            connection.close()
        time.sleep(0.2)
        assert httpx.get(f"{gateway.url}/healthz", timeout=5).status_code == 200
    finally:
        gateway.stop()
