"""The aiohttp transport on the gateway's hot path: every upstream failure surfaces as the httpx
error httpx's own transport would raise, so adapters never let an aiohttp exception escape."""

from __future__ import annotations

import gzip
import socket
from collections.abc import AsyncIterator, Callable

import aiohttp
import anyio
import anyio.abc
import httpx
import orjson
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from providers import CallRequest, OpenAIProvider, RetryPolicy
from providers._aiohttp import transport_error
from providers.endpoint import EndpointConfig
from providers.http import POOL_LIMITS, SharedClient, make_aiohttp_transport, make_http_client

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(initial_delay_s=0.001, max_delay_s=0.002)
REQUEST = CallRequest(messages=({"role": "user", "content": "Great film!"},), request_id="r-1")
ANSWER = orjson.dumps({"choices": [{"index": 0, "message": {"content": "positive"}}]})

Reply = Callable[[bytes], bytes | None]  # the request's head -> raw bytes to send, None: hang up
HOLD = b""  # a reply that never comes


def ok(_: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)


class ScriptedServer:
    """Reads one request per exchange and answers with ``reply``'s raw bytes."""

    def __init__(self, port: int) -> None:
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.reply: Reply = ok
        self.requests = 0

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        reader = BufferedByteReceiveStream(stream)
        async with stream:
            try:
                while True:
                    head = await reader.receive_until(b"\r\n\r\n", 65536)
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    if length:
                        await reader.receive_exactly(length)
                    self.requests += 1
                    raw = self.reply(head)
                    if raw is None:
                        return
                    if raw == HOLD:
                        await anyio.sleep_forever()
                    await stream.send(raw)
                    if b"connection: close" in raw:
                        return
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
                return


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    scripted = ScriptedServer(listener.extra(anyio.abc.SocketAttribute.local_port))
    async with listener, anyio.create_task_group() as group:
        group.start_soon(listener.serve, scripted.handle)
        yield scripted
        group.cancel_scope.cancel()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client(make_aiohttp_transport()) as shared:
        yield shared


def provider(client: httpx.AsyncClient, base_url: str) -> OpenAIProvider:
    endpoint = EndpointConfig(name="e", base_url=base_url, model="m", max_retries=1)
    return OpenAIProvider(endpoint, client, retry_policy=FAST)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (aiohttp.ConnectionTimeoutError(), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError(), httpx.ReadTimeout),
        (TimeoutError(), httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError("cut short"), httpx.RemoteProtocolError),
        (aiohttp.ClientConnectionResetError("reset"), httpx.WriteError),
        (aiohttp.ClientOSError(104, "reset by peer"), httpx.ReadError),
        (aiohttp.InvalidURL("nope://"), httpx.UnsupportedProtocol),
        (aiohttp.UploadAbortedError("gone"), httpx.TransportError),
    ],
)
def test_aiohttp_errors_map_to_httpx_errors(
    raised: BaseException, expected: type[httpx.TransportError]
) -> None:
    mapped = transport_error(raised)
    assert type(mapped) is expected
    assert isinstance(mapped, httpx.RequestError)


def test_only_an_aiohttp_transport_is_used_directly() -> None:
    assert make_http_client(make_aiohttp_transport()).direct is not None
    assert make_http_client().direct is None
    assert make_http_client(httpx.AsyncHTTPTransport(limits=POOL_LIMITS)).direct is None


async def test_refused_connection_is_a_connect_error(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ConnectError):
        await client.post(f"http://127.0.0.1:{free_port()}/v1", content=b"{}")


async def test_refused_connection_is_an_error_record_after_retries(
    client: httpx.AsyncClient,
) -> None:
    record = await provider(client, f"http://127.0.0.1:{free_port()}/v1").complete(REQUEST)
    assert (record.status, record.attempts) == ("error", 2)
    assert record.error is not None and record.error.startswith("ConnectError")


async def test_hang_up_without_an_answer_is_retried(
    client: httpx.AsyncClient, server: ScriptedServer
) -> None:
    replies = iter([None, ok(b"")])
    server.reply = lambda _: next(replies)
    record = await provider(client, server.base_url).complete(REQUEST)
    assert (record.status, record.text, record.attempts) == ("ok", "positive", 2)


async def test_garbage_instead_of_http_is_an_error_record(
    client: httpx.AsyncClient, server: ScriptedServer
) -> None:
    server.reply = lambda _: b"SSH-2.0-OpenSSH\r\n\r\n"
    record = await provider(client, server.base_url).complete(REQUEST)
    assert record.status == "error"
    assert record.error is not None and record.error.startswith("RemoteProtocolError")


async def test_a_body_cut_short_is_an_error_record(
    client: httpx.AsyncClient, server: ScriptedServer
) -> None:
    server.reply = lambda _: b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{"
    record = await provider(client, server.base_url).complete(REQUEST)
    assert record.status == "error"


async def test_read_timeout_is_honoured_on_the_direct_path(
    client: httpx.AsyncClient, server: ScriptedServer
) -> None:
    server.reply = lambda _: HOLD
    direct = client.direct if isinstance(client, SharedClient) else None
    assert direct is not None
    with pytest.raises(httpx.ReadTimeout):
        await direct.post(server.base_url, b"{}", {}, httpx.Timeout(None, read=0.05))


async def test_direct_post_answers_as_client_post_does(
    client: httpx.AsyncClient, server: ScriptedServer
) -> None:
    packed = gzip.compress(ANSWER)
    server.reply = lambda _: (
        b"HTTP/1.1 429 Too Many Requests\r\ncontent-encoding: gzip\r\nretry-after: 1\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(packed), packed)
    )
    assert isinstance(client, SharedClient) and client.direct is not None
    fast = await client.direct.post(server.base_url, b"{}", {}, httpx.Timeout(1.0))
    slow = await client.post(server.base_url, content=b"{}")
    for response in (fast, slow):
        assert response.status_code == 429
        assert response.headers["retry-after"] == "1"
        assert response.content == ANSWER
