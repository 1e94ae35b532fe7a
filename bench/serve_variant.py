"""``coe serve`` with the knobs an A/B measurement needs, for bench/run.py's ``--variant``.

    python -m bench.serve_variant --config FILE [--transport httpx|aiohttp|aiohttp-via-client]
        [--sqlite-synchronous full|normal] [--loop uvloop|asyncio] [--http httptools|h11]
        [--metrics cached|labels] [--route plain|fastapi] [--fastapi-telemetry off|on]
        [--single-call inline|race] [--ledger-commit thread|on-loop] [--server uvicorn|granian]
        [--gc-freeze after-start|none]

Only for measuring: it builds the same app as ``coe serve`` (``create_app``, the same HTTP
protocol class) and changes one thing at a time, so a figure can say what one choice is worth.
``--sqlite-synchronous normal`` swaps the ledger's SQLite connection pragma (WAL with
``synchronous=NORMAL`` commits without an fsync; a power cut may lose the last commits, a crash
of the process does not). ``--metrics labels`` looks every labelled metric up through
prometheus-client's ``labels`` on each observation, as before ``gateway.metrics`` kept them.

The hot-path changes of issue 15 each have a knob that puts the code back as it was, so one run
measures both sides: ``--route fastapi`` serves the chat route through FastAPI's request handler
(dependency solving, exit stacks) instead of ``PlainRoute``; ``--fastapi-telemetry on`` turns
FastAPI's OpenTelemetry bridge back on (its check for a global provider runs per request);
``--single-call race`` runs a one-endpoint tier in a task group with a stream, as tiers of
several endpoints are. ``--ledger-commit on-loop`` commits each ledger batch on the event loop
instead of in a worker thread: never a configuration (the loop would block on every fsync), it
measures what the hop to the thread costs. ``--server granian`` serves the same app with granian
(pip install granian; Rust HTTP, one worker, uvloop, access log off, the config's header timeout)
instead of uvicorn. ``--without ledger,metrics`` answers without writing the request's ledger
rows (the writer still runs) and without observing its metrics: never a configuration (calls would
go unbilled), it measures what each part costs a request end to end. ``--gc-freeze none`` serves
without freezing the heap after start (``gateway.serve.ProcessServer``), as before.
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import httpx
import uvicorn
from fastapi.routing import APIRoute, request_response

from gateway import metrics
from gateway.api import chat, create_app
from gateway.api.plain_route import PlainRoute
from gateway.config import load_settings
from gateway.engine import CascadeEngine
from gateway.ledger import _sqlite, _writer
from gateway.logs import configure_logging
from gateway.serve import BoundedHttpToolsProtocol, ProcessServer
from providers.http import POOL_LIMITS, make_aiohttp_transport

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from fastapi import FastAPI

# How the granian variant's worker process finds its config: granian imports the app itself.
_CONFIG_ENV = "COE_BENCH_VARIANT_CONFIG"
_LOG_LEVEL_ENV = "COE_BENCH_VARIANT_LOG_LEVEL"
_T = TypeVar("_T")


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
    parser.add_argument("--gc-freeze", choices=["after-start", "none"], default="after-start",
                        help="none: the heap is not frozen after start, as before")
    parser.add_argument("--gc-threshold", type=int, default=0,
                        help="the collector's first threshold (Python's default: 700)")
    parser.add_argument("--route", choices=["plain", "fastapi"], default="plain",
                        help="fastapi: the chat route through FastAPI's request handler")
    parser.add_argument("--fastapi-telemetry", choices=["off", "on"], default="off")
    parser.add_argument("--single-call", choices=["inline", "race"], default="inline",
                        help="race: a one-endpoint tier in a task group, as before")
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    parser.add_argument("--ledger-commit", choices=["thread", "on-loop"], default="thread",
                        help="on-loop: the batch's commit blocks the event loop (measures what "
                        "the hop to a worker thread costs; never shipped)")
    parser.add_argument("--without", type=_parts, default=frozenset(),
                        help="comma-separated, of ledger, metrics: skip that part of each "
                        "request (measures what it costs; never shipped)")
    args = parser.parse_args()
    if "ledger" in args.without:
        _writer.BatchingLedger.record = _record_nothing  # type: ignore[method-assign,assignment]
    if "metrics" in args.without:
        metrics.Metrics.observe = _observe_nothing  # type: ignore[method-assign,assignment]
    if args.ledger_commit == "on-loop":
        _writer.anyio = _OnLoop()  # type: ignore[attr-defined,assignment]
    if args.route == "fastapi":
        # Each PlainRoute of the chat router served as a plain APIRoute serves it.
        for route in chat.router.routes:
            if isinstance(route, PlainRoute):
                route.app = request_response(APIRoute.get_route_handler(route))
    if args.single_call == "race":
        CascadeEngine._single = CascadeEngine._race  # type: ignore[method-assign]
    if args.server == "granian":
        _serve_granian(args)
        return
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
    app = create_app(settings, http_transport=transport)
    if args.fastapi_telemetry == "on":
        _fastapi_telemetry_on(app)
    server = ProcessServer if args.gc_freeze == "after-start" else uvicorn.Server
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=args.log_level,
        log_config=None,
        access_log=False,
        loop=args.loop,
        http=_protocol(args.http),
    )
    server(config).run()


_PARTS = frozenset({"ledger", "metrics"})


def _parts(text: str) -> frozenset[str]:
    parts = frozenset(p for p in text.split(",") if p)
    if not parts <= _PARTS:
        raise argparse.ArgumentTypeError(f"not one of {sorted(_PARTS)}: {sorted(parts - _PARTS)}")
    return parts


async def _record_nothing(
    _ledger: _writer.BatchingLedger, _outcome: Any, *, reservation: Any = None
) -> None:
    del reservation


def _observe_nothing(_metrics: metrics.Metrics, _outcome: Any) -> None:
    pass


class _OnLoop:
    """``anyio`` for the ledger writer's module, with ``to_thread.run_sync`` run in place."""

    def __init__(self) -> None:
        self.to_thread = self

    def __getattr__(self, name: str) -> Any:
        return getattr(anyio, name)

    async def run_sync(self, work: Callable[..., _T], *args: Any) -> _T:
        return work(*args)


def _fastapi_telemetry_on(app: FastAPI) -> None:
    # FastAPI's bridge reads this dict on every request; the app turned it off at creation.
    app._telemetry.update({"tracing": True, "metrics": True, "logs": True})


def _serve_granian(args: argparse.Namespace) -> None:
    """The shipped app under granian: one worker process, as ``coe serve`` has by default."""
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    settings = load_settings(args.config)
    os.environ[_CONFIG_ENV] = args.config
    os.environ[_LOG_LEVEL_ENV] = args.log_level
    Server(
        "bench.serve_variant:granian_app",
        address=settings.server.host,
        port=settings.server.port,
        interface=Interfaces.ASGI,
        workers=1,
        loop=Loops.uvloop,
        factory=True,
        log_level=LogLevels(args.log_level),
        log_access=False,
        # The slowloris guard of gateway.serve: a head due within the header timeout.
        http1_settings=HTTP1Settings(
            header_read_timeout=int(settings.server.header_timeout_s * 1000)
        ),
    ).serve()


def granian_app() -> FastAPI:
    """The app for granian's worker (``factory``), from the config the variant was given."""
    configure_logging(os.environ.get(_LOG_LEVEL_ENV, "warning"))
    return create_app(load_settings(os.environ[_CONFIG_ENV]))


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
    return BoundedHttpToolsProtocol if name == "serve" else name


if __name__ == "__main__":
    main()
