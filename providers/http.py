"""The one HTTP client every HTTP adapter shares: pooled, kept alive, HTTP/1.1.

Its owner (the app's lifespan) makes it once and closes it once; adapters receive it. The
transport is a parameter so the hot path can swap httpx's own transport for aiohttp's (measured:
faster on loopback) and unit tests keep respx, which mocks httpx's own transport.
"""

from __future__ import annotations

import httpx

from providers._constants import (
    CLIENT_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    KEEPALIVE_EXPIRY_S,
    POOL_MAX_CONNECTIONS,
    POOL_MAX_KEEPALIVE_CONNECTIONS,
)

POOL_LIMITS = httpx.Limits(
    max_connections=POOL_MAX_CONNECTIONS,
    max_keepalive_connections=POOL_MAX_KEEPALIVE_CONNECTIONS,
    keepalive_expiry=KEEPALIVE_EXPIRY_S,
)


def make_http_client(transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The shared client; with no transport, httpx's own with the pool limits above."""
    return httpx.AsyncClient(
        transport=transport,
        limits=POOL_LIMITS,
        timeout=httpx.Timeout(CLIENT_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        http1=True,
        http2=False,
        follow_redirects=False,
    )


def make_aiohttp_transport() -> httpx.AsyncBaseTransport:
    """httpx's interface over an aiohttp connection pool with the same limits (package
    httpx-aiohttp, imported only when asked for)."""
    from httpx_aiohttp import AiohttpTransport

    return AiohttpTransport(limits=POOL_LIMITS)
