"""The one HTTP client every HTTP adapter shares: pooled, kept alive, HTTP/1.1.

Its owner (the app's lifespan) makes it once and closes it once; adapters receive it. The
transport is a parameter: the gateway's hot path runs httpx's interface over an aiohttp
connection pool (``AiohttpTransport``; bench/RESULTS.md has the figures that chose it), while unit
tests keep respx, which mocks httpx's own transport.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import httpx

from providers._constants import (
    CLIENT_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    KEEPALIVE_EXPIRY_S,
    POOL_MAX_CONNECTIONS,
    POOL_MAX_KEEPALIVE_CONNECTIONS,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

POOL_LIMITS = httpx.Limits(
    max_connections=POOL_MAX_CONNECTIONS,
    max_keepalive_connections=POOL_MAX_KEEPALIVE_CONNECTIONS,
    keepalive_expiry=KEEPALIVE_EXPIRY_S,
)


@runtime_checkable
class DirectTransport(Protocol):
    """A transport that can also post without httpx's client layer (request building, auth,
    redirects, cookies), which costs about as much CPU as a loopback exchange itself
    (bench/RESULTS.md): same response and same errors as ``client.post``, but no ``request``
    on the response."""

    async def post(
        self, url: str, content: bytes, headers: Mapping[str, str], socket_timeouts: httpx.Timeout
    ) -> httpx.Response: ...


class SharedClient(httpx.AsyncClient):
    """httpx's client, which knows its transport when that is a ``DirectTransport``
    (``direct``), so adapters can post through it on the hot path."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None, **options: Any) -> None:
        super().__init__(transport=transport, **options)
        self.direct = transport if isinstance(transport, DirectTransport) else None


def make_http_client(transport: httpx.AsyncBaseTransport | None = None) -> SharedClient:
    """The shared client; with no transport, httpx's own with the pool limits above."""
    return SharedClient(
        transport,
        limits=POOL_LIMITS,
        timeout=httpx.Timeout(CLIENT_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        http1=True,
        http2=False,
        follow_redirects=False,
    )


def make_aiohttp_transport() -> httpx.AsyncBaseTransport:
    """httpx's interface over an aiohttp connection pool with the same limits: the gateway's
    upstream transport, about half the CPU per call of httpx's own, and no pool scan that grows
    with the connections held (bench/RESULTS.md). Imported on use: commands that make no
    upstream calls do not load aiohttp."""
    from providers._aiohttp import AiohttpTransport

    return AiohttpTransport(POOL_LIMITS)
