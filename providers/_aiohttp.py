"""httpx's transport interface over an aiohttp connection pool: the gateway's upstream hot path.

Imported when the app makes its client (``providers.http.make_aiohttp_transport``), not when the
package is: commands that call no upstream never load aiohttp. The pool holds at most
``max_connections`` and drops a connection idle for ``keepalive_expiry``; aiohttp has no separate
cap on idle connections.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import aiohttp
import httpx

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

_HTTP11 = b"HTTP/1.1"


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends with aiohttp and reads each answer whole.

    Every failure of the exchange is raised as the ``httpx.TransportError`` httpx's own
    transport would raise for it, so adapters and retry rules see one vocabulary and an
    upstream's trouble never escapes as an aiohttp exception. Its pool takes an idle connection
    in constant time (httpcore's scans every pooled connection on every request).
    """

    def __init__(self, limits: httpx.Limits) -> None:
        self._limits = limits
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use: an aiohttp session belongs to the event loop it was made in.
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry or 0,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # httpx decodes by content-encoding, as with its own transport
        )
        return self._session

    def _timeout(self, connect: float | None, read: float | None) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get((connect, read))
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
            self._timeouts[connect, read] = timeout
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        wanted = request.extensions.get("timeout", {})
        return await self._send(
            request.method,
            str(request.url),
            request.headers.multi_items(),
            await request.aread() or None,
            self._timeout(wanted.get("connect"), wanted.get("read")),
        )

    async def post(
        self, url: str, content: bytes, headers: Mapping[str, str], socket_timeouts: httpx.Timeout
    ) -> httpx.Response:
        """What ``client.post(url, content=…, headers=…, timeout=…)`` answers, without httpx's
        client layer (request building, auth, redirects, cookies), which costs about as much
        CPU as the exchange itself (bench/RESULTS.md). The response has no ``request``."""
        limits = self._timeout(socket_timeouts.connect, socket_timeouts.read)
        return await self._send("POST", url, headers, content, limits)

    async def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | list[tuple[str, str]],
        content: bytes | None,
        socket_timeouts: aiohttp.ClientTimeout,
    ) -> httpx.Response:
        session = self._session or self._open()
        with _mapped_errors():
            async with session.request(
                method,
                url,
                headers=headers,
                data=content,
                allow_redirects=False,
                timeout=socket_timeouts,
            ) as response:
                body = await response.read()
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            content=body,
            extensions={"http_version": _HTTP11, "reason_phrase": (response.reason or "").encode()},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


# aiohttp's errors nest (a connect timeout is also a TimeoutError and a connection error), so the
# most specific come first. Anything else aiohttp or the socket raises is a plain TransportError.
_Raised = type[BaseException] | tuple[type[BaseException], ...]
_ERRORS: tuple[tuple[_Raised, type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (TimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (
        (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError),
        httpx.RemoteProtocolError,
    ),
    ((aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError), httpx.UnsupportedProtocol),
    (aiohttp.ClientConnectionResetError, httpx.WriteError),
    (OSError, httpx.ReadError),
)


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise transport_error(exc) from exc


def transport_error(exc: BaseException) -> httpx.TransportError:
    """The httpx error that httpx's own transport raises for the failure aiohttp reported."""
    message = str(exc) or type(exc).__name__
    for raised, error in _ERRORS:
        if isinstance(exc, raised):
            return error(message)
    return httpx.TransportError(message)
