"""What operators poll: ``GET /healthz`` (liveness: the process answers), ``GET /readyz``
(readiness, for load balancers: 200 while the ledger commits, 503 while it cannot, when every
cascade request would get 503 too) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

import orjson
from fastapi import APIRouter
from starlette.requests import Request  # noqa: TC002 - FastAPI reads route annotations
from starlette.responses import Response

from gateway.api.state import app_state
from gateway.errors import Forbidden

router = APIRouter()


@router.get("/healthz")
async def healthz(_: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    ledger = app_state(request).ledger
    ready, reason = await ledger.readiness()
    body = {"status": "ready" if ready else "unavailable", "ledger": reason}
    return Response(
        orjson.dumps(body),
        status_code=200 if ready else 503,
        media_type="application/json",
        headers=None if ready else {"retry-after": "1"},
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    state = app_state(request)
    # Cost counters carry tenant names: with tenants configured, only an admin may scrape.
    principal = state.keyring.authenticate(request.headers.get("authorization"))
    if state.keyring.requires_key and not principal.is_admin:
        raise Forbidden("/metrics needs an admin key")
    payload, content_type = state.metrics.render()
    return Response(payload, media_type=content_type)
