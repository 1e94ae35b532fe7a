"""``coe serve`` with the knobs an A/B measurement needs, for bench/run.py's ``--variant``.

    python -m bench.serve_variant --config FILE [--transport httpx|aiohttp|aiohttp-via-client]
        [--sqlite-synchronous full|normal] [--loop uvloop|asyncio] [--http httptools|h11]
        [--metrics cached|labels]

Only for measuring: it builds the same app as ``coe serve`` (``create_app``, the same HTTP
protocol class) and changes one thing at a time, so a figure can say what one choice is worth.
``--sqlite-synchronous normal`` swaps the ledger's SQLite connection pragma (WAL with
``synchronous=NORMAL`` commits without an fsync; a power cut may lose the last commits, a crash
of the process does not). ``--metrics labels`` looks every labelled metric up through
prometheus-client's ``labels`` on each observation, as before ``gateway.metrics`` kept them.
"""

from __future__ import annotations

import argparse
import gc
import sqlite3
from typing import TYPE_CHECKING, Any

import httpx
import uvicorn

from gateway import metrics
from gateway.api import create_app
from gateway.config import load_settings
from gateway.ledger import _sqlite
from gateway.logs import configure_logging
from providers.http import POOL_LIMITS, make_aiohttp_transport

if TYPE_CHECKING:
    from pathlib import Path


def _connect_normal(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument(
        "--transport", choices=["default", "httpx", "aiohttp", "aiohttp-via-client"],
        default="default", help="aiohttp-via-client: aiohttp's pool behind httpx's client layer",
    )
    parser.add_argument("--sqlite-synchronous", choices=["full", "normal"], default="full")
    parser.add_argument("--loop", choices=["uvloop", "asyncio", "auto"], default="auto")
    parser.add_argument("--http", choices=["serve", "httptools", "h11"], default="serve",
                        help="serve: the protocol `coe serve` uses")
    parser.add_argument("--metrics", choices=["cached", "labels"], default="cached")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() before serving: start-up objects leave the collector")
    parser.add_argument("--gc-threshold", type=int, default=0,
                        help="the collector's first threshold (Python's default: 700)")
    args = parser.parse_args()
    settings = load_settings(args.config)
    if args.sqlite_synchronous == "normal":
        _sqlite._connect = _connect_normal
    if args.metrics == "labels":
        metrics._Children.__call__ = _labels_every_time  # type: ignore[method-assign]
    transport: httpx.AsyncBaseTransport | None = None
    if args.transport == "aiohttp":
        transport = make_aiohttp_transport()
    elif args.transport == "aiohttp-via-client":
        transport = _ViaClientLayer(make_aiohttp_transport())
    elif args.transport == "httpx":
        transport = httpx.AsyncHTTPTransport(limits=POOL_LIMITS)
    configure_logging(args.log_level)
    if args.gc_threshold:
        gc.set_threshold(args.gc_threshold, *gc.get_threshold()[1:])
    if args.gc_freeze:
        gc.freeze()
    uvicorn.run(
        create_app(settings, http_transport=transport),
        host=settings.server.host,
        port=settings.server.port,
        log_level=args.log_level,
        log_config=None,
        access_log=False,
        loop=args.loop,
        http=_protocol(args.http),
    )


def _labels_every_time(self: metrics._Children[Any], *values: str) -> Any:
    return self._metric.labels(*values)


class _ViaClientLayer(httpx.AsyncBaseTransport):
    """The transport without its direct ``post``, so calls go through httpx's client layer."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _protocol(name: str) -> Any:
    if name != "serve":
        return name
    from gateway.serve import BoundedHttpToolsProtocol

    return BoundedHttpToolsProtocol


if __name__ == "__main__":
    main()
