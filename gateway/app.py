"""The FastAPI application: thin routes over the engine, every resource owned by the lifespan."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request  # noqa: TC002 - FastAPI reads route annotations
from starlette.responses import Response

from gateway.billing import Biller
from gateway.budgets import BudgetGuard
from gateway.engine import CascadeEngine
from gateway.errors import (
    BadRequest,
    CoEError,
    DeadlineExceeded,
    Forbidden,
    NotFound,
    UpstreamFailed,
)
from gateway.ledger import open_ledger
from gateway.metrics import Metrics
from gateway.middleware import BodyLimitMiddleware, RequestIdMiddleware
from gateway.plan import CoEOverrides, make_plan
from gateway.protocol import (
    chat_request_openapi,
    completion_body,
    completion_chunks,
    error_body,
    parse_chat_request,
)
from gateway.routes_costs import router as costs_router
from gateway.state import STATE_KEY, AppState, app_state
from gateway.tenants import KeyRing
from providers.http import make_aiohttp_transport, make_http_client
from providers.registry import build_providers

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import httpx

    from gateway.config import Settings
    from gateway.outcome import RequestOutcome

log = logging.getLogger("coe.app")

_JSON = "application/json"


def create_app(
    settings: Settings, *, http_transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """Build the app; nothing is opened until the lifespan starts."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            client = make_http_client(
                http_transport if http_transport is not None else make_aiohttp_transport()
            )
            stack.push_async_callback(client.aclose)
            metrics = Metrics()
            providers = build_providers(
                settings, client, on_breaker_change=metrics.set_breaker_state
            )
            for provider in providers.values():
                stack.push_async_callback(provider.aclose)
            ledger = await stack.enter_async_context(open_ledger(settings.ledger))
            gpu_endpoints = frozenset(e.name for e in settings.endpoints if e.gpu is not None)
            state = AppState(
                settings=settings,
                engine=CascadeEngine(providers, gpu_endpoints),
                ledger=ledger,
                keyring=KeyRing.from_settings(settings),
                biller=Biller(settings),
                budgets=BudgetGuard(settings, ledger),
                metrics=metrics,
            )
            yield {STATE_KEY: state}

    app = FastAPI(title="CoE Gateway", version="0.1.0", lifespan=lifespan)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.server.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)
    app.add_exception_handler(CoEError, _coe_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_api_route(
        "/v1/chat/completions",
        chat_completions,
        methods=["POST"],
        openapi_extra=chat_request_openapi(),
    )
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.add_api_route("/metrics", metrics, methods=["GET"])
    app.include_router(costs_router)
    return app


async def chat_completions(request: Request) -> Response:
    state = app_state(request)
    principal = state.keyring.authenticate(request.headers.get("authorization"))
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise BadRequest("the request body is not valid JSON") from None
    chat = parse_chat_request(payload)
    route = state.settings.routes.get(chat.model)
    if route is None:
        raise NotFound(f"the model {chat.model!r} is not a route of this gateway", param="model")
    overrides = chat.coe.overrides() if chat.coe is not None else CoEOverrides()
    plan = make_plan(chat.model, route, overrides, request.headers)
    await state.budgets.check(principal.tenant)
    outcome = await state.engine.run(
        plan,
        payload["messages"],
        request_id=request.state.request_id,
        tenant=principal.tenant,
        max_tokens=chat.answer_tokens,
    )
    state.biller.bill(outcome, route)
    await state.ledger.record(outcome)
    state.metrics.observe(outcome)
    _raise_for_failure(outcome)
    headers = {
        "x-coe-tier": str(outcome.tier),
        "x-coe-agreement": f"{outcome.agreement:.4f}",
        "x-coe-cost-usd": f"{outcome.cost_usd:.10f}",
    }
    if chat.stream:
        events = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in completion_chunks(outcome))
        events += b"data: [DONE]\n\n"
        return Response(events, media_type="text/event-stream", headers=headers)
    return Response(orjson.dumps(completion_body(outcome)), media_type=_JSON, headers=headers)


def _raise_for_failure(outcome: RequestOutcome) -> None:
    if outcome.status == "ok":
        return
    failures = "; ".join(
        f"{c.endpoint}: {c.status}" + (f" ({c.error})" if c.error else "")
        for c in outcome.calls
        if c.tier == outcome.tier
    )
    if outcome.status == "deadline_exceeded":
        raise DeadlineExceeded(
            f"route {outcome.route!r} reached no decision within its deadline "
            f"(tier {outcome.tier}: {failures})"
        )
    raise UpstreamFailed(
        f"every endpoint of tier {outcome.tier} of route {outcome.route!r} failed: {failures}"
    )


async def list_models(request: Request) -> Response:
    state = app_state(request)
    state.keyring.authenticate(request.headers.get("authorization"))
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "coe-gateway"}
        for name in state.settings.routes
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type=_JSON)


async def metrics(request: Request) -> Response:
    state = app_state(request)
    # Cost counters carry tenant names: with tenants configured, only an admin may scrape.
    principal = state.keyring.authenticate(request.headers.get("authorization"))
    if state.keyring.requires_key and not principal.is_admin:
        raise Forbidden("/metrics needs an admin key")
    payload, content_type = state.metrics.render()
    return Response(payload, media_type=content_type)


async def healthz(_: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type=_JSON)


def _error_response(status: int, body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=_JSON)


async def _coe_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, CoEError)
    body = error_body(exc.message, exc.error_type, param=exc.param, code=exc.code)
    return _error_response(exc.status_code, body)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return _error_response(exc.status_code, error_body(str(exc.detail), error_type))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s", request.url.path, exc_info=exc)
    return _error_response(500, error_body("internal error", "server_error"))
