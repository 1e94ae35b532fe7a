"""The hot path's layers in one process, each measured beside what it replaced or costs.

    python -m bench.hot_path [--requests 5000] [--rounds 3] [--cpu 1]

End to end (bench/run.py) one request costs a millisecond or two of CPU and a shared 2-core VM
moves that by ±10 % from one minute to the next, so a change worth 20–40 µs is lost in the noise
there. Here each layer runs alone, on one pinned CPU, ``--requests`` times per round, and rows are
interleaved round by round; the table gives the median over rounds of the CPU time per request
(``time.process_time``, the whole process: worker threads included). The layers:

- ``asgi``: the gateway's middleware and routing around an endpoint that reads the body and
  answers, driven as an ASGI app without sockets: FastAPI as before (its request handler, its
  OpenTelemetry bridge on), with the bridge off, and with the chat route a ``PlainRoute`` (what
  ships), against a bare ASGI callable.
- ``engine``: ``CascadeEngine.run`` on a one-endpoint route whose provider answers at once: the
  call made in the request's task (what ships) or raced in a task group as before.
- ``ledger hop``: ``anyio.to_thread.run_sync`` of a function that does nothing, with the event
  loop idle 0.5 ms between hops so the worker thread sleeps as it does at 200 requests/s; against
  calling it in place. What handing a batch to the ledger's writer thread costs.
- ``request log``: the per-request ``coe.request`` line at ``info`` (JSON, to /dev/null) against
  the same call with the level at ``warning``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from statistics import median
from typing import TYPE_CHECKING, Any

import anyio
import uvloop
from fastapi import APIRouter, FastAPI
from starlette.responses import Response

from gateway.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from gateway.api.plain_route import PlainRoute
from gateway.config import RouteConfig
from gateway.engine import CascadeEngine
from gateway.logs import JsonFormatter
from gateway.plan import CoEOverrides, make_plan
from providers.base import CallRecord, CallRequest, Provider

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.requests import Request
    from starlette.types import ASGIApp, Message

BODY = b'{"model":"plain","messages":[{"role":"user","content":"Great film!"}],"max_tokens":4}'
PATH = "/v1/chat/completions"


async def _endpoint(request: Request) -> Response:
    await request.body()
    return Response(b'{"ok":true}', media_type="application/json")


def _app(*, telemetry: bool, plain: bool) -> FastAPI:
    """The gateway's ASGI layers (app.py): its two middlewares, seven routers, one endpoint."""
    off = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(telemetry=None if telemetry else off)  # type: ignore[arg-type]
    app.add_middleware(BodyLimitMiddleware, max_bytes=1 << 20)
    app.add_middleware(RequestIdMiddleware)
    chat = APIRouter(route_class=PlainRoute) if plain else APIRouter()
    chat.post(PATH)(_endpoint)
    app.include_router(chat)
    for index in range(6):
        other = APIRouter()
        other.get(f"/v1/other{index}")(_endpoint)
        app.include_router(other)
    return app


async def _bare(_scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})


def _asgi_case(app: ASGIApp) -> Callable[[], Awaitable[None]]:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": PATH, "raw_path": PATH.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
        "headers": [(b"host", b"gateway"), (b"content-type", b"application/json"),
                    (b"content-length", str(len(BODY)).encode())],
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(_: Message) -> None:
        return None

    async def once() -> None:
        await app(dict(scope), receive, send)

    return once


class _Instant(Provider):
    name = "solo"

    async def complete(self, request: CallRequest) -> CallRecord:
        return CallRecord(endpoint=self.name, status="ok", text="positive",
                          tokens_in=len(request.messages), tokens_out=1)


def _engine_case(*, race: bool) -> Callable[[], Awaitable[None]]:
    route = RouteConfig.model_validate(
        {"labels": ["positive", "negative"], "threshold": 0.66, "tiers": [["solo"]]}
    )
    plan = make_plan("plain", route, CoEOverrides(), {})
    engine = CascadeEngine({"solo": _Instant()})
    if race:
        engine._single = engine._race  # type: ignore[method-assign]
    messages = [{"role": "user", "content": "Great film!"}]

    async def once() -> None:
        await engine.run(plan, messages, request_id="r", tenant="t")

    return once


def _hop_case(*, thread: bool) -> Callable[[], Awaitable[None]]:
    def nothing() -> None:
        return None

    async def once() -> None:
        if thread:
            await anyio.to_thread.run_sync(nothing)
        else:
            nothing()
        await asyncio.sleep(0.0005)  # idle, as between requests at 200/s: the thread sleeps

    return once


def _log_case(*, level: int) -> Callable[[], Awaitable[None]]:
    log = logging.getLogger(f"bench.hot_path.{level}")
    log.propagate = False
    handler = logging.StreamHandler(open(os.devnull, "w"))  # closed with the process
    handler.setFormatter(JsonFormatter())
    log.addHandler(handler)
    log.setLevel(level)
    extra = {"route": "plain", "tenant": "default", "status": "ok", "tier": 0,
             "latency_ms": 1.2, "config_version": "d7ab3199c1ee"}

    async def once() -> None:
        log.info("request", extra=extra)

    return once


CASES: list[tuple[str, str, Callable[[], Callable[[], Awaitable[None]]]]] = [
    ("asgi", "FastAPI as before: its request handler, OpenTelemetry bridge on",
     lambda: _asgi_case(_app(telemetry=True, plain=False))),
    ("asgi", "FastAPI's bridge off, its request handler",
     lambda: _asgi_case(_app(telemetry=False, plain=False))),
    ("asgi", "bridge off, chat route a PlainRoute (shipped)",
     lambda: _asgi_case(_app(telemetry=False, plain=True))),
    ("asgi", "a bare ASGI callable (the floor's)", lambda: _asgi_case(_bare)),
    ("engine", "one-endpoint tier raced in a task group (before)",
     lambda: _engine_case(race=True)),
    ("engine", "one-endpoint tier called in the request's task (shipped)",
     lambda: _engine_case(race=False)),
    ("ledger hop", "anyio.to_thread.run_sync, thread asleep between hops (shipped)",
     lambda: _hop_case(thread=True)),
    ("ledger hop", "called in place", lambda: _hop_case(thread=False)),
    ("request log", "coe.request line at info, JSON to /dev/null", lambda: _log_case(level=20)),
    ("request log", "level warning: the line is not written", lambda: _log_case(level=30)),
]


async def _measure(once: Callable[[], Awaitable[None]], requests: int) -> float:
    for _ in range(min(500, requests)):
        await once()
    start = time.process_time()
    for _ in range(requests):
        await once()
    return (time.process_time() - start) / requests * 1e6


async def main_async(requests: int, rounds: int) -> list[tuple[str, str, float, float, float]]:
    built = [(layer, what, make()) for layer, what, make in CASES]
    samples: dict[int, list[float]] = {i: [] for i in range(len(built))}
    for _ in range(rounds):
        for index, (_, _, once) in enumerate(built):
            samples[index].append(await _measure(once, requests))
    return [(layer, what, median(samples[i]), min(samples[i]), max(samples[i]))
            for i, (layer, what, _) in enumerate(built)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=1, help="the CPU to pin to; -1: not pinned")
    args = parser.parse_args()
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    rows = uvloop.run(main_async(args.requests, args.rounds))
    print(f"{args.requests} requests per row and round, {args.rounds} rounds, CPU "
          f"{args.cpu if args.cpu >= 0 else 'not pinned'}; load average when done: "
          f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| layer | configuration | CPU µs/request, median | min | max |\n|---|---|---|---|---|")
    for layer, what, mid, low, high in rows:
        print(f"| {layer} | {what} | {mid:.1f} | {low:.1f} | {high:.1f} |")


if __name__ == "__main__":
    main()
