"""The app factory: the lifespan owns every resource, errors map to HTTP here, once; the routes
are one router per resource (``chat``, ``responses``, ``models``, ``costs``, ``ops``)."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request  # noqa: TC002 - FastAPI reads route annotations
from starlette.responses import Response

from gateway.api import admin, audit, chat, costs, models, ops, responses
from gateway.api.middleware import REQUEST_ID_HEADER, BodyLimitMiddleware, RequestIdMiddleware
from gateway.api.protocol import decision_headers, error_body
from gateway.api.state import STATE_KEY, AppState
from gateway.audit import Auditor, ThresholdController
from gateway.errors import (
    CascadeFailed,
    CoEError,
    LedgerUnavailable,
    ReloadRefused,
    TooManyRequests,
)
from gateway.ledger import open_ledger
from gateway.metrics import Metrics
from gateway.reload import Resources, build_generation, settings_version, take_early_sighup
from gateway.telemetry import TRACING_STATE_KEY, TraceMiddleware, open_tracing, tracing_wanted
from providers.http import make_aiohttp_transport, make_http_client

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    import httpx

    from gateway.config import Settings
    from gateway.reload import ConfigSource

log = logging.getLogger("coe.app")

_JSON = "application/json"


def create_app(
    settings: Settings,
    *,
    http_transport: httpx.AsyncBaseTransport | None = None,
    source: ConfigSource | None = None,
    version: str | None = None,
    reload_on_sighup: bool = False,
    metrics_dir: Path | None = None,
) -> FastAPI:
    """Build the app; nothing is opened until the lifespan starts. With ``source`` (the file
    ``settings`` came from, ``version`` its hash) ``POST /v1/coe/reload`` re-reads it, and so does
    SIGHUP with ``reload_on_sighup`` (``coe serve``: the process's main thread owns signals).
    ``metrics_dir``: this app is one worker of several (gateway.serve), its metrics written to
    that multiprocess folder and ``/metrics`` summed over all of them."""
    # Decided once, here: with tracing off no middleware is installed and the engine has no hooks.
    traced = tracing_wanted(settings.telemetry)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            client = make_http_client(
                http_transport if http_transport is not None else make_aiohttp_transport()
            )
            stack.push_async_callback(client.aclose)
            tracing = open_tracing(settings.telemetry, settings.endpoints) if traced else None
            if tracing is not None:
                stack.push_async_callback(tracing.aclose)  # last out: after the ledger's flush
            metrics = Metrics(multiprocess_dir=metrics_dir)
            ledger = await stack.enter_async_context(open_ledger(settings.ledger))
            metrics.watch_ledger(lambda: ledger.stats)
            # What the file decides is a generation (gateway.reload) a reload swaps; these stay.
            resources = Resources(client, ledger, metrics, tracing)
            first = build_generation(settings, version or settings_version(settings), resources)
            state = AppState.from_generation(first, resources, source)
            stack.push_async_callback(state.config.aclose)
            # Entered after the ledger and the providers, so it drains before they close.
            state.auditor = await stack.enter_async_context(
                Auditor(ledger, metrics, state.config).running()
            )
            # θ of target routes: chosen once before serving, then at each refresh tick.
            await stack.enter_async_context(
                ThresholdController(ledger, metrics, state.config, state.thresholds).running()
            )
            # How late the loop runs: past server.fair_share_loop_lag_ms tenants get fair shares.
            await stack.enter_async_context(
                state.loop_lag.running(lambda: _fair_share_lag_s(state))
            )
            metrics.set_config_version(first.version)
            log.info("config loaded", extra={"config_version": first.version})
            if reload_on_sighup and state.reloader is not None:
                _reload_on_sighup(state, stack)
                if take_early_sighup():
                    # Sent while this worker started, perhaps after it read the file: reloaded
                    # before it serves a request.
                    with suppress(ReloadRefused):  # logged and counted
                        await state.reloader.reload()
            yield {STATE_KEY: state, TRACING_STATE_KEY: tracing}

    # FastAPI's own OpenTelemetry bridge stays off: the gateway traces itself
    # (gateway.telemetry), and the bridge's check for a global provider costs every request.
    app = FastAPI(
        title="CoE Gateway",
        version="0.1.0",
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.server.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    if traced:
        app.add_middleware(TraceMiddleware)
    app.add_exception_handler(CoEError, _coe_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    for router in (
        chat.router,
        responses.router,
        models.router,
        costs.router,
        audit.router,
        ops.router,
        admin.router,
    ):
        app.include_router(router)
    return app


def _error_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=_JSON, headers=headers)


async def _coe_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, CoEError)
    body = error_body(exc.message, exc.error_type, param=exc.param, code=exc.code)
    # A cascade that ran reached a tier and spent money: its 502/504 says which and how much.
    headers = decision_headers(exc.outcome) if isinstance(exc, CascadeFailed) else None
    if isinstance(exc, TooManyRequests):
        headers = {"retry-after": str(exc.retry_after_s)}
    if isinstance(exc, LedgerUnavailable):
        headers = {"retry-after": str(exc.retry_after_s)}
    return _error_response(exc.status_code, body, headers)


def _fair_share_lag_s(state: AppState) -> float:
    """``server.fair_share_loop_lag_ms`` in seconds, read anew at each probe (a reload applies
    it); 0, never contended, without ``[[tenants]]``: one tenant has nothing to share."""
    if not state.keyring.requires_key:
        return 0.0
    return state.settings.server.fair_share_loop_lag_ms / 1000


def _reload_on_sighup(state: AppState, stack: AsyncExitStack) -> None:
    """SIGHUP reloads the config, as ``POST /v1/coe/reload`` does; only the main thread may."""
    reloader = state.reloader
    if reloader is None or threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        try:
            await reloader.reload()
        except ReloadRefused:
            pass  # logged, counted and kept serving by the reloader

    def on_sighup() -> None:
        task = loop.create_task(reload())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    stack.callback(loop.remove_signal_handler, signal.SIGHUP)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return _error_response(exc.status_code, error_body(str(exc.detail), error_type))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s", request.url.path, exc_info=exc)
    # Starlette answers a 500 from its outermost layer, outside RequestIdMiddleware, so the id
    # that middleware kept in the request's state is added here.
    request_id = getattr(request.state, "request_id", None)
    headers = {REQUEST_ID_HEADER.decode(): request_id} if request_id else None
    return _error_response(500, error_body("internal error", "server_error"), headers)
