"""What OpenTelemetry tracing costs: off against no tracing code at all, and on against off.

    .venv/bin/python -m bench.otel [--rounds 15] [--requests 200] [--out FILE]

In one process, one event loop, the rows interleaved round by round (the order shuffled each
round) so that drift on a shared machine hits every row alike:

Engine (``CascadeEngine.run`` on in-process providers that answer at once; one escalated request:
tier 0 of three disagrees, tier 1 of one answers — 2 tier spans and 4 call spans when traced):

- ``no-code``: the engine of ``git show 865f4b9:gateway/engine.py`` (``BASELINE``: the last commit
  before tracing), loaded as a module of its own.
- ``off``: this tree's engine, ``tracing=None`` (what ``coe serve`` runs without ``OTEL_*``).
- ``on``: this tree's engine with tracing on, plus the request span the middleware adds, exported
  over OTLP/HTTP to a sink on loopback that reads and drops (a BatchSpanProcessor, as served).

App (``create_app`` in process through httpx's ASGI transport, the lifespan run, the upstreams an
httpx MockTransport; the same escalated request): ``off`` and ``on``, each its own app, the
whole path (middleware, parse, plan, engine, provider with ``traceparent`` injection, billing,
SQLite ledger, metrics).

Per row: p50 / p99 / mean of the per-request time in µs; per pair, the median over rounds of the
difference of the rounds' medians, with the range over rounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
import types
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson

from gateway.api import create_app
from gateway.config import TelemetryConfig, parse_settings
from gateway.engine import CascadeEngine
from gateway.plan import CoEOverrides, make_plan
from gateway.stats import percentile
from gateway.telemetry import open_tracing
from providers.base import CallRecord, CallRequest, Provider

ROOT = Path(__file__).resolve().parent.parent
ANSWERS = {"a": "positive", "b": "negative", "c": "positive", "d": "negative"}
MESSAGES = [{"role": "user", "content": "Great film, I would watch it again! Sentiment?"}]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Sink:
    """An OTLP/HTTP endpoint that reads each export and answers 200, decoding nothing."""

    def __init__(self) -> None:
        self.exports = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                sink.exports += 1
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Instant(Provider):
    def __init__(self, name: str) -> None:
        self.name = name

    async def complete(self, request: CallRequest) -> CallRecord:  # noqa: ARG002
        await anyio.lowlevel.checkpoint()
        return CallRecord(self.name, "ok", text=ANSWERS[self.name], tokens_in=12, tokens_out=1)


# The last commit whose engine had no tracing code.
BASELINE = "865f4b9"


def head_engine() -> tuple[type[CascadeEngine], str]:
    commit = BASELINE
    source = subprocess.run(
        ["git", "show", f"{BASELINE}:gateway/engine.py"], cwd=ROOT, capture_output=True,
        text=True, check=True,
    ).stdout
    module = types.ModuleType("bench_head_engine")
    sys.modules[module.__name__] = module
    exec(compile(source, f"{BASELINE}:gateway/engine.py", "exec"), module.__dict__)
    engine: type[CascadeEngine] = module.CascadeEngine
    return engine, commit


def raw_config(ledger: Path, endpoint: str | None) -> dict[str, Any]:
    return {
        "ledger": {"url": f"sqlite:///{ledger}"},
        "endpoints": [
            {"name": n, "kind": "openai", "base_url": f"http://{n}.test/v1", "model": f"m-{n}",
             "max_retries": 0, "usd_per_mtok_in": 0.1, "usd_per_mtok_out": 0.2}
            for n in ANSWERS
        ],
        "routes": {"sentiment": {"labels": ["positive", "negative"], "threshold": 1,
                                 "tiers": [["a", "b", "c"], ["d"]]}},
        "telemetry": {"otlp_endpoint": endpoint} if endpoint else {},
    }


def upstream(request: httpx.Request) -> httpx.Response:
    name = request.url.host.split(".")[0]
    body = {
        "id": f"cmpl-{name}", "object": "chat.completion", "created": 0, "model": f"m-{name}",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWERS[name]},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
    }
    return httpx.Response(200, content=orjson.dumps(body),
                          headers={"content-type": "application/json"})


class WithState:
    """The ASGI app with the lifespan's state in every request's scope, as uvicorn puts it."""

    def __init__(self, app: Any, state: dict[str, Any]) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        scope["state"] = dict(self.state)
        await self.app(scope, receive, send)


def summary(times_ns: list[int]) -> str:
    us = [t / 1000 for t in times_ns]
    return (f"p50 {percentile(us, 50):8.1f}  p99 {percentile(us, 99):8.1f}  "
            f"mean {sum(us) / len(us):8.1f}")


def pair(rows: dict[str, list[list[int]]], a: str, b: str) -> str:
    rounds = zip(rows[a], rows[b], strict=True)
    diffs = sorted((percentile(x, 50) - percentile(y, 50)) / 1000 for x, y in rounds)
    base = percentile([percentile(y, 50) / 1000 for y in rows[b]], 50)
    mid = percentile(diffs, 50)
    return (f"{a} - {b}: median over rounds {mid:+7.1f} µs ({mid / base:+.1%} of {b}'s p50), "
            f"rounds range [{diffs[0]:+.1f}, {diffs[-1]:+.1f}] µs")


async def main(rounds: int, requests: int) -> list[str]:
    lines: list[str] = []
    sink = Sink()
    Head, commit = head_engine()
    settings = parse_settings(raw_config(Path("unused.db"), None))
    route = settings.routes["sentiment"]
    plan = make_plan("sentiment", route, CoEOverrides(), {})
    providers = {n: Instant(n) for n in ANSWERS}
    tracing = open_tracing(TelemetryConfig(otlp_endpoint=sink.endpoint), settings.endpoints)
    engines: dict[str, Any] = {
        "no-code": Head(providers, frozenset()),
        "off": CascadeEngine(providers),
        "on": CascadeEngine(providers, tracing=tracing),
    }
    scope = {"headers": [(b"traceparent", TRACEPARENT.encode())], "method": "POST",
             "path": "/v1/chat/completions"}

    async def one(name: str) -> int:
        started = time.perf_counter_ns()
        if name == "on":
            span, token = tracing.start_request(scope)
            await engines[name].run(plan, MESSAGES, request_id="r", tenant="t")
            tracing.end_request(span, token, scope, 200, None)
        else:
            outcome = await engines[name].run(plan, MESSAGES, request_id="r", tenant="t")
            assert outcome.decision == "escalated"
        return time.perf_counter_ns() - started

    async with AsyncExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        clients = {}
        for name, endpoint in (("off", None), ("on", sink.endpoint)):
            app_settings = parse_settings(raw_config(folder / f"{name}.db", endpoint))
            app = create_app(app_settings, http_transport=httpx.MockTransport(upstream))
            state = await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=WithState(app, state))  # type: ignore[arg-type]
            clients[name] = await stack.enter_async_context(
                httpx.AsyncClient(transport=transport, base_url="http://gw")
            )
        payload = {"model": "sentiment", "messages": MESSAGES}

        async def http(name: str) -> int:
            started = time.perf_counter_ns()
            response = await clients[name].post(
                "/v1/chat/completions", json=payload, headers={"traceparent": TRACEPARENT}
            )
            elapsed = time.perf_counter_ns() - started
            assert response.status_code == 200, response.text
            return elapsed

        engine_rows: dict[str, list[list[int]]] = {k: [] for k in engines}
        app_rows: dict[str, list[list[int]]] = {k: [] for k in clients}
        for name in engines:  # warm-up
            for _ in range(50):
                await one(name)
        for name in clients:
            for _ in range(20):
                await http(name)
        started = time.monotonic()
        for _ in range(rounds):
            for name in random.sample(list(engines), len(engines)):
                engine_rows[name].append([await one(name) for _ in range(requests)])
            for name in random.sample(list(clients), len(clients)):
                app_rows[name].append([await http(name) for _ in range(requests // 4)])
        elapsed = time.monotonic() - started
    await tracing.aclose()
    sink.close()

    lines += [
        f"# bench/otel.py, {datetime.now(UTC):%Y-%m-%dT%H:%MZ}, host {platform.node()} "
        f"({os.cpu_count()} CPUs), Python {platform.python_version()}",
        f"# command: python -m bench.otel --rounds {rounds} --requests {requests}",
        f"# no-code = gateway/engine.py at {commit}; measured for {elapsed:.0f} s; "
        f"sink received {sink.exports} OTLP exports",
        "",
        f"engine, one escalated request (4 calls, 2 tiers), {rounds} rounds x {requests}, µs:",
    ]
    for name, per_round in engine_rows.items():
        lines.append(f"  {name:8} {summary([t for r in per_round for t in r])}")
    lines += [f"  {pair(engine_rows, 'off', 'no-code')}", f"  {pair(engine_rows, 'on', 'off')}",
              "", f"app in process (ASGI), same request, {rounds} rounds x {requests // 4}, µs:"]
    for name, per_round in app_rows.items():
        lines.append(f"  {name:8} {summary([t for r in per_round for t in r])}")
    lines.append(f"  {pair(app_rows, 'on', 'off')}")
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--out", type=Path, help="also write the output to this file")
    args = parser.parse_args()
    output = "\n".join(anyio.run(main, args.rounds, args.requests)) + "\n"
    print(output, end="")
    if args.out is not None:
        args.out.write_text(output, encoding="utf-8")
