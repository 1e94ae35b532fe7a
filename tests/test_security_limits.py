"""Size limits and the default bind, on a real ``coe serve`` process.

Request heads (request line and headers) are capped at 64 KiB by the gateway's httptools protocol
(431); bodies at ``server.max_body_bytes`` (413), also when they come chunked without a length.
The default bind is loopback, and a public bind without tenants does not start.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import tomli_w

from gateway.config import ServerConfig
from gateway.serve import MAX_HEAD_BYTES
from tests.gateway_process import GatewayProcess


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("limits")
    config = {
        "ledger": {"url": f"sqlite:///{folder / 'ledger.db'}"},
        "server": {"max_body_bytes": 4096},
    }
    process = GatewayProcess(config, folder).start()
    yield process
    process.stop()


def raw_exchange(gateway: GatewayProcess, request: bytes) -> bytes:
    """Send raw bytes, return the first bytes of the answer ("" if the connection was reset)."""
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as connection:
        try:
            connection.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the server while the client still sent: its answer may be in
        try:
            return connection.recv(200)
        except ConnectionResetError:
            return b""


def get_with_headers(gateway: GatewayProcess, headers: bytes) -> bytes:
    return raw_exchange(gateway, b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + headers + b"\r\n")


def test_ordinary_headers_of_a_few_kib_pass(gateway: GatewayProcess) -> None:
    headers = b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 200) for i in range(40))

    assert get_with_headers(gateway, headers).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    "headers",
    [
        b"x-big: " + b"a" * (MAX_HEAD_BYTES + 1) + b"\r\n",
        b"".join(b"x-h%d: v\r\n" % i for i in range(MAX_HEAD_BYTES // 8)),
    ],
    ids=["one-huge-header", "many-headers"],
)
def test_a_head_over_the_limit_is_refused_with_431(
    gateway: GatewayProcess, headers: bytes
) -> None:
    answer = get_with_headers(gateway, headers)

    assert answer.startswith(b"HTTP/1.1 431"), answer
    assert gateway.healthy()


def test_a_huge_url_is_refused_with_431(gateway: GatewayProcess) -> None:
    answer = raw_exchange(
        gateway, b"GET /healthz?" + b"q" * (MAX_HEAD_BYTES * 2) + b" HTTP/1.1\r\nhost: x\r\n\r\n"
    )

    assert answer.startswith(b"HTTP/1.1 431"), answer


def test_megabytes_of_headers_are_cut_off_not_buffered(gateway: GatewayProcess) -> None:
    answer = get_with_headers(gateway, b"x-big: " + b"a" * 8_000_000 + b"\r\n")

    # Either the 431 arrives before the client finishes sending, or the reset does.
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431")
    assert gateway.memory_kib() < 200_000
    assert gateway.healthy()


def test_the_limit_counts_each_request_of_a_kept_alive_connection_afresh(
    gateway: GatewayProcess,
) -> None:
    header = {"x-pad": "p" * (MAX_HEAD_BYTES // 4)}
    with httpx.Client(base_url=gateway.url) as client:
        statuses = [client.get("/healthz", headers=header).status_code for _ in range(10)]

    assert statuses == [200] * 10


def test_a_chunked_body_over_the_limit_is_413(gateway: GatewayProcess) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "sentiment", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1024
        yield b'"}]}'

    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=chunks())

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_the_default_bind_is_loopback(gateway: GatewayProcess) -> None:
    assert ServerConfig().host == "127.0.0.1"
    # /proc/net/tcp lists listening sockets (state 0A) as hex "address:port", little-endian IPv4.
    listening = [
        line.split()[1]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if line.split()[3] == "0A"
    ]
    assert f"0100007F:{gateway.port:04X}" in listening
    assert f"00000000:{gateway.port:04X}" not in listening


def test_a_public_bind_without_tenants_does_not_start(tmp_path: Path) -> None:
    config = tmp_path / "open.toml"
    config.write_text(tomli_w.dumps({"ledger": {"url": f"sqlite:///{tmp_path / 'l.db'}"}}))

    result = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--host", "0.0.0.0"],
        capture_output=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert b"not loopback" in result.stderr
