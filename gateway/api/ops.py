"""What operators poll: ``GET /healthz`` (liveness) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request  # noqa: TC002 - FastAPI reads route annotations
from starlette.responses import Response

from gateway.api.state import app_state
from gateway.errors import Forbidden

router = APIRouter()


@router.get("/healthz")
async def healthz(_: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    state = app_state(request)
    # Cost counters carry tenant names: with tenants configured, only an admin may scrape.
    principal = state.keyring.authenticate(request.headers.get("authorization"))
    if state.keyring.requires_key and not principal.is_admin:
        raise Forbidden("/metrics needs an admin key")
    payload, content_type = state.metrics.render()
    return Response(payload, media_type=content_type)
