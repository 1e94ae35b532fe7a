"""The shared client over a real loopback socket, with httpx's transport and with aiohttp's.

These check that the aiohttp transport behaves as the adapters need: keep-alive, httpx timeouts,
connection errors mapped to httpx's, cancellation.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.abc
import httpx
import orjson
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from providers import CallRecord, CallRequest, OpenAIProvider, RetryPolicy, make_http_client
from providers.endpoint import EndpointConfig
from providers.http import POOL_LIMITS, make_aiohttp_transport

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(initial_delay_s=0.001, max_delay_s=0.002)
REQUEST = CallRequest(messages=({"role": "user", "content": "Great film!"},), request_id="r-7")
ANSWER = orjson.dumps(
    {"id": "c1", "choices": [{"index": 0, "message": {"role": "assistant", "content": "positive"}}]}
)


class LoopbackServer:
    """A minimal keep-alive HTTP/1.1 server: it answers every POST with one completion, except
    paths containing ``/hold/``, which it never answers."""

    def __init__(self, port: int) -> None:
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.connections = 0
        self.request_headers: list[dict[str, str]] = []
        self.arrived = anyio.Event()
        self._never = anyio.Event()

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        reader = BufferedByteReceiveStream(stream)
        async with stream:
            await self._serve(stream, reader)

    async def _serve(
        self, stream: anyio.abc.SocketStream, reader: BufferedByteReceiveStream
    ) -> None:
        try:
            while True:
                head = (await reader.receive_until(b"\r\n\r\n", 65536)).decode("latin-1")
                request_line, *lines = head.split("\r\n")
                pairs = (line.split(":", 1) for line in lines)
                headers = {k.strip().lower(): v.strip() for k, v in pairs}
                await reader.receive_exactly(int(headers.get("content-length", "0")))
                self.request_headers.append(headers)
                self.arrived.set()
                if "/hold/" in request_line:
                    await self._never.wait()
                await stream.send(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)
                )
        except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
            return


@pytest.fixture
async def server() -> AsyncIterator[LoopbackServer]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    loopback = LoopbackServer(listener.extra(anyio.abc.SocketAttribute.local_port))
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, loopback.handle)
        yield loopback
        group.cancel_scope.cancel()


@pytest.fixture(params=["httpx", "aiohttp"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    transport = None
    if request.param == "aiohttp":
        pytest.importorskip("httpx_aiohttp")
        transport = make_aiohttp_transport()
    async with make_http_client(transport) as shared:
        yield shared


def provider(client: httpx.AsyncClient, base_url: str, **fields: Any) -> OpenAIProvider:
    config = {"name": "e", "base_url": base_url, "model": "m", "max_retries": 1, **fields}
    return OpenAIProvider(EndpointConfig(**config), client, retry_policy=FAST)


def test_client_has_generous_pool_limits() -> None:
    assert POOL_LIMITS.max_connections is not None and POOL_LIMITS.max_connections >= 1000
    assert POOL_LIMITS.max_keepalive_connections is not None
    assert POOL_LIMITS.max_keepalive_connections >= 100


async def test_calls_reuse_one_kept_alive_connection(
    client: httpx.AsyncClient, server: LoopbackServer
) -> None:
    upstream = provider(client, server.base_url)
    records = [await upstream.complete(REQUEST) for _ in range(3)]
    assert [(r.status, r.text) for r in records] == [("ok", "positive")] * 3
    assert server.connections == 1
    assert server.request_headers[0]["x-request-id"] == "r-7"


async def test_httpx_read_timeout_is_honoured(
    client: httpx.AsyncClient, server: LoopbackServer
) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await client.post(f"{server.base_url}/hold/x", content=b"{}", timeout=httpx.Timeout(0.05))


async def test_endpoint_timeout_over_a_socket(
    client: httpx.AsyncClient, server: LoopbackServer
) -> None:
    record = await provider(client, f"{server.base_url}/hold", timeout_s=0.05).complete(REQUEST)
    assert (record.status, record.attempts) == ("timeout", 1)


async def test_refused_connection_is_retried_then_fails(client: httpx.AsyncClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    record = await provider(client, f"http://127.0.0.1:{port}/v1").complete(REQUEST)
    # httpx reports ConnectError (status "error"); httpx-aiohttp 0.2 maps aiohttp's connector
    # error to ConnectTimeout (status "timeout"). Either way it was retried, and failed.
    assert record.status in ("error", "timeout")
    assert record.attempts == 2


async def test_cancellation_leaves_the_client_usable(
    client: httpx.AsyncClient, server: LoopbackServer
) -> None:
    records: list[CallRecord] = []

    async def held_call() -> None:
        records.append(await provider(client, f"{server.base_url}/hold").complete(REQUEST))

    async with anyio.create_task_group() as group:
        group.start_soon(held_call)
        await server.arrived.wait()
        group.cancel_scope.cancel()
    assert records == []
    record = await provider(client, server.base_url).complete(REQUEST)
    assert record.status == "ok"
