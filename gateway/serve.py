"""Serving the app with uvicorn, the same way everywhere: ``coe serve``, ``coe demo`` and the tests.

``server_config`` is the one place uvicorn's options are chosen; ``serve_in_background`` runs the
gateway on a free loopback port for a block (the demo, tests over real HTTP); ``ProcessServer`` is
uvicorn's server for a process that only serves (``coe serve``, each of its workers).

uvicorn's httptools protocol is replaced by one with a cap on the size of a request's head.

httptools (llhttp) buffers a request line and headers of any size: one client could send megabytes
of headers, or a URL whose fragments uvicorn joins by repeated concatenation, and the gateway would
hold them all before the app could refuse. This protocol counts the bytes of each request's head
as they arrive and answers 431 once they pass ``MAX_HEAD_BYTES``, closing the connection. The
body is not counted here: ``BodyLimitMiddleware`` bounds it.

It also times each head: a connection whose request line and headers are not all in within
``server.header_timeout_s`` of its opening (or of the first byte of a later request) is closed
(slowloris: hundreds of connections each trickling a header byte a second). A client that sent part
of a head gets a 408 first. Idle keep-alive connections are uvicorn's (``timeout_keep_alive``), and
so is the connection cap (``limit_concurrency``: past it, every new request is answered 503 until
connections close; the two timeouts are what close abusive ones).
"""

from __future__ import annotations

import functools
import gc
import math
import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.api import create_app
from gateway.errors import CoEError

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncIterator
    from pathlib import Path

    from gateway.config import Settings
    from gateway.reload import ConfigSource

# As much as nginx allows by default (4 buffers of 8 KiB), doubled: OpenAI clients send ~1 KiB.
MAX_HEAD_BYTES = 64 * 1024
# As ServerConfig.header_timeout_s, for the protocol made without a config (bench variants).
DEFAULT_HEADER_TIMEOUT_S = 10.0
_END_OF_HEAD = b"\r\n\r\n"
_STARTUP_TIMEOUT_S = 30.0
_POLL_S = 0.02


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self, *args: Any, header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        # The head's last bytes so far, so an end of head split across two reads is still seen.
        self._tail = b""
        self._header_timeout_s = header_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # The first head is due within the timeout of the connection's opening.
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            seen = self._tail + data
            end = seen.find(_END_OF_HEAD)
            if end == -1:
                self._head_bytes += len(data)
                self._tail = seen[-(len(_END_OF_HEAD) - 1) :]
                # A later request's head is due within the timeout of its first byte.
                if self._head_timer is None:
                    self._arm_head_timer()
            else:
                self._head_bytes += end + len(_END_OF_HEAD) - len(self._tail)
                self._in_head = False
                self._tail = b""
                self._cancel_head_timer()
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse()
                return
        super().data_received(data)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # The next request on this connection starts with its head.
        self._in_head = True
        self._head_bytes = 0

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self._header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        if self._head_bytes:
            self._answer_and_close(
                b"408 Request Timeout",
                f"the request line and headers did not arrive within "
                f"{self._header_timeout_s:g} s",
                "request_timeout",
            )
        else:
            # Nothing was asked: a connection opened and left idle is just closed.
            self.transport.close()
        self._in_head = False

    def _refuse(self) -> None:
        self._answer_and_close(
            b"431 Request Header Fields Too Large",
            f"the request line and headers are larger than {MAX_HEAD_BYTES} bytes",
            "request_header_fields_too_large",
        )
        self._in_head = False

    def _answer_and_close(self, status: bytes, message: str, code: str) -> None:
        self._cancel_head_timer()
        body = orjson.dumps(
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": code,
                }
            }
        )
        head = (
            b"HTTP/1.1 " + status + b"\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n"
        )
        self.transport.write(head + body)
        self.transport.close()


def server_config(
    settings: Settings,
    *,
    log_level: str = "warning",
    source: ConfigSource | None = None,
    version: str | None = None,
    reload_on_sighup: bool = False,
    metrics_dir: Path | None = None,
    **overrides: Any,
) -> uvicorn.Config:
    """uvicorn's config for the gateway built from ``settings``, with the bounded protocol;
    ``source``, ``version`` and ``reload_on_sighup`` go to ``create_app`` (config reloads), and
    so does ``metrics_dir`` (one worker of several: gateway.workers)."""
    options: dict[str, Any] = {
        "host": settings.server.host,
        "port": settings.server.port,
        "log_level": log_level,
        "lifespan": "on",
        "access_log": False,
        # Request heads are capped (431 past MAX_HEAD_BYTES) and timed (header_timeout_s);
        # httptools alone buffers any size for any time.
        "http": functools.partial(
            BoundedHttpToolsProtocol, header_timeout_s=settings.server.header_timeout_s
        ),
        # Abusive clients: idle keep-alive connections close; past max_connections open
        # connections (or requests in flight) uvicorn answers 503.
        "timeout_keep_alive": settings.server.keepalive_timeout_s,
        "limit_concurrency": settings.server.max_connections,
        # SIGTERM: stop accepting, let requests in flight finish this long, then the lifespan
        # flushes the ledger. uvicorn counts whole seconds.
        "timeout_graceful_shutdown": math.ceil(settings.server.drain_timeout_s),
    }
    options.update(overrides)
    app = create_app(
        settings,
        source=source,
        version=version,
        reload_on_sighup=reload_on_sighup,
        metrics_dir=metrics_dir,
    )
    return uvicorn.Config(app, **options)


class ProcessServer(uvicorn.Server):
    """uvicorn's server, freezing the process's heap out of the cyclic garbage collector once the
    app has started, right before it serves.

    What exists then (modules, the app and its routes' schemas, the config's providers, the
    ledger) lives as long as the process, yet each of Python's full collections walked all of it:
    a pause of tens of milliseconds for every request in flight, which Python starts by itself
    under load (bench/RESULTS.md, "Garbage collector"). Frozen objects are still freed when their
    last reference goes; only a reference cycle among them that the first config reload drops is
    kept. Not for ``serve_in_background``: the demo and the tests share their process with other
    work."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        gc.freeze()


def loopback_socket() -> socket.socket:
    """A socket bound to a free port on 127.0.0.1, for a server to listen on."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    return listener


@asynccontextmanager
async def serve_in_background(settings: Settings) -> AsyncIterator[str]:
    """Run the gateway on a free loopback port for the block; yields its base URL (``…/v1``)."""
    listener = loopback_socket()
    port = listener.getsockname()[1]
    server = uvicorn.Server(server_config(settings))
    stopped = anyio.Event()
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(_serve, server, listener, stopped)
            # uvicorn offers a flag, not an event, for "listening".
            for _ in range(int(_STARTUP_TIMEOUT_S / _POLL_S)):
                if server.started or stopped.is_set():
                    break
                await anyio.sleep(_POLL_S)
            if not server.started:
                raise CoEError("the gateway did not start")
            try:
                yield f"http://127.0.0.1:{port}/v1"
            finally:
                server.should_exit = True
    finally:
        listener.close()


async def _serve(server: uvicorn.Server, listener: socket.socket, stopped: anyio.Event) -> None:
    try:
        await server.serve(sockets=[listener])
    finally:
        stopped.set()
